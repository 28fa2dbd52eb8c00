"""Pure conversions between upstream's data shapes and the connector API's messages."""

import json
import time

from . import proto

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def key_name(key):
    """A datapoint key as text: upstream's `DatapointKey` carries it in `.key`."""
    inner = getattr(key, "key", None)
    return str(inner) if inner is not None else str(key)


def fill_kv(kv, key, value):
    """Fills a KeyValueProto with `key` and a Python value, typed as upstream's gateway types it
    (bool before int: a bool is an int in Python)."""
    kv.key = key_name(key)
    if isinstance(value, bool):
        kv.type, kv.bool_v = proto.BOOLEAN_V, value
    elif isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
        kv.type, kv.long_v = proto.LONG_V, value
    elif isinstance(value, (int, float)):
        kv.type, kv.double_v = proto.DOUBLE_V, float(value)
    elif isinstance(value, str):
        kv.type, kv.string_v = proto.STRING_V, value
    elif isinstance(value, (dict, list, tuple)) or value is None:
        kv.type, kv.json_v = proto.JSON_V, json.dumps(value, default=str)
    else:
        kv.type, kv.string_v = proto.STRING_V, str(value)


def kv_value(kv):
    """The Python value of a KeyValueProto."""
    t = kv.type
    if t == proto.BOOLEAN_V:
        return kv.bool_v
    if t == proto.LONG_V:
        return kv.long_v
    if t == proto.DOUBLE_V:
        return kv.double_v
    if t == proto.JSON_V:
        try:
            return json.loads(kv.json_v)
        except ValueError:
            return kv.json_v
    return kv.string_v


def _items(mapping):
    """(key, value) pairs of a dict or of upstream's `Attributes`/`TelemetryEntry.values`."""
    if mapping is None:
        return []
    values = getattr(mapping, "values", None)
    if values is not None and not callable(values) and hasattr(values, "items"):
        mapping = values
    if hasattr(mapping, "items"):
        return list(mapping.items())
    raise ValueError(f"not a mapping of keys to values: {mapping!r}")


def normalize(data, now_ms=None):
    """Upstream's `send_to_storage` data, `ConvertedData` or the older dict
    (`deviceName`, `deviceType`, `telemetry`, `attributes`), as
    `(device, type, [(ts, [(key, value)])], [(key, value)])`. Raises ValueError on data that
    has no device name or entries of an unknown shape."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if hasattr(data, "device_name") and hasattr(data, "telemetry"):
        device, dtype = data.device_name, getattr(data, "device_type", None)
        telemetry_in, attributes_in = data.telemetry, data.attributes
    elif isinstance(data, dict):
        device, dtype = data.get("deviceName"), data.get("deviceType")
        telemetry_in = data.get("telemetry", data.get("timeseries"))
        attributes_in = data.get("attributes")
    else:
        raise ValueError(f"unsupported data type {type(data).__name__}")
    if not device:
        raise ValueError("data without a device name")
    telemetry = []
    for entry in telemetry_in or []:
        ts = getattr(entry, "ts", None)
        if ts is not None and hasattr(entry, "values"):
            telemetry.append((int(ts), [(key_name(k), v) for k, v in _items(entry.values)]))
        elif isinstance(entry, dict) and "values" in entry:
            ts = entry.get("ts")
            telemetry.append((int(ts) if ts else now_ms, [(key_name(k), v) for k, v in _items(entry["values"])]))
        elif isinstance(entry, dict):
            telemetry.append((now_ms, [(key_name(k), v) for k, v in entry.items() if k != "ts"]))
        else:
            raise ValueError(f"unsupported telemetry entry {entry!r}")
    attributes = []
    if isinstance(attributes_in, list):
        for entry in attributes_in:
            attributes.extend((key_name(k), v) for k, v in _items(entry))
    else:
        attributes.extend((key_name(k), v) for k, v in _items(attributes_in))
    return str(device), (str(dtype) if dtype else "default"), telemetry, attributes


def data_messages(device, telemetry, attributes):
    """The telemetry and attribute messages (at most one of each) of one device's data."""
    out = []
    telemetry = [(ts, kvs) for ts, kvs in telemetry if kvs]
    if telemetry:
        m = proto.FromConnectorMessage()
        t = m.gatewayTelemetryMsg.msg.add()
        t.deviceName = device
        for ts, kvs in telemetry:
            entry = t.msg.tsKvList.add()
            entry.ts = ts
            for k, v in kvs:
                fill_kv(entry.kv.add(), k, v)
        out.append(m)
    if attributes:
        m = proto.FromConnectorMessage()
        a = m.gatewayAttributesMsg.msg.add()
        a.deviceName = device
        for k, v in attributes:
            fill_kv(a.msg.kv.add(), k, v)
        out.append(m)
    return out


def rpc_reply_data(content=None, success_sent=None):
    """What upstream's gateway sends to ThingsBoard for `send_rpc_reply(device, req_id,
    content, success_sent)`: with `success_sent`, `{"success": ...}` or the content's
    `success`/`error`/`response`/`result` object (a `result` unwrapped); otherwise the content
    itself. None: upstream sends nothing."""
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except ValueError:
            pass
    if success_sent is not None:
        reply = {"success": bool(success_sent)}
        if isinstance(content, dict) and any(k in content for k in ("success", "error", "response", "result")):
            reply = dict(content)
            reply["success"] = success_sent
        if isinstance(reply, dict) and "result" in reply:
            reply = reply["result"]
        return reply
    return content


def reply_text(data):
    """The `data` text of a gatewayRpcResponseMsg: JSON, or a string that is not JSON as itself."""
    if isinstance(data, str):
        return data
    return json.dumps(data, default=str)


def rpc_params(text):
    """The params of a downlink RPC: JSON text parsed; other text (tbgw sends a string
    parameter as itself, as upstream) as the string."""
    if text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def rpc_content(device, request_id, method, params, connector_type):
    """The `content` upstream's gateway hands to `server_side_rpc_handler`: a device RPC
    `{"device", "data": {"id", "method", "params"}, "id"}`, a connector RPC (no device)
    `{"method": "<type>_<method>", "params", "id"}`."""
    if device:
        return {"device": device, "data": {"id": request_id, "method": method, "params": params}, "id": request_id}
    return {"method": f"{connector_type}_{method}", "params": params, "id": request_id}


def attribute_update_content(msg):
    """`on_attributes_update`'s content for a gatewayAttributeUpdateNotificationMsg:
    `{"device", "data": {key: value}}`; deleted keys as ThingsBoard sends them,
    `{"device", "data": {"deleted": [keys]}}`."""
    n = msg.notificationMsg
    data = {tskv.kv.key: kv_value(tskv.kv) for tskv in n.sharedUpdated}
    if n.sharedDeleted:
        data["deleted"] = list(n.sharedDeleted)
    return {"device": msg.deviceName, "data": data}


def attribute_response_content(msg, keys):
    """The content upstream's ThingsBoard client passes to an attribute request's callback:
    `{"id", "device", "value"}` for one requested key, `{"id", "device", "values"}` otherwise."""
    r = msg.responseMsg
    values = {kv.key: kv_value(kv) for kv in list(r.clientAttributeList) + list(r.sharedAttributeList)}
    content = {"id": r.requestId, "device": msg.deviceName}
    if len(keys) == 1 and len(values) <= 1:
        content["value"] = values.get(keys[0])
    else:
        content["values"] = values
    return content
