"""OCPP charge point simulator (PyPI `ocpp`, which validates every message against the
official JSON schemas in both directions) for the OCPP connector tests and benchmark.

usage: ocpp_cp.py OPTIONS_JSON

OPTIONS_JSON keys:
  url        ws://127.0.0.1:PORT/PATH (wss:// with cafile)
  version    "1.6" | "2.0.1" | "2.1"
  mode       "full" (default): the uplink scenario, then serve the central system's calls;
             "drop": the scenario, close, reconnect without BootNotification, Heartbeat +
             MeterValues, then serve; "raw": send each of `frames` as text and print the
             answers; "offer": connect offering `subprotocols` and print what happens;
             "load": BootNotification, then MeterValues every `period` s and a Heartbeat every
             `heartbeat` s, forever
  auth       ["user", "password"] for HTTP basic auth; token: an Authorization header value
  cafile     CA for wss://; certfile/keyfile: client certificate (security profile 3)
  vendor, model: BootNotification's (default "Eco", "Sim")
  keepalive  "full" mode: after the scenario, a Heartbeat every this many seconds (upstream's
             central system delivers its own calls only when the charge point sends something)
Prints one line per event: CONNECTED <subprotocol>, RESULT <Action> <json>, UPLINK DONE,
GOT <Action> <json>, ERROR <text>.
"""
import asyncio
import json
import ssl
import sys

import websockets
from ocpp.routing import on

opts = json.loads(sys.argv[1])
VERSION = opts.get("version", "2.1")
SUB = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1", "2.1": "ocpp2.1"}[VERSION]
if VERSION == "1.6":
    from ocpp.v16 import ChargePoint as Base, call, call_result
elif VERSION == "2.0.1":
    from ocpp.v201 import ChargePoint as Base, call, call_result
else:
    from ocpp.v21 import ChargePoint as Base, call, call_result

TS = "2026-01-01T00:00:00Z"


def out(*parts):
    print(*parts, flush=True)


def dump(obj):
    if obj is None:
        return "null"
    try:
        from dataclasses import asdict

        return json.dumps(asdict(obj), sort_keys=True)
    except TypeError:
        return json.dumps(obj, sort_keys=True, default=str)


class CP(Base):
    @on("GetVariables")
    def get_variables(self, get_variable_data, **kw):
        out("GOT GetVariables", json.dumps(get_variable_data, sort_keys=True))
        return call_result.GetVariables(get_variable_result=[
            {"attribute_status": "Accepted", "attribute_value": "30", "component": d["component"],
             "variable": d["variable"]} for d in get_variable_data])

    @on("SetVariables")
    def set_variables(self, set_variable_data, **kw):
        out("GOT SetVariables", json.dumps(set_variable_data, sort_keys=True))
        return call_result.SetVariables(set_variable_result=[
            {"attribute_status": "Accepted", "component": d["component"], "variable": d["variable"]}
            for d in set_variable_data])

    @on("GetConfiguration")
    def get_configuration(self, **kw):
        out("GOT GetConfiguration", json.dumps(kw, sort_keys=True))
        return call_result.GetConfiguration(configuration_key=[
            {"key": k, "readonly": False, "value": "30"} for k in kw.get("key", ["HeartbeatInterval"])])

    @on("ChangeConfiguration")
    def change_configuration(self, key, value, **kw):
        out("GOT ChangeConfiguration", json.dumps({"key": key, "value": value}, sort_keys=True))
        return call_result.ChangeConfiguration(status="Accepted")

    @on("DataTransfer")
    def data_transfer(self, vendor_id, **kw):
        out("GOT DataTransfer", json.dumps({"vendor_id": vendor_id, **kw}, sort_keys=True))
        return call_result.DataTransfer(status="Accepted", data="pong")

    @on("Reset")
    def reset(self, **kw):
        out("GOT Reset", json.dumps(kw, sort_keys=True))
        return call_result.Reset(status="Accepted")

    @on("RemoteStartTransaction")
    def remote_start(self, **kw):
        out("GOT RemoteStartTransaction", json.dumps(kw, sort_keys=True))
        return call_result.RemoteStartTransaction(status="Accepted")

    @on("RequestStartTransaction")
    def request_start(self, **kw):
        out("GOT RequestStartTransaction", json.dumps(kw, sort_keys=True))
        return call_result.RequestStartTransaction(status="Accepted")


def meter_values(value):
    sv = [{"value": value if VERSION != "1.6" else str(value), "measurand": "Energy.Active.Import.Register"},
          {"value": 48 if VERSION != "1.6" else "48", "measurand": "SoC"}]
    if VERSION == "1.6":
        return call.MeterValues(connector_id=1, meter_value=[{"timestamp": TS, "sampled_value": sv}])
    return call.MeterValues(evse_id=1, meter_value=[{"timestamp": TS, "sampled_value": sv}])


def boot():
    vendor, model = opts.get("vendor", "Eco"), opts.get("model", "Sim")
    if VERSION == "1.6":
        return call.BootNotification(charge_point_vendor=vendor, charge_point_model=model,
                                     charge_point_serial_number="SN-16")
    return call.BootNotification(charging_station={"vendor_name": vendor, "model": model,
                                                   "serial_number": "SN-2x"}, reason="PowerUp")


def authorize(tag):
    if VERSION == "1.6":
        return call.Authorize(id_tag=tag)
    return call.Authorize(id_token={"id_token": tag, "type": "ISO14443"})


async def step(cp, name, payload):
    r = await cp.call(payload)
    out("RESULT", name, dump(r))
    return r


async def scenario(cp):
    await step(cp, "BootNotification", boot())
    await step(cp, "Heartbeat", call.Heartbeat())
    await step(cp, "AuthorizeGood", authorize("GOOD"))
    await step(cp, "AuthorizeBad", authorize("BAD"))
    if VERSION == "1.6":
        await step(cp, "StatusNotification", call.StatusNotification(
            connector_id=1, error_code="NoError", status="Available", timestamp=TS))
    else:
        await step(cp, "StatusNotification", call.StatusNotification(
            timestamp=TS, connector_status="Available", evse_id=1, connector_id=1))
    await step(cp, "MeterValues", meter_values(12.5))
    if VERSION == "1.6":
        r = await step(cp, "StartTransaction", call.StartTransaction(
            connector_id=1, id_tag="GOOD", meter_start=100, timestamp=TS))
        await step(cp, "StopTransaction", call.StopTransaction(
            meter_stop=200, timestamp=TS, transaction_id=r.transaction_id, id_tag="GOOD"))
    else:
        await step(cp, "TransactionEvent", call.TransactionEvent(
            event_type="Started", timestamp=TS, trigger_reason="Authorized", seq_no=0,
            transaction_info={"transaction_id": "T-1"}, id_token={"id_token": "GOOD", "type": "ISO14443"},
            meter_value=[{"timestamp": TS, "sampled_value": [{"value": 5.5, "measurand": "Power.Active.Import"}]}]))
    await step(cp, "DataTransfer", call.DataTransfer(vendor_id="tbgw", data=json.dumps({"temp": 21.5})))
    out("UPLINK DONE")


def connect_kwargs(subprotocols):
    kw = {"subprotocols": subprotocols, "open_timeout": 10}
    headers = {}
    if opts.get("auth"):
        import base64
        u, p = opts["auth"]
        headers["Authorization"] = "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()
    if opts.get("token"):
        headers["Authorization"] = opts["token"]
    if headers:
        kw["additional_headers"] = headers
    if opts.get("cafile"):
        ctx = ssl.create_default_context(cafile=opts["cafile"])
        if opts.get("certfile"):
            ctx.load_cert_chain(opts["certfile"], opts["keyfile"])
        kw["ssl"] = ctx
    return kw


async def serve_forever(cp):
    if opts.get("keepalive"):
        while True:
            await asyncio.sleep(opts["keepalive"])
            await cp.call(call.Heartbeat())
    await asyncio.Event().wait()


async def main():
    url = opts["url"]
    mode = opts.get("mode", "full")
    cp_id = url.rsplit("/", 1)[1]
    if mode == "offer":
        try:
            async with websockets.connect(url, **connect_kwargs(opts.get("subprotocols"))) as ws:
                out("CONNECTED", ws.subprotocol)
                try:
                    msg = await asyncio.wait_for(ws.recv(), 10)
                    out("MESSAGE", msg)
                except websockets.ConnectionClosed as e:
                    out("CLOSED", e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else "")
        except Exception as e:  # noqa: BLE001
            out("REFUSED", type(e).__name__, e)
        return
    if mode == "raw":
        async with websockets.connect(url, **connect_kwargs([SUB])) as ws:
            out("CONNECTED", ws.subprotocol)
            for f in opts["frames"]:
                await ws.send(f)
                out("ANSWER", await asyncio.wait_for(ws.recv(), 10))
        return
    async with websockets.connect(url, **connect_kwargs([SUB])) as ws:
        out("CONNECTED", ws.subprotocol)
        cp = CP(cp_id, ws)
        task = asyncio.create_task(cp.start())
        if mode == "load":
            await cp.call(boot())
            out("BOOTED")
            n, hb = 0, 0.0
            while True:
                await asyncio.sleep(opts.get("period", 10))
                n += 1
                await cp.call(meter_values(float(n)))
                hb += opts.get("period", 10)
                if hb >= opts.get("heartbeat", 60):
                    hb = 0.0
                    await cp.call(call.Heartbeat())
        await scenario(cp)
        if mode != "drop":
            await serve_forever(cp)
        task.cancel()
    out("DROPPED")
    async with websockets.connect(url, **connect_kwargs([SUB])) as ws:
        out("CONNECTED", ws.subprotocol)
        cp = CP(cp_id, ws)
        task = asyncio.create_task(cp.start())
        await step(cp, "Heartbeat", call.Heartbeat())
        await step(cp, "MeterValues", meter_values(99.0))
        out("RECONNECTED")
        await serve_forever(cp)


try:
    asyncio.run(main())
except Exception as e:  # noqa: BLE001
    out("ERROR", type(e).__name__, e)
    sys.exit(1)
