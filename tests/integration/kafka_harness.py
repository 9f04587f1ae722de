"""Kafka side of the integration tests: the mock cluster process and a reader.

MockKafka runs tests/fixtures/kafka_mock_cluster (librdkafka's mock brokers, the real
protocol over TCP on 127.0.0.1) and drives it over stdin: broker outages, topic creation,
injected request errors. read_topic() reads a topic back with kcat (-J gives partition,
offset, key, headers, payload).

Everything started here is registered with harness's process registry, so a failing test
never leaves a mock cluster behind.
"""

import json
import os
import shutil
import subprocess
import threading
import time

import harness

HERE = os.path.dirname(os.path.abspath(__file__))


def mock_binary():
    """$PGCDC_KAFKA_MOCK (ctest sets it), else the fixture in a build dir."""
    b = os.environ.get("PGCDC_KAFKA_MOCK")
    if b:
        return b
    cands = []
    if os.environ.get("PGCDC_BUILD_DIR"):
        cands.append(os.path.join(os.environ["PGCDC_BUILD_DIR"], "tests", "kafka_mock_cluster"))
    cands.append(os.path.join(harness.REPO, "build", "tests", "kafka_mock_cluster"))
    for c in cands:
        if os.access(c, os.X_OK):
            return c
    raise RuntimeError("kafka_mock_cluster not found (build the project, or set "
                       "PGCDC_KAFKA_MOCK); looked in %s" % ", ".join(cands))


def kcat_binary():
    k = shutil.which("kcat") or shutil.which("kafkacat")
    if not k:
        raise RuntimeError("kcat not found: apt-get install kcat")
    return k


class MockKafka:
    """One mock cluster process. `bootstrap` is its bootstrap.servers list."""

    def __init__(self, brokers=3, binary=None):
        self.binary = binary or mock_binary()
        self.brokers = brokers
        self.proc = subprocess.Popen([self.binary, str(brokers)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        harness._register(self)
        self.lock = threading.Lock()
        self.stderr_lines = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        line = self.proc.stdout.readline()
        if not line.startswith("BOOTSTRAP "):
            self.kill_now()
            raise RuntimeError("kafka_mock_cluster did not start: %r %s" % (
                line, "\n".join(self.stderr_lines[-20:])))
        self.bootstrap = line.split(None, 1)[1].strip()

    def _drain_stderr(self):
        for line in iter(self.proc.stderr.readline, ""):
            self.stderr_lines.append(line.rstrip("\n"))

    def cmd(self, line):
        """Send one command; return the reply, raise on ERR."""
        with self.lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline().strip()
        if reply != "OK":
            raise RuntimeError("mock kafka: %r -> %r" % (line, reply))
        return reply

    def down(self, broker="all"):
        self.cmd("down %s" % broker)

    def up(self, broker="all"):
        self.cmd("up %s" % broker)

    def create_topic(self, name, partitions, replication=3):
        self.cmd("topic %s %d %d" % (name, partitions, min(replication, self.brokers)))

    def fail_requests(self, apikey, err, count=1):
        """The next `count` requests of `apikey` (0 = Produce) fail with Kafka error `err`."""
        self.cmd("perr %d %d %d" % (apikey, err, count))

    def kill_now(self):
        harness._unregister(self)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        harness._unregister(self)
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait(10)


def kafka_settings(mock, prefix, **extra):
    """pgcdc settings for the Kafka sink on `mock` with topic prefix `prefix`. Extra keys
    use '__' for '.' (kafka__linger_ms=5 is not needed: pass a dict instead if awkward)."""
    s = {
        "sink.type": "kafka",
        "sink.kafka.topic_prefix": prefix,
        "kafka.bootstrap.servers": mock.bootstrap,
    }
    for k, v in extra.items():
        s[k.replace("__", ".")] = v
    return s


def list_topics(bootstrap, timeout=30):
    out = subprocess.run([kcat_binary(), "-L", "-J", "-b", bootstrap, "-m", "10"],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("kcat -L failed: %s" % out.stderr)
    md = json.loads(out.stdout)
    return {t["topic"]: len(t["partitions"]) for t in md.get("topics", [])}


class Msg:
    """One Kafka message as read back. key/value are the raw text (None when null);
    .k and .v the parsed JSON (None when null)."""

    __slots__ = ("topic", "partition", "offset", "key", "value", "headers", "k", "v")

    def __init__(self, d):
        self.topic = d["topic"]
        self.partition = d["partition"]
        self.offset = d["offset"]
        self.key = d.get("key")
        self.value = d.get("payload")
        h = d.get("headers") or []
        self.headers = {h[i]: h[i + 1] for i in range(0, len(h) - 1, 2)}
        self.k = json.loads(self.key) if self.key is not None else None
        self.v = json.loads(self.value) if self.value is not None else None

    @property
    def tombstone(self):
        return self.value is None

    @property
    def ident(self):
        """(commit_lsn, lsn, op, tombstone) from the headers: one event's identity (a key
        change gives a 'd' and a 'c' at the same LSN; a tombstone shares its delete's)."""
        return (int(self.headers["pgcdc.commit_lsn"]), int(self.headers["pgcdc.lsn"]),
                self.headers["pgcdc.op"], self.tombstone)

    def __repr__(self):
        return "Msg(%s[%d]@%d key=%s op=%s lsn=%s value=%.120s)" % (
            self.topic, self.partition, self.offset, self.key, self.headers.get("pgcdc.op"),
            self.headers.get("pgcdc.lsn"), self.value)


def read_topic(bootstrap, topic, timeout=60):
    """Every message of `topic`, ordered by (partition, offset); [] if the topic does not
    exist."""
    if topic not in list_topics(bootstrap):
        return []
    out = subprocess.run([kcat_binary(), "-C", "-b", bootstrap, "-t", topic, "-o", "beginning",
                          "-e", "-J", "-q", "-X", "fetch.wait.max.ms=50"],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError("kcat -C %s failed (%d): %s" % (topic, out.returncode, out.stderr))
    msgs = [Msg(json.loads(l)) for l in out.stdout.splitlines() if l.strip()]
    msgs.sort(key=lambda m: (m.partition, m.offset))
    return msgs


def read_topics(bootstrap, topics, timeout=60):
    return {t: read_topic(bootstrap, t, timeout) for t in topics}


def wait_messages(bootstrap, topic, n, timeout=30):
    """Wait until `topic` holds at least n messages; return them."""
    got = []

    def ready():
        nonlocal got
        got = read_topic(bootstrap, topic)
        return len(got) >= n

    harness.wait_until(ready, timeout, interval=0.3, what="%d messages in %s (have %d)" % (
        n, topic, len(got)))
    return got


def topic_name(prefix, schema, table):
    return "%s.%s.%s" % (prefix, schema, table)


def check_headers(m):
    """A message's headers agree with its event (tombstones: with the delete they follow)."""
    h = m.headers
    assert set(h) >= {"pgcdc.lsn", "pgcdc.commit_lsn", "pgcdc.txid", "pgcdc.op"}, m
    for k in ("pgcdc.lsn", "pgcdc.commit_lsn", "pgcdc.txid"):
        assert h[k].isdigit(), "%s not decimal: %r" % (k, h[k])
    if m.v is not None:
        src = m.v["source"]
        assert int(h["pgcdc.lsn"]) == src["lsn"], m
        assert int(h["pgcdc.commit_lsn"]) == src["commit_lsn"], m
        assert int(h["pgcdc.txid"]) == src["txId"], m
        assert h["pgcdc.op"] == m.v["op"], m
    else:
        assert h["pgcdc.op"] == "d", "a tombstone must follow a delete: %r" % (m,)
        assert m.key is not None, "a tombstone without a key: %r" % (m,)


def slot_create(cluster, slot):
    """Create the test's wal2json slot up front, so changes made before `run` starts are
    captured (pgcdc uses an existing slot as it is)."""
    cluster.sql("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (slot,),
                dbname=cluster.dbname)


def now():
    return time.monotonic()


def _body(m):
    """An event's value without the top-level ts_ms (the time it was produced, which a
    resent copy may not share)."""
    v = dict(m.v)
    v.pop("ts_ms", None)
    return v


def verify_kafka_writers(bootstrap, prefix, writers, kill_confirmed=(), cluster=None):
    """Check the writers' topics against what the writers committed.

    - every committed change is there (at least once), each writer's transactions whole
      and in commit order once duplicates are dropped (harness.verify_writers);
    - a duplicate is an identical event (same (commit_lsn, lsn), same body) of a
      transaction that a restart could resend: its commit_lsn is at or after the slot's
      confirmed LSN at some kill, and it has at most one extra copy per such kill;
    - every delete is followed by its tombstone (at least once).

    kill_confirmed: the slot's confirmed_flush_lsn at each kill -9 (after the walsender
    let go). Returns (unique events, number of duplicate copies)."""
    topics = []
    for w in writers:
        topics += [topic_name(prefix, "public", w.a), topic_name(prefix, "public", w.b)]
    copies = {}
    tombstones = {}
    for t in sorted(set(topics)):
        for m in read_topic(bootstrap, t):
            check_headers(m)
            ident = m.ident
            if m.tombstone:
                tombstones[ident[:3]] = tombstones.get(ident[:3], 0) + 1
                continue
            copies.setdefault(ident, []).append(m)
    dups = 0
    for ident, ms in copies.items():
        if len(ms) == 1:
            continue
        dups += len(ms) - 1
        first = _body(ms[0])
        for m in ms[1:]:
            assert _body(m) == first, "copies of %r differ:\n%s\n%s" % (ident, ms[0].value,
                                                                        m.value)
        commit_lsn = ident[0]
        allowed = sum(1 for c in kill_confirmed if c <= commit_lsn)
        assert len(ms) - 1 <= allowed, (
            "event %r (commit %s) has %d copies, but only %d kills had confirmed at or "
            "before its commit (confirmed at kills: %s)" % (
                ident, harness.lsn_format(commit_lsn), len(ms), allowed,
                [harness.lsn_format(c) for c in kill_confirmed]))
    for ident, ms in copies.items():
        if ident[2] == "d" and ms[0].key is not None:
            assert tombstones.get(ident[:3], 0) >= 1, "delete %r without its tombstone" % (ident,)
    events = []
    for ident in sorted(copies):
        m = copies[ident][0]
        e = harness.Event(harness.load_event(m.value))
        e.raw = m.value
        e.segment = "%s[%d]@%d" % (m.topic, m.partition, m.offset)
        events.append(e)
    harness.verify_writers(events, writers, cluster=cluster)
    return events, dups
