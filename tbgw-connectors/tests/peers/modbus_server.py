"""pymodbus server for the Modbus connector tests.

usage: modbus_server.py tcp|udp|rtu|ascii|tls PORT_OR_DEVICE VALUES_JSON [late]

For tls, PORT_OR_DEVICE is PORT:CERT_FILE:KEY_FILE[:CA_FILE] (Modbus/TCP over TLS on 127.0.0.1;
with CA_FILE, clients must present a certificate signed by it).

VALUES_JSON maps a table (co, di, hr, ir) to {address: value}; every table has 200 addresses
starting at protocol address 0, so reads beyond 199 get an "illegal data address" exception.
With a fourth argument `late`, every answer leaves 1.5 s late (a device slower than the timeout).
Prints READY when it serves.
"""
import json
import ssl
import sys
import time

from pymodbus import FramerType
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartSerialServer, StartTcpServer, StartTlsServer, StartUdpServer

kind, where, values = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
late = len(sys.argv) > 4 and sys.argv[4] == "late"


class Block(ModbusSequentialDataBlock):
    def __init__(self, table):
        # pymodbus 3.16 stores protocol address N at block index N + 1; the block starts at 1.
        init = [0] * 200
        for a, v in values.get(table, {}).items():
            init[int(a)] = v
        super().__init__(1, init)


def trace_packet(sending, data):
    # Blocking on purpose: the answer (and the whole server) is held back.
    if late and sending:
        time.sleep(1.5)
    return data


ctx = ModbusServerContext(
    devices={1: ModbusDeviceContext(di=Block("di"), co=Block("co"), hr=Block("hr"), ir=Block("ir"))},
    single=False,
)
print("READY", flush=True)
if kind == "tcp":
    StartTcpServer(context=ctx, address=("127.0.0.1", int(where)), trace_packet=trace_packet)
elif kind == "tls":
    port, cert, key, *ca = where.split(":")
    sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sslctx.load_cert_chain(cert, key)
    if ca:
        sslctx.verify_mode = ssl.CERT_REQUIRED
        sslctx.load_verify_locations(ca[0])
    StartTlsServer(context=ctx, address=("127.0.0.1", int(port)), sslctx=sslctx)
elif kind == "udp":
    StartUdpServer(context=ctx, address=("127.0.0.1", int(where)))
else:
    framer = FramerType.RTU if kind == "rtu" else FramerType.ASCII
    StartSerialServer(context=ctx, port=where, framer=framer, baudrate=19200)
