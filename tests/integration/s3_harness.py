"""The S3 sink's test fixtures: s3rver (an S3-compatible server from npm) on 127.0.0.1, a
receiver that refuses every request (s3rver checks no signature), and readers of what the
sink stored, through plain HTTP GETs (s3rver serves anonymous reads).

tests/s3/package.json pins s3rver and @duckdb/node-api; they are installed into
tests/s3/node_modules by scripts/test.sh, or here when missing."""

import gzip
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import harness as h

S3_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3")
NODE_MODULES = os.path.join(S3_DIR, "node_modules")
CREDS = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER"}
_install_lock = threading.Lock()


def ensure_node_modules():
    """npm install tests/s3's pinned packages unless they are there already."""
    with _install_lock:
        if os.path.exists(os.path.join(NODE_MODULES, ".bin", "s3rver")):
            return
        if not shutil.which("npm"):
            raise RuntimeError("npm is needed for the S3 tests: apt-get install nodejs npm")
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=S3_DIR, check=True,
                       timeout=600)


class S3rver:
    def __init__(self, bucket="cdc"):
        ensure_node_modules()
        self.bucket = bucket
        self.dir = tempfile.mkdtemp(prefix="pgcdc-s3rver-")
        self.port = h.free_port()
        self.proc = None

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        log = open(os.path.join(self.dir, "s3rver.log"), "ab")
        self.proc = subprocess.Popen(
            [os.path.join(NODE_MODULES, ".bin", "s3rver"), "-d", os.path.join(self.dir, "data"),
             "-a", "127.0.0.1", "-p", str(self.port), "--configure-bucket", self.bucket],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        h.wait_until(lambda: self._up(), 30, what="s3rver listening")
        return self

    def _up(self):
        try:
            urllib.request.urlopen(self.endpoint + "/" + self.bucket + "/?list-type=2", timeout=2)
            return True
        except Exception:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def settings(self, prefix, **extra):
        s = {"sink.type": "s3", "sink.s3.url": "s3://%s/%s" % (self.bucket, prefix),
             "sink.s3.endpoint": self.endpoint, "sink.s3.path_style": "true",
             "sink.s3.flush_ms": "300"}
        s.update(extra)
        return s

    def get(self, key):
        url = "%s/%s/%s" % (self.endpoint, self.bucket, urllib.parse.quote(key))
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def keys(self, prefix):
        """Every key under prefix, in name order (ListObjectsV2, all pages)."""
        out, token = [], None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            url = "%s/%s/?%s" % (self.endpoint, self.bucket, urllib.parse.urlencode(q))
            with urllib.request.urlopen(url, timeout=30) as r:
                root = ET.fromstring(r.read())
            ns = {"s": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
            p = "s:" if ns else ""
            out += [k.text for k in root.findall(".//%sContents/%sKey" % (p, p), ns)]
            trunc = root.find("%sIsTruncated" % p, ns)
            if trunc is None or trunc.text != "true":
                return sorted(out)
            token = root.find("%sNextContinuationToken" % p, ns).text

    def position(self, prefix):
        b = self.get(prefix + "/_pgcdc/position.json")
        return json.loads(b) if b else None

    def table_events(self, prefix, folder):
        """The events of every object in a table folder, objects in name order."""
        evs = []
        for k in self.keys("%s/%s/" % (prefix, folder)):
            body = self.get(k)
            if k.endswith(".gz"):
                body = gzip.decompress(body)
            evs += [json.loads(l) for l in body.decode().splitlines() if l]
        return evs

    def download(self, prefix, folder, dest):
        os.makedirs(dest, exist_ok=True)
        for k in self.keys("%s/%s/" % (prefix, folder)):
            with open(os.path.join(dest, k.rsplit("/", 1)[1]), "wb") as f:
                f.write(self.get(k))


def fold(events, key="id"):
    """A table's rows rebuilt from its events: the last event per key by (commit_lsn, lsn);
    deletes remove the row. Fails on a duplicated event."""
    seen = set()
    rows = {}
    for e in sorted(events, key=lambda e: (e["source"]["commit_lsn"], e["source"]["lsn"])):
        ident = (e["source"]["commit_lsn"], e["source"]["lsn"], e["op"],
                 json.dumps((e["after"] or e["before"] or {}).get(key)))
        assert ident not in seen, "duplicated event %r" % (ident,)
        seen.add(ident)
        if e["op"] == "d":
            rows.pop(e["before"][key], None)
        elif e["op"] in ("c", "u", "r"):
            rows[e["after"][key]] = e["after"]
    return rows


class _LocalServer:
    """A threaded HTTP server on 127.0.0.1 whose every method is `handle(request)`."""

    def _serve(self, handle, protocol_version="HTTP/1.0"):
        class H(http.server.BaseHTTPRequestHandler):
            do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = handle

            def log_message(self, *a):
                pass

        H.protocol_version = protocol_version
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.endpoint = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Refuser(_LocalServer):
    """An HTTP server that answers every request with `status` and an S3 error `code`."""

    def __init__(self, status=403, code="InvalidAccessKeyId", region=None):
        self.status, self.code, self.region = status, code, region
        outer = self

        def answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>%s</Code>"
                    "<Message>refused by the test</Message></Error>" % outer.code).encode()
            self.send_response(outer.status)
            self.send_header("Content-Type", "application/xml")
            if outer.region:
                self.send_header("x-amz-bucket-region", outer.region)
            self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        self._serve(answer)


class SlowProxy(_LocalServer):
    """Forwards every request to `target` (s3rver), holding each PUT for `delay` seconds
    first, so that a flush takes long enough for a kill to land in the middle of it."""

    def __init__(self, target, delay=0.1):
        import http.client
        tgt = urllib.parse.urlparse(target)
        outer = self
        self.delay = delay

        def forward(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
            if self.command == "PUT":
                time.sleep(outer.delay)
            c = http.client.HTTPConnection(tgt.hostname, tgt.port, timeout=60)
            hdrs = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            c.request(self.command, self.path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            c.close()

        self._serve(forward, protocol_version="HTTP/1.1")
