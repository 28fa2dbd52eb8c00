"""HTTP(S) test peer for the tbgw Request and REST connectors (Python standard library only).

Usage: request_server.py PORT [CERT KEY [CLIENT_CA]]   (https; with CLIENT_CA, client
certificates signed by it are required)

Endpoints:
  GET  /data                 a JSON reading
  GET  /devices              {"items": [{"id": 1, ...}, {"id": 2, ...}]}
  GET  /hist/<id>            {"values": [{"avg": <id * 1000>}]} (sub-request target)
  GET  /slow?ms=N            answers after N ms; counts how many run at once
  GET  /fail                 500
  GET  /malformed            200 with a body that is not JSON
  GET  /auth                 needs basic user:password, else 401
  GET  /redirect             302 to /data
  ANY  /sensor/...           recorded; answers {"temp": 22.5, "echo": <body>}
  ANY  /status/<code>        answers <code> with body "status <code>"
  GET  /_log                 the recorded /sensor requests
  GET  /_stats               per path: request count, most in flight at once, start times
Prints READY once listening.
"""

import base64
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
LOG = []
COUNTS = {}
IN_FLIGHT = {}
MAX_IN_FLIGHT = {}
TIMES = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, content_type="application/json", extra=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def handle_any(self):
        url = urlparse(self.path)
        path = url.path
        body = self.body()
        with LOCK:
            COUNTS[path] = COUNTS.get(path, 0) + 1
            IN_FLIGHT[path] = IN_FLIGHT.get(path, 0) + 1
            MAX_IN_FLIGHT[path] = max(MAX_IN_FLIGHT.get(path, 0), IN_FLIGHT[path])
            TIMES.setdefault(path, []).append(time.monotonic())
        try:
            self.route(path, parse_qs(url.query), body)
        finally:
            with LOCK:
                IN_FLIGHT[path] -= 1

    def route(self, path, query, body):
        if path == "/data":
            self.reply(200, {"serial": "SN-1", "Developer": "ann", "hum": 40, "temp": 21.5})
        elif path == "/devices":
            self.reply(200, {"items": [{"id": 1, "type": "GV"}, {"id": 2, "type": "GV"}]})
        elif path.startswith("/hist/"):
            ident = int(path.rsplit("/", 1)[1])
            self.reply(200, {"values": [{"avg": ident * 1000}]})
        elif path == "/slow":
            time.sleep(int(query.get("ms", ["1000"])[0]) / 1000.0)
            self.reply(200, {"v": COUNTS.get(path, 0)})
        elif path == "/fail":
            self.reply(500, "internal error", "text/plain")
        elif path == "/malformed":
            self.reply(200, "{not json", "application/json")
        elif path == "/auth":
            expected = "Basic " + base64.b64encode(b"user:password").decode()
            if self.headers.get("Authorization") != expected:
                self.reply(401, "no", "text/plain", {"WWW-Authenticate": 'Basic realm="t"'})
            else:
                self.reply(200, {"serial": "AUTH-1", "temp": 5})
        elif path == "/redirect":
            self.reply(302, "", "text/plain", {"Location": "/data"})
        elif path.startswith("/sensor/"):
            text = body.decode("utf-8", "replace")
            try:
                echo = json.loads(text) if text else None
            except ValueError:
                echo = text
            with LOCK:
                LOG.append({
                    "method": self.command,
                    "path": path,
                    "body": text,
                    "authorization": self.headers.get("Authorization"),
                })
            self.reply(200, {"temp": 22.5, "echo": echo})
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self.reply(code, "status %d" % code, "text/plain")
        elif path == "/_log":
            with LOCK:
                self.reply(200, list(LOG))
        elif path == "/_stats":
            with LOCK:
                self.reply(200, {"counts": COUNTS, "max_in_flight": MAX_IN_FLIGHT, "times": TIMES})
        else:
            self.reply(404, "not found", "text/plain")

    do_GET = handle_any
    do_POST = handle_any
    do_PUT = handle_any
    do_DELETE = handle_any


def main():
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if len(sys.argv) >= 4:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        if len(sys.argv) >= 5:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(sys.argv[4])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
