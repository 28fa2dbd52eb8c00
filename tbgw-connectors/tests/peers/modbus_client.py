"""pymodbus client against tbgw's slave mode.

usage: modbus_client.py WHERE COMMAND...
  WHERE is PORT or tcp:PORT (Modbus/TCP), udp:PORT, rtu:DEVICE, ascii:DEVICE (serial, 19200 8N1),
  or tls:PORT:CA_FILE[:CERT_FILE:KEY_FILE] (Modbus/TCP over TLS, the server's chain checked
  against CA_FILE; with CERT_FILE and KEY_FILE the client presents that certificate)
  read-hr ADDR COUNT       prints the registers as JSON
  write-hr ADDR V1,V2,...  writes holding registers (function code 16)
  read-co ADDR COUNT       prints the coils as JSON
  write-co ADDR 0|1        writes one coil (function code 5)
  read-di ADDR COUNT       prints the discrete inputs as JSON
  read-ir ADDR COUNT       prints the input registers as JSON
  device-id CODE           read device identification (function code 43 / MEI 14), read code
                           1 (basic), 2 (regular) or 3 (extended); prints {object id: text}
"""
import json
import ssl
import sys

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient, ModbusTlsClient, ModbusUdpClient

where, cmd = sys.argv[1], sys.argv[2]
kind, _, rest = where.partition(":") if ":" in where else ("tcp", "", where)
if kind == "tcp":
    c = ModbusTcpClient("127.0.0.1", port=int(rest), timeout=3)
elif kind == "udp":
    c = ModbusUdpClient("127.0.0.1", port=int(rest), timeout=3)
elif kind in ("rtu", "ascii"):
    framer = FramerType.RTU if kind == "rtu" else FramerType.ASCII
    c = ModbusSerialClient(rest, framer=framer, baudrate=19200, timeout=3)
elif kind == "tls":
    port, ca, *pair = rest.split(":")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    # pymodbus's synchronous client sends no server name, so only the chain is checked.
    ctx.check_hostname = False
    if pair:
        ctx.load_cert_chain(pair[0], pair[1])
    c = ModbusTlsClient("localhost", port=int(port), sslctx=ctx, timeout=3)
else:
    raise SystemExit(f"unknown transport {kind}")
assert c.connect(), "cannot connect"
if cmd == "read-hr":
    r = c.read_holding_registers(int(sys.argv[3]), count=int(sys.argv[4]), device_id=1)
    print(json.dumps(r.registers))
elif cmd == "read-ir":
    r = c.read_input_registers(int(sys.argv[3]), count=int(sys.argv[4]), device_id=1)
    print(json.dumps(r.registers))
elif cmd == "write-hr":
    r = c.write_registers(int(sys.argv[3]), [int(v) for v in sys.argv[4].split(",")], device_id=1)
    print(json.dumps(not r.isError()))
elif cmd == "read-co":
    r = c.read_coils(int(sys.argv[3]), count=int(sys.argv[4]), device_id=1)
    print(json.dumps([bool(b) for b in r.bits[: int(sys.argv[4])]]))
elif cmd == "read-di":
    r = c.read_discrete_inputs(int(sys.argv[3]), count=int(sys.argv[4]), device_id=1)
    print(json.dumps([bool(b) for b in r.bits[: int(sys.argv[4])]]))
elif cmd == "write-co":
    r = c.write_coil(int(sys.argv[3]), sys.argv[4] == "1", device_id=1)
    print(json.dumps(not r.isError()))
elif cmd == "device-id":
    r = c.read_device_information(read_code=int(sys.argv[3]), object_id=0, device_id=1)
    assert not r.isError(), f"exception answer: {r}"
    print(json.dumps({str(k): v.decode("utf-8", "replace") for k, v in r.information.items()}))
c.close()
