"""An out-of-process connector for the gRPC connector tests, written with grpcio only.

It speaks the messages the way upstream's client (grpc_connectors/gw_grpc_client.py and
gw_grpc_msg_creator.py of thingsboard-gateway) does: in `unary` mode every message is one
call of `stream` with an `identifier` metadata, and an empty `response` message polls for
downlink; in `stream` mode it uses tbgw's bidirectional `session` method. The Python classes
are generated from tbgw's messages.proto at start (grpcio-tools).

Usage: grpc_client.py PROTO_DIR PORT KEY MODE SCRIPT [ARGS]
  SCRIPT basic      register, devices, telemetry and attributes of every type, an attribute
                    request, then answer RPCs and print attribute updates until killed
  SCRIPT noanswer   register, print RPCs without answering them
  SCRIPT bench N B  register, send N telemetry messages of B values each, print the rate

Lines it prints (the tests wait for them): REGISTERED <name> <configuration>, REFUSED <status>,
CONNECTED, SENT, ATTRRESP <id> <json>, RPC <device> <id> <method> <params>, ATTRUPDATE <device> <json>,
DELETED <device> <json>, RATE <msgs/s>.
"""
import json
import os
import queue
import sys
import tempfile
import threading
import time
import uuid

import grpc
from grpc_tools import protoc

proto_dir, port, key, mode, script = sys.argv[1:6]
args = sys.argv[6:]

out_dir = tempfile.mkdtemp()
if protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                os.path.join(proto_dir, "messages.proto")]) != 0:
    sys.exit("protoc failed")
sys.path.insert(0, out_dir)
import messages_pb2 as pb  # noqa: E402
import messages_pb2_grpc as pb_grpc  # noqa: E402

channel = grpc.insecure_channel(f"127.0.0.1:{port}")
stub = pb_grpc.TBGatewayProtoServiceStub(channel)
incoming = queue.SimpleQueue()


def say(*parts):
    print(*parts, flush=True)


# ---- transports ---------------------------------------------------------------------------

class Unary:
    """Upstream's way: one call per message, polls with an empty `response` message."""

    def __init__(self):
        self.meta = [("identifier", str(uuid.uuid4()))]
        self.out = queue.SimpleQueue()
        threading.Thread(target=self.loop, daemon=True).start()

    def send(self, msg):
        self.out.put(msg)

    def loop(self):
        while True:
            try:
                msg = self.out.get(timeout=0.05)
            except queue.Empty:
                msg = pb.FromConnectorMessage()
                msg.response.MergeFrom(pb.Response())
            reply = stub.stream(msg, metadata=self.meta, timeout=15)
            # Upstream's client skips empty responses and answers to its own responses.
            if reply.HasField("response") and reply.response.ByteSize() == 0:
                continue
            incoming.put(reply)


class Stream:
    """tbgw's bidirectional `session`."""

    def __init__(self):
        self.out = queue.SimpleQueue()
        responses = stub.session(iter(self.out.get, None))
        threading.Thread(target=self.loop, args=(responses,), daemon=True).start()

    def send(self, msg):
        self.out.put(msg)

    def loop(self, responses):
        try:
            for reply in responses:
                incoming.put(reply)
        except grpc.RpcError as e:
            say("STREAM ENDED", e.code())
            os._exit(4)


# ---- messages, as upstream's GrpcMsgCreator builds them -----------------------------------

def kv(key, value):
    p = pb.KeyValueProto(key=key)
    if isinstance(value, bool):
        p.type, p.bool_v = pb.BOOLEAN_V, value
    elif isinstance(value, int):
        p.type, p.long_v = pb.LONG_V, value
    elif isinstance(value, float):
        p.type, p.double_v = pb.DOUBLE_V, value
    elif isinstance(value, str):
        p.type, p.string_v = pb.STRING_V, value
    else:
        p.type, p.json_v = pb.JSON_V, json.dumps(value)
    return p


def register():
    m = pb.FromConnectorMessage()
    m.registerConnectorMsg.connectorKey = key
    return m


def connect(device, device_type):
    m = pb.FromConnectorMessage()
    m.connectMsg.deviceName, m.connectMsg.deviceType = device, device_type
    return m


def disconnect(device):
    m = pb.FromConnectorMessage()
    m.disconnectMsg.deviceName = device
    return m


def telemetry(device, ts, values):
    m = pb.FromConnectorMessage()
    t = m.gatewayTelemetryMsg.msg.add()
    t.deviceName = device
    lst = t.msg.tsKvList.add()
    lst.ts = ts
    lst.kv.extend([kv(k, v) for k, v in values.items()])
    return m


def attributes(device, values):
    m = pb.FromConnectorMessage()
    a = m.gatewayAttributesMsg.msg.add()
    a.deviceName = device
    a.msg.kv.extend([kv(k, v) for k, v in values.items()])
    return m


def attribute_request(device, request_id, keys, client):
    m = pb.FromConnectorMessage()
    r = m.gatewayAttributeRequestMsg
    r.deviceName, r.id, r.client = device, request_id, client
    r.keys.extend(keys)
    return m


def rpc_reply(device, request_id, data):
    m = pb.FromConnectorMessage()
    r = m.gatewayRpcResponseMsg
    r.deviceName, r.id, r.data = device, request_id, json.dumps(data)
    return m


def kv_py(p):
    which = pb.KeyValueType.Name(p.type)
    return {"BOOLEAN_V": p.bool_v, "LONG_V": p.long_v, "DOUBLE_V": p.double_v,
            "STRING_V": p.string_v, "JSON_V": p.json_v}[which]


# ---- the scenario -------------------------------------------------------------------------

link = Unary() if mode == "unary" else Stream()
link.send(register())


def next_msg(timeout=30):
    return incoming.get(timeout=timeout)


def wait_registered():
    while True:
        m = next_msg()
        if m.HasField("response") and m.response.connectorMessage.HasField("registerConnectorMsg") \
                and m.response.status != pb.SUCCESS:
            say("REFUSED", pb.ResponseStatus.Name(m.response.status))
            sys.stdout.flush()
            os._exit(3)
        if m.HasField("connectorConfigurationMsg"):
            c = m.connectorConfigurationMsg
            say("REGISTERED", c.connectorName, c.configuration.replace("\n", " "))
            return
        handle(m)


answer_rpcs = script != "noanswer"


def handle(m):
    if m.HasField("gatewayDeviceRpcRequestMsg"):
        r = m.gatewayDeviceRpcRequestMsg
        say("RPC", r.deviceName, r.rpcRequestMsg.requestId, r.rpcRequestMsg.methodName, r.rpcRequestMsg.params)
        if answer_rpcs:
            try:
                params = json.loads(r.rpcRequestMsg.params)
            except ValueError:
                params = r.rpcRequestMsg.params
            link.send(rpc_reply(r.deviceName, r.rpcRequestMsg.requestId,
                                {"success": True, "method": r.rpcRequestMsg.methodName, "echo": params}))
    if m.HasField("gatewayAttributeUpdateNotificationMsg"):
        n = m.gatewayAttributeUpdateNotificationMsg
        if n.notificationMsg.sharedDeleted:
            say("DELETED", n.deviceName, json.dumps(list(n.notificationMsg.sharedDeleted)))
        else:
            upd = {u.kv.key: [pb.KeyValueType.Name(u.kv.type), kv_py(u.kv)] for u in n.notificationMsg.sharedUpdated}
            say("ATTRUPDATE", n.deviceName, json.dumps(upd, sort_keys=True))
    if m.HasField("gatewayAttributeResponseMsg"):
        r = m.gatewayAttributeResponseMsg.responseMsg
        lst = list(r.sharedAttributeList) + list(r.clientAttributeList)
        say("ATTRRESP", r.requestId, json.dumps({p.key: kv_py(p) for p in lst}, sort_keys=True), r.error)
    if m.HasField("unregisterConnectorMsg"):
        say("UNREGISTERED")
    if m.HasField("response") and m.response.connectorMessage.HasField("connectMsg"):
        say("CONNECT-ACK", pb.ResponseStatus.Name(m.response.status))


wait_registered()
if script in ("basic", "noanswer"):
    if script == "basic":
        values = {"b": True, "l": 42, "d": 2.5, "s": "text", "j": {"k": [1, 2]}}
        link.send(connect("Dev1", "thermo"))
        link.send(connect("Dev2", "other"))
        link.send(disconnect("Dev2"))
        link.send(telemetry("Dev1", 1700000000000, values))
        link.send(attributes("Dev1", values))
        link.send(attribute_request("Dev1", 7, ["sk"], False))
        say("SENT")
    while True:
        handle(next_msg(timeout=3600))
elif script == "bench":
    n, per = int(args[0]), int(args[1])
    values = {f"k{i}": i for i in range(per)}
    msgs = [telemetry("BenchDev", 1700000000000 + i, values) for i in range(1000)]
    start = time.perf_counter()
    if mode == "unary":
        meta = link.meta
        for i in range(n):
            stub.stream(msgs[i % 1000], metadata=meta, timeout=15)
    else:
        for i in range(n):
            link.send(msgs[i % 1000])
        # Ends when the gateway's answer to a final connect arrives (in order).
        link.send(connect("BenchDev", "bench"))
        while True:
            m = next_msg()
            if m.HasField("response") and m.response.connectorMessage.HasField("connectMsg"):
                break
    took = time.perf_counter() - start
    say("RATE", round(n / took), "msgs/s", round(n * per / took), "values/s")
    while True:
        time.sleep(3600)
