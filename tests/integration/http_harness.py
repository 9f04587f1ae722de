"""A webhook receiver for the HTTP sink's tests: python's http.server on 127.0.0.1 (HTTPS
with a certificate the test generates), that checks every signature, keeps every batch it
answered 2xx, and fails on demand or at random: 500, 429 with Retry-After, hanging past
pgcdc's timeout, resetting the connection."""

import hashlib
import hmac
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import harness

FAULTS = ("500", "429", "hang", "reset")


class Receiver:
    def __init__(self, secret=None, fault_rate=0.0, seed=0, hang_s=1.5, certfile=None,
                 keyfile=None, status=None, head_status=None, max_body=None):
        self.secret = secret
        self.fault_rate = fault_rate
        self.rng = random.Random(seed)
        self.hang_s = hang_s
        self.status = status  # answer every POST with this status (and a body)
        self.head_status = head_status
        self.max_body = max_body  # answer 413 to a larger body
        self.too_large = 0
        self.lock = threading.Lock()
        self.batches = []  # (idempotency key, [event dicts], raw body) answered 2xx
        self.requests = 0
        self.faults = {f: 0 for f in FAULTS}
        self.bad_signatures = []
        self.methods = []
        self.headers_seen = []
        recv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _answer(self, code, body=b"", extra=()):
                self.send_response(code)
                for k, v in extra:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self):
                with recv.lock:
                    recv.methods.append("HEAD")
                    recv.headers_seen.append(dict(self.headers))
                self._answer(recv.head_status or 200)

            def do_OPTIONS(self):
                with recv.lock:
                    recv.methods.append("OPTIONS")
                self._answer(204)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with recv.lock:
                    recv.requests += 1
                    recv.methods.append("POST")
                    recv.headers_seen.append(dict(self.headers))
                    fault = None
                    if recv.fault_rate and recv.rng.random() < recv.fault_rate:
                        fault = recv.rng.choice(FAULTS)
                        recv.faults[fault] += 1
                if recv.secret is not None and not recv.signature_ok(self.headers, body):
                    with recv.lock:
                        recv.bad_signatures.append(self.headers.get("pgcdc-signature"))
                    self._answer(401, b"bad signature")
                    return
                if recv.max_body is not None and len(body) > recv.max_body:
                    with recv.lock:
                        recv.too_large += 1
                    self._answer(413, b"payload too large")
                    return
                if fault == "500":
                    self._answer(500, b"injected failure")
                    return
                if fault == "429":
                    self._answer(429, b"slow down", [("Retry-After", "1")])
                    return
                if fault == "hang":
                    time.sleep(recv.hang_s)
                    self.close_connection = True
                    return
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if recv.status is not None:
                    self._answer(recv.status, b"refused by the test receiver")
                    return
                events = [harness.Event(e) for e in json.loads(body, parse_float=Decimal)]
                with recv.lock:
                    recv.batches.append((self.headers.get("pgcdc-idempotency-key"), events, body))
                # A 2xx with a body: pgcdc must ignore it.
                self._answer(200, b'{"ok":true}', [("Content-Type", "application/json")])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, host="127.0.0.1", path="/hook"):
        return "%s://%s:%d%s" % (self.scheme, host, self.port, path)

    def signature_ok(self, headers, body):
        sig = headers.get("pgcdc-signature") or ""
        parts = dict(p.split("=", 1) for p in sig.split(",") if "=" in p)
        if "t" not in parts or "v1" not in parts:
            return False
        want = hmac.new(self.secret.encode(), parts["t"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
        return hmac.compare_digest(want, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300

    def events(self):
        """Every event of every accepted batch, in arrival order."""
        with self.lock:
            return [e for _, evs, _ in self.batches for e in evs]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def first_copies(events):
    """Each event's first arrival, in arrival order (deduplicated on (commit_lsn, lsn))."""
    seen, out = set(), []
    for e in events:
        if e.key not in seen:
            seen.add(e.key)
            out.append(e)
    return out


def make_cert(d, cn="localhost", san="DNS:localhost,IP:127.0.0.1"):
    """A self-signed certificate and key (the openssl CLI); returns (certfile, keyfile)."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=" + cn, "-addext",
                    "subjectAltName=" + san], check=True, capture_output=True)
    return cert, key


def http_settings(receiver, **extra):
    s = {"sink.type": "http", "sink.http.url": receiver.url()}
    s.update(extra)
    return s
