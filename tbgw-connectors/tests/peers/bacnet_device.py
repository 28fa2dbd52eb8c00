"""A BACnet/IP device made with bacpypes3, the peer of the BACnet connector tests.

    python bacnet_device.py --name dev1 --instance 1001 --address 127.0.0.1/8:PORT [--points N]
    python bacnet_device.py whois GATEWAY_IP:PORT --address 127.0.0.1/8:PORT --instance 998

Objects: analogValue,1 "temp" (21.5), binaryValue,1 "relay" (inactive), analogOutput,1
"setpoint" (commandable, 20.0), multiStateValue,1 "mode" (2), characterstringValue-free
analogValue,2 "counter" (incremented every 0.5 s, for COV), and with --points N the
analog values 1000..1000+N-1 ("p0".."pN-1") for benchmarks.
In `whois` mode it sends a directed Who-Is to the gateway and prints "iam <instance>".
"""
import asyncio
import sys

from bacpypes3.argparse import SimpleArgumentParser
from bacpypes3.app import Application
from bacpypes3.local.analog import AnalogValueObject, AnalogOutputObject
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.multistate import MultiStateValueObject
from bacpypes3.pdu import Address


async def whois(target):
    args = SimpleArgumentParser().parse_args(sys.argv[3:])
    app = Application.from_args(args)
    found = await app.who_is(address=Address(target), timeout=3)
    for i in found:
        print("iam", i.iAmDeviceIdentifier[1], flush=True)
    print("whois done", flush=True)


async def device():
    parser = SimpleArgumentParser()
    parser.add_argument("--points", type=int, default=0)
    args = parser.parse_args()
    app = Application.from_args(args)
    app.add_object(AnalogValueObject(objectIdentifier=("analogValue", 1), objectName="temp",
                                     presentValue=21.5, statusFlags=[0, 0, 0, 0],
                                     units="degreesCelsius", covIncrement=0.1))
    app.add_object(BinaryValueObject(objectIdentifier=("binaryValue", 1), objectName="relay",
                                     presentValue="inactive", statusFlags=[0, 0, 0, 0]))
    app.add_object(AnalogOutputObject(objectIdentifier=("analogOutput", 1), objectName="setpoint",
                                      presentValue=20.0, statusFlags=[0, 0, 0, 0],
                                      units="degreesCelsius", relinquishDefault=20.0,
                                      covIncrement=0.1))
    app.add_object(MultiStateValueObject(objectIdentifier=("multiStateValue", 1), objectName="mode",
                                         presentValue=2, numberOfStates=3,
                                         statusFlags=[0, 0, 0, 0]))
    counter = AnalogValueObject(objectIdentifier=("analogValue", 2), objectName="counter",
                                presentValue=0.0, statusFlags=[0, 0, 0, 0],
                                units="noUnits", covIncrement=0.5)
    app.add_object(counter)
    for i in range(args.points):
        app.add_object(AnalogValueObject(objectIdentifier=("analogValue", 1000 + i),
                                         objectName=f"p{i}", presentValue=float(i),
                                         statusFlags=[0, 0, 0, 0], units="noUnits",
                                         covIncrement=1.0))
    print("bacnet device up", flush=True)
    while True:
        await asyncio.sleep(0.5)
        counter.presentValue = counter.presentValue + 1.0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "whois":
        asyncio.run(whois(sys.argv[2]))
    else:
        asyncio.run(device())
