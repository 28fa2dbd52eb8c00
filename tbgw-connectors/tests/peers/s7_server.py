"""S7 test peer: a python-snap7 2.1.0 server (the Snap7 C library its wheel ships) on a
loopback port, with DB areas of known values; and a python-snap7 client that prints bytes of a
DB, so the tests read back what the connector wrote through a client nobody here wrote.

    s7_server.py serve PORT          serve DB1 (256 bytes), DB2 (8192 bytes), M (256 bytes)
    s7_server.py read PORT DB START SIZE     print the bytes as hex
    s7_server.py write PORT DB START HEX     write bytes

The server accepts any rack, slot and TSAP, so it stands in for a PLC and for a LOGO (whose
VM memory is DB1).
"""
import struct
import sys
import time

import snap7
from snap7.server import Server
from snap7.type import SrvArea, WordLen


def db1() -> bytearray:
    b = bytearray(256)
    b[0] = 0b0000_0110  # DBX0.0 false, DBX0.1 and DBX0.2 true
    struct.pack_into(">h", b, 2, -1234)  # DBW2 INT
    struct.pack_into(">i", b, 4, 123456789)  # DBD4 DINT
    struct.pack_into(">f", b, 8, 21.5)  # DBD8 REAL
    struct.pack_into(">H", b, 12, 65000)  # DBW12 WORD
    b[14] = 200  # DBB14 BYTE
    struct.pack_into(">h", b, 30, 300)  # VW30 of a LOGO
    struct.pack_into(">f", b, 50, 36.6)  # temperature (REAL)
    struct.pack_into(">d", b, 54, 55.25)  # humidity (LREAL)
    b[100:102] = bytes([20, 5])  # S7 STRING[20] "hello" at 100
    b[102:107] = b"hello"
    struct.pack_into(">f", b, 200, 50.0)  # frequency
    struct.pack_into(">f", b, 204, 1500.5)  # power
    return b


def db2() -> bytearray:
    b = bytearray(8192)
    for i in range(2000):
        struct.pack_into(">f", b, 4 * i, float(i))
    return b


def serve(port: int) -> None:
    server = Server(log=False)
    keep = []
    for area, index, data in (
        (SrvArea.DB, 1, db1()),
        (SrvArea.DB, 2, db2()),
        (SrvArea.MK, 0, bytearray(256)),
    ):
        buf = (WordLen.Byte.ctype * len(data)).from_buffer(data)
        keep.append((data, buf))
        server.register_area(area, index, buf)
    server.start_to("127.0.0.1", tcp_port=port)
    print("ready", flush=True)
    while True:
        time.sleep(1)


def client(port: int) -> snap7.client.Client:
    c = snap7.client.Client()
    c.connect("127.0.0.1", 0, 1, tcp_port=port)
    return c


def main() -> None:
    cmd, port = sys.argv[1], int(sys.argv[2])
    if cmd == "serve":
        serve(port)
    elif cmd == "read":
        db, start, size = (int(x) for x in sys.argv[3:6])
        print(bytes(client(port).db_read(db, start, size)).hex(), flush=True)
    elif cmd == "write":
        db, start = int(sys.argv[3]), int(sys.argv[4])
        client(port).db_write(db, start, bytearray(bytes.fromhex(sys.argv[5])))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
