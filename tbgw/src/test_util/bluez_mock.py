# Drives python-dbusmock's `bluez5` template (the stand-in for bluetoothd) on the bus named by
# DBUS_SYSTEM_BUS_ADDRESS. Reads one command per line on stdin and answers "ok ..." or
# "error ..." on stdout; every 0.5 s it changes the RSSI of each device that is "heard", because
# scanners only report devices that signal while they scan.
#
# Commands:
#   wait                      until org.bluez is on the bus (the mock started)
#   adapter                   add hci0 (with the Roles property bleak needs)
#   device MAC NAME           add a device with correctly typed advertisement properties
#   mfr MAC COMPANY HEX       set its manufacturer data (company id decimal, data hex)
#   svc MAC UUID HEX          set its service data
#   heard MAC 0|1             stop / resume its RSSI changes
#   forget                    forget every device (after the mock was restarted)
#
# Works around the template's flaws (see docs/connectors/ble.md): AddDevice types
# ManufacturerData/ServiceData wrongly, the adapter lacks Roles, dictionaries are changed with
# Properties.Set.
import select
import sys
import time

import dbus

BUS = dbus.SystemBus()
ADAPTER = "/org/bluez/hci0"
DEVICE_IFACE = "org.bluez.Device1"
heard = {}
rssi_step = 0


def path_of(mac):
    return ADAPTER + "/dev_" + mac.upper().replace(":", "_")


def mock(path):
    return dbus.Interface(BUS.get_object("org.bluez", path), "org.freedesktop.DBus.Mock")


def props(path):
    return dbus.Interface(BUS.get_object("org.bluez", path), "org.freedesktop.DBus.Properties")


def cmd_wait():
    deadline = time.time() + 20
    while time.time() < deadline:
        if BUS.name_has_owner("org.bluez"):
            return "ok"
        time.sleep(0.05)
    return "error org.bluez never appeared"


def cmd_adapter():
    m = dbus.Interface(BUS.get_object("org.bluez", "/org/bluez"), "org.bluez.Mock")
    m.AddAdapter("hci0", "tbgw-test")
    mock(ADAPTER).AddProperty("org.bluez.Adapter1", "Roles",
                              dbus.Array(["central", "peripheral"], signature="s"))
    return "ok"


def cmd_device(mac, name):
    path = path_of(mac)
    properties = {
        "Address": dbus.String(mac.upper()),
        "AddressType": dbus.String("public"),
        "Name": dbus.String(name),
        "Alias": dbus.String(name),
        "Adapter": dbus.ObjectPath(ADAPTER),
        "Paired": dbus.Boolean(False),
        "Connected": dbus.Boolean(False),
        "Trusted": dbus.Boolean(False),
        "Blocked": dbus.Boolean(False),
        "LegacyPairing": dbus.Boolean(False),
        "ServicesResolved": dbus.Boolean(False),
        "RSSI": dbus.Int16(-60),
        "TxPower": dbus.Int16(4),
        "UUIDs": dbus.Array([], signature="s"),
        "ManufacturerData": dbus.Dictionary({}, signature="qv"),
        "ServiceData": dbus.Dictionary({}, signature="sv"),
    }
    root = mock("/")
    root.AddObject(path, DEVICE_IFACE, properties,
                   [("Connect", "", "", ""), ("Disconnect", "", "", "")])
    added = dbus.Dictionary({DEVICE_IFACE: dbus.Dictionary(properties, signature="sv")},
                            signature="sa{sv}")
    root.EmitSignal("org.freedesktop.DBus.ObjectManager", "InterfacesAdded", "oa{sa{sv}}",
                    dbus.Array([dbus.ObjectPath(path), added], signature="v"))
    heard[mac.upper()] = True
    return "ok"


def data(hexstr):
    return dbus.Array([dbus.Byte(b) for b in bytes.fromhex(hexstr)], signature="y")


def cmd_mfr(mac, company, hexstr):
    value = dbus.Dictionary({dbus.UInt16(int(company)): dbus.Array(data(hexstr), variant_level=1)},
                            signature="qv")
    props(path_of(mac)).Set(DEVICE_IFACE, "ManufacturerData", value)
    return "ok"


def cmd_svc(mac, uuid, hexstr):
    value = dbus.Dictionary({dbus.String(uuid): dbus.Array(data(hexstr), variant_level=1)},
                            signature="sv")
    props(path_of(mac)).Set(DEVICE_IFACE, "ServiceData", value)
    uuids = dbus.Array([uuid], signature="s")
    props(path_of(mac)).Set(DEVICE_IFACE, "UUIDs", uuids)
    return "ok"


def cmd_heard(mac, on):
    heard[mac.upper()] = on == "1"
    return "ok"


def cmd_forget():
    heard.clear()
    return "ok"


COMMANDS = {"wait": cmd_wait, "adapter": cmd_adapter, "device": cmd_device, "mfr": cmd_mfr,
            "svc": cmd_svc, "heard": cmd_heard, "forget": cmd_forget}


def tick():
    global rssi_step
    rssi_step += 1
    for mac, on in list(heard.items()):
        if on:
            try:
                props(path_of(mac)).Set(DEVICE_IFACE, "RSSI", dbus.Int16(-60 - rssi_step % 10))
            except dbus.exceptions.DBusException:
                pass


def main():
    print("ready", flush=True)
    next_tick = time.time() + 0.5
    while True:
        timeout = max(0.0, next_tick - time.time())
        r, _, _ = select.select([sys.stdin], [], [], timeout)
        if r:
            line = sys.stdin.readline()
            if not line:
                return
            parts = line.split()
            if not parts:
                continue
            try:
                answer = COMMANDS[parts[0]](*parts[1:])
            except Exception as e:  # report, keep serving
                answer = "error " + str(e).replace("\n", " ")
            print(answer, flush=True)
        if time.time() >= next_tick:
            tick()
            next_tick = time.time() + 0.5


if __name__ == "__main__":
    main()
