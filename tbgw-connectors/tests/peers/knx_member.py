"""A KNX bus member for the KNX connector's tests: an xknx tunnel client of knxd.

    knx_member.py GATEWAY_PORT CONTROL_PORT VALUES_JSON
    knx_member.py routing:MULTICAST_PORT CONTROL_PORT VALUES_JSON

The first form is a tunnel client of the gateway on 127.0.0.1; the second a KNXnet/IP router
itself (multicast 224.0.23.12 on the loopback interface), with no gateway.

VALUES_JSON maps group addresses to [xknx type, value]. The member answers GroupValueRead
for those addresses with GroupValueResponse, takes GroupValueWrite from others as the new
value and prints `WRITE <ga> <json value>`. On CONTROL_PORT (TCP, loopback) it takes JSON
lines: {"write": ga, "value": v} sends a GroupValueWrite (and keeps v), {"raw": ga,
"bytes": [..]} sends a GroupValueWrite with those octets as they are, {"set": ga, "value":
v} changes the value without sending, {"burst": ga, "count": n, "rate": r} sends n writes
of 0/1 alternating at r per second. Prints `ready` when connected.
"""
import asyncio
import json
import sys

from xknx import XKNX
from xknx.dpt import DPTArray, DPTBase, DPTBinary
from xknx.io import ConnectionConfig, ConnectionType
from xknx.telegram import GroupAddress, Telegram
from xknx.telegram.apci import GroupValueRead, GroupValueResponse, GroupValueWrite

routing = sys.argv[1].startswith("routing:")
port = int(sys.argv[1].removeprefix("routing:"))
control = int(sys.argv[2])
values = {str(GroupAddress(k)): v for k, v in json.loads(sys.argv[3]).items()}


def encode(ga):
    kind, value = values[ga]
    return DPTBase.parse_transcoder(kind).to_knx(value)


xknx = None


def received(t: Telegram):
    ga = str(t.destination_address)
    if ga not in values:
        return
    if isinstance(t.payload, GroupValueRead):
        xknx.telegrams.put_nowait(
            Telegram(destination_address=GroupAddress(ga), payload=GroupValueResponse(encode(ga)))
        )
    elif isinstance(t.payload, GroupValueWrite):
        kind = values[ga][0]
        try:
            v = DPTBase.parse_transcoder(kind).from_knx(t.payload.value)
        except Exception as e:  # noqa: BLE001
            v = f"undecodable: {e}"
        values[ga][1] = v
        print("WRITE", ga, json.dumps(v), flush=True)


async def client(reader, writer):
    while line := await reader.readline():
        cmd = json.loads(line)
        if "write" in cmd:
            ga = str(GroupAddress(cmd["write"]))
            values[ga][1] = cmd["value"]
            xknx.telegrams.put_nowait(
                Telegram(destination_address=GroupAddress(ga), payload=GroupValueWrite(encode(ga)))
            )
        elif "raw" in cmd:
            b = cmd["bytes"]
            payload = DPTBinary(b[0]) if cmd.get("small") else DPTArray(tuple(b))
            xknx.telegrams.put_nowait(
                Telegram(destination_address=GroupAddress(cmd["raw"]), payload=GroupValueWrite(payload))
            )
        elif "set" in cmd:
            values[str(GroupAddress(cmd["set"]))][1] = cmd["value"]
        elif "burst" in cmd:
            ga = GroupAddress(cmd["burst"])
            gap = 1.0 / cmd["rate"]
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(cmd["count"]):
                xknx.telegrams.put_nowait(
                    Telegram(destination_address=ga, payload=GroupValueWrite(DPTBinary(i % 2)))
                )
                delay = start + (i + 1) * gap - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        writer.write(b"ok\n")
        await writer.drain()


async def main():
    global xknx
    if routing:
        config = ConnectionConfig(
            connection_type=ConnectionType.ROUTING,
            local_ip="127.0.0.1",
            multicast_port=port,
            individual_address="1.1.250",
        )
    else:
        config = ConnectionConfig(
            connection_type=ConnectionType.TUNNELING,
            gateway_ip="127.0.0.1",
            gateway_port=port,
            local_ip="127.0.0.1",
        )
    xknx = XKNX(
        connection_config=config,
        telegram_received_cb=received,
        rate_limit=0,
    )
    await xknx.start()
    server = await asyncio.start_server(client, "127.0.0.1", control)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
