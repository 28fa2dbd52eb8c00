"""The gateway object a custom connector class gets as its first argument.

It has what upstream's connectors and their helpers (`init_logger`, the remote log handler)
use of upstream's `TBGatewayService`, mapped to tbgw's connector API: data to
`gatewayTelemetryMsg`/`gatewayAttributesMsg`, devices to `connectMsg`/`disconnectMsg`, RPC
answers to `gatewayRpcResponseMsg`, attribute requests to `gatewayAttributeRequestMsg`.
"""

import itertools
import logging
import os
import threading

from . import convert, proto

log = logging.getLogger("tbgw_custom")

try:  # upstream's status values, when its package is installed
    from thingsboard_gateway.gateway.constants import Status
except Exception:  # noqa: BLE001 - any failure to import means: not available
    class Status:  # pylint: disable=too-few-public-methods
        """Upstream's `Status` values that `send_to_storage` returns."""
        FAILURE = 1
        NOT_FOUND = 2
        SUCCESS = 3
        FORBIDDEN_DEVICE = 4


class _Future:
    """What upstream's `gw_connect_device(...)` returns; `.get()` does not block here."""

    def get(self, *_args, **_kwargs):
        return 0

    def is_published(self):
        return True


class _ThingsBoardClient:
    """`gateway.tb_client.client`: the calls connectors make on upstream's MQTT client."""

    def __init__(self, gateway):
        self._gw = gateway

    def gw_request_shared_attributes(self, device, keys, callback):
        return self._gw.request_attributes(device, keys, callback, client=False)

    def gw_request_client_attributes(self, device, keys, callback):
        return self._gw.request_attributes(device, keys, callback, client=True)

    def gw_send_rpc_reply(self, device, req_id, resp, quality_of_service=0, **_kwargs):
        self._gw.send_rpc_reply(device, req_id, resp, quality_of_service=quality_of_service)
        return _Future()

    def gw_connect_device(self, device, device_type="default", **_kwargs):
        self._gw.add_device(device, {}, device_type)
        return _Future()

    def gw_disconnect_device(self, device, **_kwargs):
        self._gw.del_device(device)
        return _Future()

    def gw_send_telemetry(self, device, telemetry, **_kwargs):
        self._gw.send_to_storage(self._gw.name, None, {"deviceName": device, "telemetry": telemetry if isinstance(telemetry, list) else [telemetry]})
        return _Future()

    def gw_send_attributes(self, device, attributes, **_kwargs):
        self._gw.send_to_storage(self._gw.name, None, {"deviceName": device, "attributes": attributes})
        return _Future()


class _ThingsBoardConnection:
    """`gateway.tb_client`: connected while the session with tbgw is registered."""

    def __init__(self, gateway):
        self.client = _ThingsBoardClient(gateway)
        self._gw = gateway

    def is_connected(self):
        return self._gw.registered.is_set() and not self._gw.stopped


class Gateway:
    """The gateway object; `send` puts a FromConnectorMessage on the session."""

    def __init__(self, send, connector_name, connector_type, config_dir, max_payload=65535):
        self._send = send
        self.name = connector_name
        self.connector_type = connector_type
        self._config_dir = config_dir if config_dir.endswith(os.sep) else config_dir + os.sep
        self._max_payload = max_payload
        self._lock = threading.Lock()
        self._devices = {}
        self._attr_requests = {}
        self._request_ids = itertools.count(1)
        self._dropped_gateway_data = False
        self.stop_event = threading.Event()
        self.registered = threading.Event()
        self.tb_client = _ThingsBoardConnection(self)
        self.available_connectors_by_name = {}
        self.available_connectors_by_id = {}
        self.connectors_configs = {}
        self.counters = {"messages": 0, "errors": 0}

    # ---- upstream's TBGatewayService API ------------------------------------------------

    @property
    def stopped(self):
        return self.stop_event.is_set()

    def get_config_path(self):
        return self._config_dir

    def get_max_payload_size_bytes(self):
        return self._max_payload

    def get_report_strategy_service(self):
        # tbgw applies the report strategy itself (main file and connector file).
        return None

    def send_to_storage(self, connector_name, connector_id, data=None):
        """Sends a device's telemetry and attributes (`ConvertedData` or upstream's older dict)
        to tbgw. A device not announced yet is announced first with the data's type."""
        if data is None:
            log.error("[%s] Data is empty from connector %s!", connector_id, connector_name)
            return Status.FAILURE
        try:
            for item in data if isinstance(data, list) else [data]:
                device, dtype, telemetry, attributes = convert.normalize(item)
                messages = convert.data_messages(device, telemetry, attributes)
                if not messages:
                    continue
                with self._lock:
                    known = device in self._devices
                if not known:
                    self.add_device(device, {"connector": self._connector()}, dtype)
                for m in messages:
                    self._send(m)
                self.counters["messages"] += 1
            return Status.SUCCESS
        except (ValueError, TypeError) as e:
            self.counters["errors"] += 1
            log.error("Cannot send data from connector %s: %s (%r)", connector_name, e, data)
            return Status.FAILURE

    def add_device(self, device_name, content, device_type=None):
        device_type = device_type if device_type is not None else "default"
        with self._lock:
            self._devices[device_name] = {**(content or {}), "device_type": device_type}
        m = proto.FromConnectorMessage()
        m.connectMsg.deviceName = device_name
        m.connectMsg.deviceType = device_type
        self._send(m)
        return True

    def update_device(self, device_name, event, content):
        with self._lock:
            if device_name in self._devices:
                self._devices[device_name][event] = content

    def del_device(self, device_name, remove_device=True):  # pylint: disable=unused-argument
        with self._lock:
            self._devices.pop(device_name, None)
        if device_name is None:
            return
        m = proto.FromConnectorMessage()
        m.disconnectMsg.deviceName = device_name
        self._send(m)

    def get_devices(self, connector_id=None):  # pylint: disable=unused-argument
        with self._lock:
            if connector_id is None:
                return dict(self._devices)
            return {name: info["device_type"] for name, info in self._devices.items()}

    def send_rpc_reply(self, device=None, req_id=None, content=None, success_sent=None, wait_for_publish=None,
                       quality_of_service=0, to_connector_rpc=False):  # pylint: disable=unused-argument
        """Answers the RPC `req_id` (of `device`; a connector RPC without) as upstream's gateway
        shapes the answer."""
        data = convert.rpc_reply_data(content, success_sent)
        if data is None or req_id is None:
            log.debug("RPC reply without content or id for %s ignored (as upstream)", device)
            return
        m = proto.FromConnectorMessage()
        r = m.gatewayRpcResponseMsg
        r.deviceName = "" if (device is None or to_connector_rpc) else device
        r.id = int(req_id)
        r.data = convert.reply_text(data)
        self._send(m)

    def request_attributes(self, device, keys, callback, client=False):
        """Asks ThingsBoard for a device's shared (or client) attributes; `callback(content,
        None)` gets the answer as upstream's client gives it."""
        keys = [keys] if isinstance(keys, str) else list(keys or [])
        request_id = next(self._request_ids) % 2_000_000_000
        with self._lock:
            self._attr_requests[request_id] = (callback, keys)
        m = proto.FromConnectorMessage()
        r = m.gatewayAttributeRequestMsg
        r.id, r.deviceName, r.client = request_id, device, client
        r.keys.extend(keys)
        self._send(m)
        return request_id

    def request_device_attributes(self, device_name, shared_keys, client_keys, callback):
        if client_keys is not None:
            self.request_attributes(device_name, client_keys, callback, client=True)
        if shared_keys is not None:
            self.request_attributes(device_name, shared_keys, callback, client=False)

    def is_rpc_in_progress(self, _topic):
        return False

    def register_rpc_request_timeout(self, content, timeout, topic, cancel_method):  # pylint: disable=unused-argument
        # tbgw times RPCs out itself (the RPC's timeout, else the gateway's default).
        return None

    def rpc_with_reply_processing(self, topic, content):  # pylint: disable=unused-argument
        return None

    def send_telemetry(self, telemetry):  # pylint: disable=unused-argument
        self._gateway_data_dropped()

    def send_attributes(self, attributes):  # pylint: disable=unused-argument
        self._gateway_data_dropped()

    def get_connector_devices(self, connector):  # pylint: disable=unused-argument
        with self._lock:
            return list(self._devices)

    # ---- called by the host -------------------------------------------------------------

    def attribute_response(self, msg):
        """Hands a gatewayAttributeResponseMsg to the callback of its request."""
        with self._lock:
            pending = self._attr_requests.pop(msg.responseMsg.requestId, None)
        if pending is None:
            log.warning("Attribute response for an unknown request %s", msg.responseMsg.requestId)
            return
        callback, keys = pending
        content = convert.attribute_response_content(msg, keys)
        error = msg.responseMsg.error or None
        if isinstance(callback, tuple):
            callback[0](content, error, *callback[1:])
        elif callback is not None:
            callback(content, error)

    def _connector(self):
        return self.available_connectors_by_name.get(self.name)

    def _gateway_data_dropped(self):
        if not self._dropped_gateway_data:
            self._dropped_gateway_data = True
            log.warning("The connector sent data of the gateway device itself (remote logs, statistics): "
                        "tbgw's connector API carries device data only; dropped (logged once)")
