"""The process: one `session` stream with tbgw, the connector class running against the
gateway object, downlink dispatched to its callbacks on two worker threads (RPCs in order, as
upstream's single RPC thread; attribute updates and answers on the other)."""

import json
import logging
import os
import queue
import signal
import sys
import threading

import grpc

from . import convert, proto
from .gateway import Gateway
from .loader import find_class, search_dirs, share_paths_with_upstream_loader

log = logging.getLogger("tbgw_custom")

# Messages waiting for the stream: beyond, `send_to_storage` blocks (back-pressure from the
# gateway instead of unbounded memory).
OUT_QUEUE_SIZE = 100_000
CLOSE_TIMEOUT_S = 3  # tbgw kills the process 4 s after it unregistered it


class Session:
    """tbgw's bidirectional `session`: messages go out in order from a queue, downlink is read
    by a thread."""

    def __init__(self, target):
        self._channel = grpc.insecure_channel(target)
        call = self._channel.stream_stream(proto.SESSION_METHOD,
                                           request_serializer=proto.FromConnectorMessage.SerializeToString,
                                           response_deserializer=proto.FromServiceMessage.FromString)
        self._out = queue.Queue(OUT_QUEUE_SIZE)
        self._closed = threading.Event()
        # wait_for_ready: a host started while the gateway's server is not up yet waits for it
        self.responses = call(self._requests(), wait_for_ready=True)

    def _requests(self):
        while True:
            m = self._out.get()
            if m is None:
                return
            yield m

    def send(self, msg):
        """Queues `msg`; blocks while the queue is full, drops it once the session is closed."""
        while not self._closed.is_set():
            try:
                self._out.put(msg, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self):
        self._closed.set()
        try:
            self._out.put(None, timeout=1)
        except queue.Full:
            pass
        self._channel.close()


class Host:
    """Registers with `key`, builds the class from its configuration, and runs it."""

    def __init__(self, target, key, connector_type, class_name, extension_dirs, config_dir):
        self.session = Session(target)
        self.key = key
        self.connector_type = connector_type
        self.class_name = class_name
        self.extension_dirs = extension_dirs
        self.config_dir = config_dir
        self.gateway = None
        self.connector = None
        self.exit_code = 0
        self.done = threading.Event()
        self._rpcs = queue.SimpleQueue()
        self._attrs = queue.SimpleQueue()

    def register(self):
        """Registers; returns the connector's name, id and configuration (parsed when JSON)."""
        m = proto.FromConnectorMessage()
        m.registerConnectorMsg.connectorKey = self.key
        self.session.send(m)
        for reply in self.session.responses:
            if reply.HasField("response") and reply.response.status == proto.NOT_FOUND:
                raise SystemExit("tbgw refused the connector key (NOT_FOUND): is the connector configured?")
            if reply.HasField("connectorConfigurationMsg"):
                c = reply.connectorConfigurationMsg
                try:
                    config = json.loads(c.configuration)
                except ValueError:
                    config = c.configuration
                return c.connectorName, c.connectorId, config
        raise SystemExit("tbgw closed the session before the registration was answered")

    def start(self):
        name, connector_id, config = self.register()
        self.gateway = Gateway(self.session.send, name, self.connector_type, self.config_dir)
        self.gateway.registered.set()
        if isinstance(config, dict):
            config["name"] = name
            config.setdefault("id", connector_id)
        dirs = search_dirs(self.extension_dirs)
        share_paths_with_upstream_loader(self.extension_dirs)
        cls = find_class(self.connector_type, self.class_name, dirs)
        self.connector = cls(self.gateway, config, self.connector_type)
        try:
            self.connector.name = name
        except AttributeError:
            pass
        self.gateway.available_connectors_by_name[name] = self.connector
        self.gateway.available_connectors_by_id[connector_id] = self.connector
        for target, items in ((self._rpc_worker, self._rpcs), (self._attr_worker, self._attrs)):
            threading.Thread(target=target, args=(items,), daemon=True).start()
        threading.Thread(target=self._read, daemon=True, name="tbgw downlink").start()
        self.connector.open()
        # through logging: its handler's lock keeps the line whole among the class's own lines
        log.info("%s of %s running as connector %s, pid %d", self.class_name, self.connector_type, name,
                 os.getpid())

    def _read(self):
        try:
            for msg in self.session.responses:
                if msg.HasField("gatewayDeviceRpcRequestMsg"):
                    self._rpcs.put(msg.gatewayDeviceRpcRequestMsg)
                if msg.HasField("gatewayAttributeUpdateNotificationMsg"):
                    self._attrs.put(("update", msg.gatewayAttributeUpdateNotificationMsg))
                if msg.HasField("gatewayAttributeResponseMsg"):
                    self._attrs.put(("response", msg.gatewayAttributeResponseMsg))
                if msg.HasField("unregisterConnectorMsg"):
                    log.warning("tbgw unregistered the connector; stopping")
                    self.stop(0)
                    return
                if msg.HasField("response") and msg.response.status == proto.FAILURE:
                    log.warning("tbgw refused a message: %s", msg.response.connectorMessage)
            log.warning("tbgw closed the session; stopping")
            self.stop(1)
        except grpc.RpcError as e:
            log.warning("The session with tbgw ended: %s", e.code() if hasattr(e, "code") else e)
            self.stop(1)
        except Exception:  # noqa: BLE001 - without this thread the host is deaf: end it
            log.exception("The downlink reader failed")
            self.stop(1)

    def _rpc_worker(self, items):
        while not self.done.is_set():
            r = items.get()
            params = convert.rpc_params(r.rpcRequestMsg.params)
            content = convert.rpc_content(r.deviceName, r.rpcRequestMsg.requestId, r.rpcRequestMsg.methodName,
                                          params, self.connector_type)
            try:
                result = self.connector.server_side_rpc_handler(content)
            except Exception as e:  # noqa: BLE001 - the connector's bug must not end the host
                log.exception("server_side_rpc_handler failed for %s", content)
                result = {"error": str(e), "code": 500}
            device = r.deviceName or None
            if device is None:
                # a connector RPC: upstream's gateway answers with what the handler returns
                if result is None:
                    self.gateway.send_rpc_reply(None, r.rpcRequestMsg.requestId, success_sent=False)
                else:
                    self.gateway.send_rpc_reply(None, r.rpcRequestMsg.requestId, json.dumps(result, default=str))
            elif isinstance(result, dict) and "error" in result:
                self.gateway.send_rpc_reply(device, r.rpcRequestMsg.requestId, json.dumps(result, default=str),
                                            success_sent=False)

    def _attr_worker(self, items):
        while not self.done.is_set():
            kind, msg = items.get()
            try:
                if kind == "update":
                    self.connector.on_attributes_update(convert.attribute_update_content(msg))
                else:
                    self.gateway.attribute_response(msg)
            except Exception:  # noqa: BLE001
                log.exception("The connector failed on an attribute %s", kind)

    def stop(self, code):
        if not self.done.is_set():
            self.exit_code = code
            self.done.set()

    def shutdown(self):
        """Closes the connector (bounded in time), unregisters, ends the session."""
        if self.gateway is not None:
            self.gateway.stop_event.set()
        if self.connector is not None:
            closer = threading.Thread(target=self.connector.close, daemon=True)
            closer.start()
            closer.join(CLOSE_TIMEOUT_S)
        m = proto.FromConnectorMessage()
        m.unregisterConnectorMsg.connectorKey = self.key
        self.session.send(m)
        self.session.close()


def run(target, key, connector_type, class_name, extension_dirs, config_dir):
    """Runs until tbgw ends the session or a SIGTERM/SIGINT; returns the exit code."""
    host = Host(target, key, connector_type, class_name, extension_dirs, config_dir)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: host.stop(0))
    try:
        host.start()
    except SystemExit as e:
        log.error("%s", e)
        return 2
    except Exception:  # noqa: BLE001
        log.exception("Cannot start %s", class_name)
        host.shutdown()
        return 3
    while not host.done.wait(0.5):
        pass
    host.shutdown()
    sys.stdout.flush()
    return host.exit_code
