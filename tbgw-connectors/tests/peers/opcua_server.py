"""OPC-UA test peer for the tbgw `opcua` connector, built on asyncua.

Model (namespace "http://tbgw.test/opcua", index 2), under Objects:
  Device1..DeviceN (objects), each with
    DeviceName (String "Device <i>"), Temperature (Double, changes), Humidity (Float, changes),
    Counter (Int32, changes), Relay (Boolean, writable), Int16Var, Int64Var, UInt16Var, UInt32Var,
    UInt64Var, ByteVar, SByteVar, StringVar, DateTimeVar, ByteStringVar, GuidVar, ArrayVar,
    Broken (Double with status BadSensorFailure), Sub/Inner (Double, nested object),
    Tag0..Tag<T-1> (Double, change on every tick; T = --tags),
    methods multiply(Int64 a, Int64 b) -> Int64, set_relay(Boolean) -> Boolean,
    get_relay() -> Boolean.
  Device1 also has SpecialS (ns=2;s=Device1.Special), SpecialG (a Guid node id) and SpecialB
  (an opaque node id 0xCAFE).

Options: --port, --devices N, --tags T, --period seconds between changes, --add-device-after
seconds (adds Device<N+1> while running), --security none|all (all also offers
Sign and SignAndEncrypt with Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss, Basic256
and Basic128Rsa15, with a self-signed server certificate in --cert-dir),
--user name:password (then anonymous logins are refused).

Prints "ready" once the server listens.
"""

import argparse
import asyncio
import datetime
import logging
import sys
import uuid
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.server.user_managers import UserManager

NS_URI = "http://tbgw.test/opcua"


class PasswordUserManager(UserManager):
    def __init__(self, name, password):
        self.name = name
        self.password = password

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == self.name and password == self.password:
            return User(role=UserRole.User)
        return None


async def add_device(server, objects, idx, i, tags):
    dev = await objects.add_object(idx, f"Device{i}")
    v = {}

    async def var(name, value, vtype, writable=False, nodeid=None):
        if nodeid is None:
            node = await dev.add_variable(idx, name, ua.Variant(value, vtype))
        else:
            node = await dev.add_variable(nodeid, f"{idx}:{name}", ua.Variant(value, vtype))
        if writable:
            await node.set_writable()
        v[name] = node
        return node

    await var("DeviceName", f"Device {i}", ua.VariantType.String)
    await var("Temperature", 20.0 + i, ua.VariantType.Double, True)
    await var("Humidity", 50.0, ua.VariantType.Float, True)
    await var("Counter", 0, ua.VariantType.Int32, True)
    await var("Relay", False, ua.VariantType.Boolean, True)
    await var("Int16Var", -16, ua.VariantType.Int16, True)
    await var("Int64Var", -(2**40), ua.VariantType.Int64, True)
    await var("UInt16Var", 16, ua.VariantType.UInt16, True)
    await var("UInt32Var", 2**31, ua.VariantType.UInt32, True)
    await var("UInt64Var", 2**40, ua.VariantType.UInt64, True)
    await var("ByteVar", 200, ua.VariantType.Byte, True)
    await var("SByteVar", -5, ua.VariantType.SByte, True)
    await var("StringVar", "hello", ua.VariantType.String, True)
    await var(
        "DateTimeVar",
        datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
        ua.VariantType.DateTime,
    )
    await var("ByteStringVar", b"\x01\x02\xab", ua.VariantType.ByteString)
    await var("GuidVar", uuid.UUID("72962b91-fa75-4ae6-8d28-b404dc7daf63"), ua.VariantType.Guid)
    await var("ArrayVar", [1, 2, 3], ua.VariantType.Int32)
    broken = await var("Broken", 0.0, ua.VariantType.Double)
    await broken.write_value(
        ua.DataValue(ua.Variant(0.0, ua.VariantType.Double), StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure))
    )
    sub = await dev.add_object(idx, "Sub")
    v["Inner"] = await sub.add_variable(idx, "Inner", ua.Variant(1.5, ua.VariantType.Double))
    if i == 1:
        await var("SpecialS", 7, ua.VariantType.Int32, True, ua.NodeId("Device1.Special", idx))
        await var(
            "SpecialG",
            8,
            ua.VariantType.Int32,
            True,
            ua.NodeId(uuid.UUID("0d4a6b3e-8c2f-4a59-9f00-5b2f0c1e7a11"), idx, ua.NodeIdType.Guid),
        )
        await var("SpecialB", 9, ua.VariantType.Int32, True, ua.NodeId(b"\xca\xfe", idx, ua.NodeIdType.ByteString))
    tag_nodes = []
    for t in range(tags):
        tag_nodes.append(await dev.add_variable(idx, f"Tag{t}", ua.Variant(0.0, ua.VariantType.Double)))
    relay = v["Relay"]

    async def multiply(parent, a, b):
        return [ua.Variant(a.Value * b.Value, ua.VariantType.Int64)]

    async def set_relay(parent, on):
        await relay.write_value(ua.Variant(bool(on.Value), ua.VariantType.Boolean))
        return [ua.Variant(bool(on.Value), ua.VariantType.Boolean)]

    async def get_relay(parent):
        return [ua.Variant(await relay.read_value(), ua.VariantType.Boolean)]

    def arg(name, dtype):
        a = ua.Argument()
        a.Name = name
        a.DataType = ua.NodeId(dtype)
        a.ValueRank = -1
        return a

    await dev.add_method(idx, "multiply", multiply, [arg("a", ua.ObjectIds.Int64), arg("b", ua.ObjectIds.Int64)],
                         [arg("result", ua.ObjectIds.Int64)])
    await dev.add_method(idx, "set_relay", set_relay, [arg("on", ua.ObjectIds.Boolean)],
                         [arg("result", ua.ObjectIds.Boolean)])
    await dev.add_method(idx, "get_relay", get_relay, [], [arg("result", ua.ObjectIds.Boolean)])
    return v, tag_nodes


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--devices", type=int, default=3)
    p.add_argument("--tags", type=int, default=0)
    p.add_argument("--period", type=float, default=0.2)
    p.add_argument("--add-device-after", type=float, default=0.0)
    p.add_argument("--security", choices=["none", "all"], default="none")
    p.add_argument("--cert-dir", default=".")
    p.add_argument("--user", default="")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    server = Server(user_manager=PasswordUserManager(*args.user.split(":", 1)) if args.user else None)
    await server.init()
    url = f"opc.tcp://127.0.0.1:{args.port}/tbgw/"
    server.set_endpoint(url)
    server.set_server_name("tbgw test peer")
    if args.security == "all":
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from cryptography.x509.oid import ExtendedKeyUsageOID

        d = Path(args.cert_dir)
        key, cert = d / "server_key.pem", d / "server_cert.der"
        await setup_self_signed_certificate(
            key, cert, "urn:tbgw:test:server", "127.0.0.1",
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            {"countryName": "XX", "organizationName": "tbgw", "commonName": "tbgw test server"},
        )
        await server.set_application_uri("urn:tbgw:test:server")
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        server.set_security_policy(
            [
                ua.SecurityPolicyType.NoSecurity,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
                ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
                ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
                ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
                ua.SecurityPolicyType.Basic256_Sign,
                ua.SecurityPolicyType.Basic256_SignAndEncrypt,
                ua.SecurityPolicyType.Basic128Rsa15_Sign,
                ua.SecurityPolicyType.Basic128Rsa15_SignAndEncrypt,
            ],
            permission_ruleset=SimpleRoleRuleset(),
        )
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    if args.user:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    idx = await server.register_namespace(NS_URI)
    objects = server.nodes.objects
    devices = []
    for i in range(1, args.devices + 1):
        devices.append(await add_device(server, objects, idx, i, args.tags))

    async with server:
        print(f"ready {url}", flush=True)
        start = asyncio.get_running_loop().time()
        added = False
        tick = 0
        next_tick = start
        while True:
            tick += 1
            for n, (v, tag_nodes) in enumerate(devices):
                await server.write_attribute_value(
                    v["Temperature"].nodeid, ua.DataValue(ua.Variant(20.0 + n + (tick % 100) / 10.0, ua.VariantType.Double))
                )
                await server.write_attribute_value(
                    v["Counter"].nodeid, ua.DataValue(ua.Variant(tick, ua.VariantType.Int32))
                )
                value = ua.DataValue(ua.Variant(float(tick), ua.VariantType.Double))
                for node in tag_nodes:
                    await server.write_attribute_value(node.nodeid, value)
            if tick % 10 == 0 and args.tags:
                print(f"tick {tick}", flush=True)
            if args.add_device_after and not added and asyncio.get_running_loop().time() - start >= args.add_device_after:
                added = True
                devices.append(await add_device(server, objects, idx, len(devices) + 1, args.tags))
                print(f"added Device{len(devices)}", flush=True)
            # Keep the schedule: the next tick is due one period after the previous one.
            next_tick += args.period
            await asyncio.sleep(max(0.0, next_tick - asyncio.get_running_loop().time()))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
