"""Helpers for the operations tests (test_ops.py, test_deploy.py): `pgcdc check` output,
`pgcdc slot status` lines, the metrics endpoint, pg_recvlogical as a rival slot reader.

Built on harness.py (clusters, the pgcdc runner, the process registry); nothing here
starts a process that harness.cleanup_all() would not stop.
"""

import os
import re
import signal
import subprocess
import urllib.error
import urllib.request

import harness

# --------------------------------------------------------------------------------------
# pgcdc check

CHECK_RE = re.compile(r"^(PASS|FAIL|WARN) ([A-Za-z0-9_.\-]+): (.*)$")


def check_results(stdout_lines):
    """[(verdict, name, detail)] from `pgcdc check` stdout. Every non-empty line must have
    the contract's shape (`PASS name: detail`); anything else is an AssertionError."""
    out = []
    for line in stdout_lines:
        if not line.strip():
            continue
        m = CHECK_RE.match(line)
        assert m, "check printed a line that is not `PASS|FAIL|WARN name: ...`: %r" % line
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def check_lines_of(results, verdict=None, name=None):
    return [r for r in results if (verdict is None or r[0] == verdict)
            and (name is None or r[1] == name)]


def run_check(make_pgcdc, settings=None, opts=None, env=None, timeout=30, sub="check", **kw):
    """Run `pgcdc check` to completion. Returns (exit code, [(verdict, name, detail)], proc).
    kw goes to make_pgcdc (cluster_=...)."""
    p = make_pgcdc(settings=settings, opts=opts, env=env, args=["check"], sub=sub, **kw)
    rc = p.run(timeout=timeout)
    return rc, check_results(p.stdout_lines), p


def describe_check(p):
    return "exit %s\n--- stdout:\n%s\n--- stderr:\n%s" % (p.returncode, p.stdout(), p.stderr())


# --------------------------------------------------------------------------------------
# pgcdc slot status


def slot_status(make_pgcdc, settings=None, opts=None, env=None, sub="slot", **kw):
    """Run `pgcdc slot status`; returns (exit code, dict of its logfmt line, proc)."""
    p = make_pgcdc(settings=settings, opts=opts, env=env, args=["slot", "status"], sub=sub, **kw)
    rc = p.run(timeout=30)
    lines = [l for l in p.stdout_lines if l.strip()]
    assert len(lines) == 1, "slot status printed %d lines, want one logfmt line:\n%s" % (
        len(lines), describe_check(p))
    return rc, harness.parse_logfmt(lines[0]), p


def slot_cmd(make_pgcdc, verb, settings=None, opts=None, env=None, sub="slot", timeout=30, **kw):
    """Run `pgcdc slot create|drop`; returns (exit code, proc)."""
    p = make_pgcdc(settings=settings, opts=opts, env=env, args=["slot", verb], sub=sub, **kw)
    return p.run(timeout=timeout), p


# --------------------------------------------------------------------------------------
# HTTP: /metrics and /healthz


def http_get(url, timeout=3.0):
    """(status, body text, headers) of a GET; (None, error text, {}) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", errors="replace"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", errors="replace"), dict(e.headers)
    except (urllib.error.URLError, OSError) as e:
        return None, str(e), {}


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)(\s+\d+)?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """One scrape of Prometheus text format 0.0.4."""

    def __init__(self, text):
        self.text = text
        self.samples = []  # (name, {labels}, float)
        self.types = {}  # name -> counter|gauge|...
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                continue
            m = _SAMPLE_RE.match(line)
            assert m, "not a Prometheus sample line: %r" % line
            labels = dict(_LABEL_RE.findall(m.group(3) or ""))
            self.samples.append((m.group(1), labels, float(m.group(4))))

    def names(self):
        return {s[0] for s in self.samples}

    def get(self, name, default=None, **labels):
        """The value of the sample `name` whose labels include `labels`; the sum when
        several match (e.g. events over every op); default when none does."""
        vals = [v for n, l, v in self.samples
                if n == name and all(l.get(k) == str(x) for k, x in labels.items())]
        return sum(vals) if vals else default


class MetricsEndpoint:
    def __init__(self, port, host="127.0.0.1"):
        self.port = port
        self.base = "http://%s:%d" % (host, port)

    @property
    def listen(self):
        return "127.0.0.1:%d" % self.port

    def scrape(self):
        st, body, headers = http_get(self.base + "/metrics")
        assert st == 200, "GET /metrics -> %s %s" % (st, body[:300])
        return Metrics(body)

    def raw(self):
        return http_get(self.base + "/metrics")

    def health(self):
        """The /healthz status code, None when nothing listens."""
        return http_get(self.base + "/healthz")[0]

    def wait_health(self, status, timeout, proc=None):
        def ok():
            if proc is not None:
                proc.assert_alive("while waiting for /healthz %s" % status)
            return self.health() == status
        harness.wait_until(ok, timeout, interval=0.2, what="/healthz to answer %s (last: %s)" % (
            status, self.health()))

    def wait_metric(self, pred, timeout, what="metrics condition", proc=None):
        """Poll scrapes until pred(Metrics) is truthy; returns that scrape."""
        box = {}

        def ok():
            if proc is not None:
                proc.assert_alive("while waiting for %s" % what)
            m = self.scrape()
            box["m"] = m
            return pred(m)
        harness.wait_until(ok, timeout, interval=0.2, what=what)
        return box["m"]


def new_metrics_endpoint():
    return MetricsEndpoint(harness.free_port())


# --------------------------------------------------------------------------------------
# pg_recvlogical: another process holding the slot


class RecvLogical:
    """`pg_recvlogical --start` on an existing slot, writing to /dev/null."""

    def __init__(self, cluster, slot, dsn=None):
        self.cluster = cluster
        self.slot = slot
        self.dsn = dsn or cluster.dsn()
        self.proc = None
        harness._register(self)

    def start(self):
        binary = os.path.join(self.cluster.bindir, "pg_recvlogical")
        self.proc = subprocess.Popen(
            [binary, "-d", self.dsn, "-S", self.slot, "--start", "-f", "/dev/null",
             "-o", "format-version=2", "-s", "1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def wait_active(self, timeout=30):
        """Wait until the server shows the slot active; returns the walsender's pid."""
        def active():
            if self.proc.poll() is not None:
                raise AssertionError("pg_recvlogical exited %s: %s" % (
                    self.proc.returncode, self.proc.stderr.read().decode(errors="replace")))
            s = self.cluster.slot(self.slot) or {}
            return s.get("active_pid") if s.get("active") else None
        return harness.wait_until(active, timeout, what="pg_recvlogical to hold slot %s" % self.slot)

    def stop(self):
        harness._unregister(self)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    kill_now = stop


# --------------------------------------------------------------------------------------
# Process inspection


def proc_cmdline(pid):
    """/proc/PID/cmdline as bytes ('' once the process is gone)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""


def walsender_pids(cluster, slot):
    rows = cluster.sql("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s "
                       "AND active", (slot,), dbname="postgres")
    return [r[0] for r in rows or [] if r[0]]


def terminate_walsender(cluster, slot):
    """pg_terminate_backend the walsender streaming `slot`; returns its pid or None."""
    for pid in walsender_pids(cluster, slot):
        cluster.sql("SELECT pg_terminate_backend(%s)", (pid,), dbname="postgres")
        return pid
    return None
