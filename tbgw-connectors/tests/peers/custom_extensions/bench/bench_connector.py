"""A custom connector for the custom_bench example: on open it sends `messages` telemetry
messages of `values` values each for one device, as fast as `send_to_storage` takes them, in
upstream's older dict format or (`"format": "converted"`, upstream's package installed) as
`ConvertedData`; it answers `echo` RPCs."""
import threading


class BenchConnector:
    def __init__(self, gateway, config, connector_type):
        self._gateway = gateway
        self._config = config
        self._type = connector_type
        self.name = config["name"]
        self._id = config["id"]
        self._stopped = True

    def open(self):
        self._stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        n, values = self._config.get("messages", 10000), self._config.get("values", 10)
        converted = self._config.get("format") == "converted"
        if converted:
            from thingsboard_gateway.gateway.entities.converted_data import ConvertedData
            from thingsboard_gateway.gateway.entities.datapoint_key import DatapointKey
            from thingsboard_gateway.gateway.entities.telemetry_entry import TelemetryEntry
            keys = [DatapointKey(f"k{k}") for k in range(values)]
        send = self._gateway.send_to_storage
        for i in range(n):
            if self._stopped:
                return
            ts = 1700000000000 + i
            if converted:
                data = ConvertedData("BenchDev", "bench")
                data.add_to_telemetry(TelemetryEntry({keys[k]: i + k for k in range(values)}, ts=ts))
            else:
                data = {"deviceName": "BenchDev", "deviceType": "bench",
                        "telemetry": [{"ts": ts, "values": {f"k{k}": i + k for k in range(values)}}]}
            send(self.name, self._id, data)

    def close(self):
        self._stopped = True

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

    def on_attributes_update(self, content):
        pass

    def server_side_rpc_handler(self, content):
        data = content["data"]
        self._gateway.send_rpc_reply(content["device"], data["id"], {"echo": data["params"]})
