"""pymodbus client against tbgw's slave mode.

usage: modbus_client.py PORT COMMAND...
  read-hr ADDR COUNT       prints the registers as JSON
  write-hr ADDR V1,V2,...  writes holding registers (function code 16)
  read-co ADDR COUNT       prints the coils as JSON
  write-co ADDR 0|1        writes one coil (function code 5)
"""
import json
import sys

from pymodbus.client import ModbusTcpClient

port, cmd = int(sys.argv[1]), sys.argv[2]
c = ModbusTcpClient("127.0.0.1", port=port, timeout=3)
assert c.connect(), "cannot connect"
if cmd == "read-hr":
    r = c.read_holding_registers(int(sys.argv[3]), count=int(sys.argv[4]), device_id=1)
    print(json.dumps(r.registers))
elif cmd == "write-hr":
    r = c.write_registers(int(sys.argv[3]), [int(v) for v in sys.argv[4].split(",")], device_id=1)
    print(json.dumps(not r.isError()))
elif cmd == "read-co":
    r = c.read_coils(int(sys.argv[3]), count=int(sys.argv[4]), device_id=1)
    print(json.dumps([bool(b) for b in r.bits[: int(sys.argv[4])]]))
elif cmd == "write-co":
    r = c.write_coil(int(sys.argv[3]), sys.argv[4] == "1", device_id=1)
    print(json.dumps(not r.isError()))
c.close()
