"""Unit tests of the tbgw_custom host package (no gateway needed): conversions, the gateway
object, the class loader, and the checked-in descriptor against messages.proto.

Run: `python -m unittest discover -s python/tests` with the test peers' Python (grpcio,
grpcio-tools); tests of upstream's ConvertedData run when upstream's package is importable.
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tbgw_custom import convert, proto  # noqa: E402
from tbgw_custom.gateway import Gateway  # noqa: E402
from tbgw_custom.loader import ClassNotFound, find_class  # noqa: E402

try:
    from thingsboard_gateway.gateway.entities.converted_data import ConvertedData
    from thingsboard_gateway.gateway.entities.datapoint_key import DatapointKey
    from thingsboard_gateway.gateway.entities.telemetry_entry import TelemetryEntry
    UPSTREAM = True
except ImportError:
    UPSTREAM = False


class Key:
    """Like upstream's DatapointKey: the name in `.key`."""

    def __init__(self, key):
        self.key = key


def kv(key, value):
    m = proto.KeyValueProto()
    convert.fill_kv(m, key, value)
    return m


class ValuesTest(unittest.TestCase):
    def test_every_type(self):
        self.assertEqual((kv("b", True).type, kv("b", True).bool_v), (proto.BOOLEAN_V, True))
        self.assertEqual((kv("l", 7).type, kv("l", 7).long_v), (proto.LONG_V, 7))
        self.assertEqual((kv("d", 2.5).type, kv("d", 2.5).double_v), (proto.DOUBLE_V, 2.5))
        self.assertEqual((kv("s", "x").type, kv("s", "x").string_v), (proto.STRING_V, "x"))
        self.assertEqual(kv("j", {"a": [1]}).type, proto.JSON_V)
        self.assertEqual(json.loads(kv("j", {"a": [1]}).json_v), {"a": [1]})
        self.assertEqual(json.loads(kv("n", None).json_v), None)

    def test_integers_beyond_64_bits_are_doubles_and_keys_may_be_datapoint_keys(self):
        big = kv(Key("k"), 2 ** 70)
        self.assertEqual((big.key, big.type, big.double_v), ("k", proto.DOUBLE_V, float(2 ** 70)))

    def test_values_round_trip(self):
        for v in (True, -3, 0.25, "t", {"x": [1, None]}):
            self.assertEqual(convert.kv_value(kv("k", v)), v)


class NormalizeTest(unittest.TestCase):
    def test_upstreams_older_dict_format(self):
        d = {"deviceName": "D", "deviceType": "T",
             "telemetry": [{"ts": 5, "values": {"a": 1}}, {"b": 2}],
             "attributes": [{"c": 3}, {Key("d"): 4}]}
        self.assertEqual(convert.normalize(d, now_ms=9),
                         ("D", "T", [(5, [("a", 1)]), (9, [("b", 2)])], [("c", 3), ("d", 4)]))

    def test_attributes_as_one_dict_and_default_type(self):
        self.assertEqual(convert.normalize({"deviceName": "D", "attributes": {"a": 1}}, now_ms=1),
                         ("D", "default", [], [("a", 1)]))

    def test_no_device_or_bad_shapes_are_errors(self):
        for bad in ({"telemetry": [{"a": 1}]}, {"deviceName": "D", "telemetry": [5]}, 42):
            with self.assertRaises(ValueError):
                convert.normalize(bad)

    @unittest.skipUnless(UPSTREAM, "upstream's package is not installed")
    def test_upstreams_converted_data(self):
        c = ConvertedData("D", "T")
        c.add_to_telemetry(TelemetryEntry({DatapointKey("t"): 1.5}, ts=10))
        c.add_to_attributes(DatapointKey("a"), "x")
        self.assertEqual(convert.normalize(c), ("D", "T", [(10, [("t", 1.5)])], [("a", "x")]))

    def test_messages(self):
        msgs = convert.data_messages("D", [(1, [("a", 1)]), (2, [])], [("b", True)])
        self.assertEqual(len(msgs), 2)
        t = msgs[0].gatewayTelemetryMsg.msg[0]
        self.assertEqual((t.deviceName, len(t.msg.tsKvList), t.msg.tsKvList[0].ts), ("D", 1, 1))
        self.assertEqual(msgs[1].gatewayAttributesMsg.msg[0].msg.kv[0].bool_v, True)
        self.assertEqual(convert.data_messages("D", [], []), [])


class RpcTest(unittest.TestCase):
    def test_reply_shapes_as_upstream(self):
        self.assertEqual(convert.rpc_reply_data({"result": "42"}), {"result": "42"})
        self.assertEqual(convert.rpc_reply_data(None, success_sent=True), {"success": True})
        self.assertEqual(convert.rpc_reply_data('{"error": "e"}', success_sent=False),
                         {"error": "e", "success": False})
        self.assertEqual(convert.rpc_reply_data({"result": 5}, success_sent=True), 5)
        self.assertEqual(convert.rpc_reply_data("plain text"), "plain text")
        self.assertIsNone(convert.rpc_reply_data(None))
        self.assertEqual(convert.reply_text({"a": 1}), '{"a": 1}')
        self.assertEqual(convert.reply_text("x"), "x")

    def test_params_and_content(self):
        self.assertEqual(convert.rpc_params('{"v": 1}'), {"v": 1})
        self.assertEqual(convert.rpc_params("hello"), "hello")
        self.assertIsNone(convert.rpc_params(""))
        self.assertEqual(convert.rpc_content("D", 3, "m", 1, "serial"),
                         {"device": "D", "data": {"id": 3, "method": "m", "params": 1}, "id": 3})
        self.assertEqual(convert.rpc_content("", 4, "m", None, "serial"),
                         {"method": "serial_m", "params": None, "id": 4})


class DownlinkTest(unittest.TestCase):
    def test_attribute_update_and_deletion(self):
        m = proto.FromServiceMessage()
        u = m.gatewayAttributeUpdateNotificationMsg
        u.deviceName = "D"
        u.notificationMsg.sharedUpdated.add().kv.CopyFrom(kv("a", 1))
        u.notificationMsg.sharedDeleted.append("b")
        self.assertEqual(convert.attribute_update_content(u), {"device": "D", "data": {"a": 1, "deleted": ["b"]}})

    def test_attribute_response_one_key_and_several(self):
        m = proto.FromServiceMessage()
        r = m.gatewayAttributeResponseMsg
        r.deviceName = "D"
        r.responseMsg.requestId = 7
        r.responseMsg.sharedAttributeList.add().CopyFrom(kv("a", "x"))
        self.assertEqual(convert.attribute_response_content(r, ["a"]), {"id": 7, "device": "D", "value": "x"})
        self.assertEqual(convert.attribute_response_content(r, ["a", "b"]),
                         {"id": 7, "device": "D", "values": {"a": "x"}})


class GatewayTest(unittest.TestCase):
    def setUp(self):
        self.sent = []
        self.gw = Gateway(self.sent.append, "C", "serial", "/etc/gw")

    def test_data_announces_an_unknown_device_once(self):
        for _ in range(2):
            self.gw.send_to_storage("C", "id", {"deviceName": "D", "deviceType": "T", "telemetry": [{"a": 1}]})
        kinds = [m.ListFields()[0][0].name for m in self.sent]
        self.assertEqual(kinds, ["connectMsg", "gatewayTelemetryMsg", "gatewayTelemetryMsg"])
        self.assertEqual(self.sent[0].connectMsg.deviceType, "T")
        self.assertEqual(self.gw.get_devices(connector_id="id"), {"D": "T"})
        self.assertEqual(self.gw.get_config_path(), "/etc/gw/")

    def test_bad_data_is_refused_and_counted(self):
        from tbgw_custom.gateway import Status
        self.assertEqual(self.gw.send_to_storage("C", "id", {"telemetry": []}), Status.FAILURE)
        self.assertEqual(self.gw.send_to_storage("C", "id", None), Status.FAILURE)
        self.assertEqual(self.gw.counters["errors"], 1)
        self.assertEqual(self.sent, [])

    def test_rpc_reply_and_delete(self):
        self.gw.send_rpc_reply(device="D", req_id=5, content={"result": "ok"})
        self.gw.send_rpc_reply(None, 6, success_sent=False)
        self.gw.send_rpc_reply("D", 7)  # nothing to send, as upstream
        self.gw.del_device("D")
        r = self.sent[0].gatewayRpcResponseMsg
        self.assertEqual((r.deviceName, r.id, json.loads(r.data)), ("D", 5, {"result": "ok"}))
        r = self.sent[1].gatewayRpcResponseMsg
        self.assertEqual((r.deviceName, r.id, json.loads(r.data)), ("", 6, {"success": False}))
        self.assertEqual(len(self.sent), 3)
        self.assertEqual(self.sent[2].disconnectMsg.deviceName, "D")

    def test_attribute_request_and_its_answer(self):
        got = []
        self.gw.registered.set()
        self.assertTrue(self.gw.tb_client.is_connected())
        rid = self.gw.tb_client.client.gw_request_shared_attributes("D", ["a"], lambda c, e: got.append((c, e)))
        req = self.sent[0].gatewayAttributeRequestMsg
        self.assertEqual((req.id, req.deviceName, req.client, list(req.keys)), (rid, "D", False, ["a"]))
        m = proto.FromServiceMessage()
        r = m.gatewayAttributeResponseMsg
        r.deviceName, r.responseMsg.requestId = "D", rid
        r.responseMsg.sharedAttributeList.add().CopyFrom(kv("a", 3))
        self.gw.attribute_response(r)
        self.assertEqual(got, [({"id": rid, "device": "D", "value": 3}, None)])
        self.gw.attribute_response(r)  # an unknown (already answered) request: logged
        self.assertEqual(len(got), 1)

    def test_gateway_device_data_is_dropped(self):
        self.gw.send_telemetry([{"x": 1}])
        self.gw.send_attributes({"x": 1})
        self.assertEqual(self.sent, [])


class LoaderTest(unittest.TestCase):
    def test_the_class_of_that_exact_name_and_broken_neighbours(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "serial"))
            with open(os.path.join(d, "serial", "a_broken.py"), "w") as f:
                f.write("import no_such_module_here\n")
            with open(os.path.join(d, "serial", "b_conn.py"), "w") as f:
                f.write(textwrap.dedent("""
                    class MyConnectorBase: pass
                    class MyConnector(MyConnectorBase): pass
                """))
            self.assertEqual(find_class("serial", "MyConnector", [d]).__name__, "MyConnector")
            with self.assertRaises(ClassNotFound) as e:
                find_class("serial", "Other", [d, os.path.join(d, "missing")])
            self.assertIn("no_such_module_here", str(e.exception))


class DescriptorTest(unittest.TestCase):
    def test_checked_in_descriptor_matches_messages_proto(self):
        try:
            import grpc_tools  # noqa: F401
        except ImportError:
            self.skipTest("grpcio-tools is not installed")
        script = os.path.join(os.path.dirname(HERE), "gen_descriptor.py")
        out = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_messages_have_upstreams_fields(self):
        m = proto.FromConnectorMessage()
        m.gatewayRpcResponseMsg.id = 1
        self.assertEqual(proto.FromConnectorMessage.FromString(m.SerializeToString()).gatewayRpcResponseMsg.id, 1)


if __name__ == "__main__":
    unittest.main()
