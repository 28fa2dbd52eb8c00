"""A custom connector in upstream's style for the tbgw_custom tests: it calls every method of
the gateway object a custom connector uses, and reports what it receives back as telemetry,
so the test sees everything at the gateway.

With upstream's package installed it derives from upstream's `Connector`, logs through its
`init_logger` and sends `ConvertedData`; without, it sends upstream's older dict format.
"""
import json
import threading

try:
    from thingsboard_gateway.connectors.connector import Connector
    from thingsboard_gateway.gateway.entities.converted_data import ConvertedData
    from thingsboard_gateway.gateway.entities.datapoint_key import DatapointKey
    from thingsboard_gateway.gateway.entities.telemetry_entry import TelemetryEntry
    from thingsboard_gateway.tb_utility.tb_logger import init_logger
    UPSTREAM = True
except ImportError:
    Connector = object
    UPSTREAM = False

ALL_TYPES = {"b": True, "l": 42, "d": 2.5, "s": "text", "j": {"k": [1, 2]}}


class ProbeConnector(Connector):
    def __init__(self, gateway, config, connector_type):
        self._gateway = gateway
        self._config = config
        self._type = connector_type
        self.name = config["name"]
        self._id = config["id"]
        self._stopped = True
        if UPSTREAM:
            self._log = init_logger(gateway, self.name, level=config.get("logLevel", "INFO"),
                                    enable_remote_logging=False, is_connector_logger=True)
        else:
            import logging
            self._log = logging.getLogger(self.name)

    # ---- upstream's Connector contract ---------------------------------------------------
    def open(self):
        self._stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def close(self):
        self._stopped = True
        self._gateway.del_device("Probe1")
        # the test checks that tbgw let the class close when it stopped the connector
        with open(self._gateway.get_config_path() + "probe-closed", "w") as f:
            f.write("closed")

    def get_id(self):
        return self._id

    def get_name(self):
        return self.name

    def get_type(self):
        return self._type

    def get_config(self):
        return self._config

    def is_connected(self):
        return not self._stopped

    def is_stopped(self):
        return self._stopped

    def _report(self, **values):
        self._gateway.send_to_storage(self.name, self._id, {
            "deviceName": "Probe1", "deviceType": "probe", "telemetry": [values]})

    def _run(self):
        gw = self._gateway
        gw.add_device("Probe1", {"connector": self}, device_type="probe")
        gw.add_device("Probe2", {"connector": self}, device_type="other")
        gw.del_device("Probe2")
        # upstream's older dict format: telemetry with a ts and attributes of every type
        gw.send_to_storage(self.name, self._id, {
            "deviceName": "Probe1", "deviceType": "probe",
            "telemetry": [{"ts": 1700000000000, "values": dict(ALL_TYPES)}],
            "attributes": [dict(ALL_TYPES)]})
        if UPSTREAM:
            data = ConvertedData("Probe1", "probe")
            data.add_to_telemetry(TelemetryEntry({DatapointKey("cd_t"): 7}, ts=1700000000001))
            data.add_to_attributes(DatapointKey("cd_a"), "converted")
            gw.send_to_storage(self.name, self._id, data)
        devices = gw.get_devices()
        gw.update_device("Probe1", "connector", self)
        self._report(devices=sorted(devices), config_path=gw.get_config_path(), upstream=UPSTREAM,
                     config_type=self._type, config_name=self._config.get("name"),
                     config_custom=self._config.get("custom"))
        gw.tb_client.client.gw_request_shared_attributes("Probe1", ["sk"], self._attribute_answer)

    def _attribute_answer(self, content, error):
        self._report(attr_answer=json.dumps(content, sort_keys=True), attr_error=str(error))

    def on_attributes_update(self, content):
        self._report(attr_update=json.dumps(content, sort_keys=True))

    def server_side_rpc_handler(self, content):
        self._log.info("RPC %s", content)
        device = content.get("device")
        if device is None:  # a connector RPC: the answer is what this returns
            return {"pong": content.get("params"), "method": content.get("method")}
        data = content["data"]
        if data["method"] == "echo":
            self._gateway.send_rpc_reply(device=device, req_id=data["id"], content={"echo": data["params"]},
                                         wait_for_publish=True, quality_of_service=1)
        elif data["method"] == "ok":
            self._gateway.send_rpc_reply(device, data["id"], success_sent=True)
        elif data["method"] == "fail":
            return {"error": "failed on purpose"}
        elif data["method"] == "crash":
            raise RuntimeError("crashed on purpose")
        return None
