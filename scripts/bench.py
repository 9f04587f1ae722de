#!/usr/bin/env python3
"""The pgcdc benchmark (scripts/bench.sh builds, then runs this). Standard library only;
SQL goes through the server's own psql.

    bench.py --build DIR [MODE...]   MODE: throughput latency bigtxn decode wholerun snapshot
                                     (default: all)

A throwaway PostgreSQL 15 + wal2json is started in a temp dir (as `postgres` when run as
root). Each mode creates one slot and copies of it (pg_copy_logical_replication_slot)
*before* its workload, so every contender decodes exactly the same changes, then drains
one copy per contender, one contender at a time:

  throughput  one 500,000-row INSERT, one 100,000-row UPDATE, one 50,000-row DELETE and
              20,000 pgbench (tpcb-like) transactions; pg_recvlogical (the reference),
              pgcdc file sink, pgcdc Kafka sink (mock cluster), pgcdc HTTP sink (a local
              receiver answering 200 at once; target: 0.8x the file sink's rate);
              changes/s, ratio, CPU, RSS.
  latency     pgbench at a steady rate (1,000 tx/s, one INSERT each) for 60 s while pgcdc
              runs; commit (source.ts_ms) -> durable: file = covered by .pgcdc-position,
              which is replaced only after the segment's fdatasync and the checkpoint;
              Kafka = consumed by kcat from the brokers (an upper bound of the ack time).
              Beside the file sink, bench_disk_floor.py measures the same disk's floor in
              the same minute: a bare group-commit append+fdatasync loop at the same rate.
  bigtxn      one transaction updating 1,000,000 rows; peak RSS of each contender.
  snapshot    a 2,000,000-row table of the throughput workload's seven column types: psql
              `\copy t to '/dev/null'` (the reference) against `pgcdc run` with
              snapshot.mode = initial_only into the file sink, on tmpfs (/dev/shm, so the
              figure measures the worker) and on disk; rows/s, ratio, CPU, peak RSS; and
              with BENCH_SNAP_WORKERS="1 2 4", the speed-up of snapshot.workers on tmpfs,
              the table read in ranges of BENCH_SNAP_CHUNK_PAGES (4096) pages.
  decode      bench_decode under callgrind: instructions per change, decode+encode.
  wholerun    the whole `pgcdc run` (file sink, then Kafka sink with librdkafka's threads)
              under callgrind on 35,000 changes: instructions per change, everything
              included (libpq, syscalls' user side, sync, producing). Batching depends
              on timing, so this moves by a few percent between runs; the decode mode's
              number does not move at all.

Environment (all optional):
  BENCH_SCALE=0.1           multiply every workload size (and the latency duration)
  BENCH_ROUNDS=N            throughput rounds, 3 by default (the contender order rotates);
                            the best round of each contender is reported, all are in the JSON
  BENCH_LAT_SECONDS, BENCH_LAT_RATE, BENCH_BIG_ROWS, BENCH_WHOLE_ROWS, BENCH_SNAP_ROWS
                            override one size
  BENCH_KAFKA_OPTS="k=v k=v"   extra kafka.* settings for the pgcdc Kafka contender
  BENCH_PGCDC=/path/pgcdc      run this binary instead of DIR/pgcdc
  BENCH_COMPARE=/path/pgcdc    throughput, latency and wholerun also run this second binary (file
                               and Kafka; throughput on the same changes): an A/B
                               comparison within one run
  BENCH_LAT_SINKS="file"       latency: only these sinks (default "file kafka")
  BENCH_DISK_STRESS=1          latency: a second process rewrites 64 MiB with fsync in a loop
                               on the same filesystem, as a busy shared disk would
  BENCH_KEEP=1              keep the work dir (server, outputs, logs, latency samples)
  BENCH_JSON=FILE           also write every number as JSON

Wall-clock numbers from a shared machine are noisy: compare ratios within one run, and
use the decode mode's instruction counts (deterministic) to catch regressions.
"""

import gzip
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What pgcdc asks wal2json for (src/stream.c plugin_options); pg_recvlogical gets the same.
PLUGIN_OPTIONS = [("format-version", "2"), ("include-xids", "1"), ("include-timestamp", "1"),
                  ("include-lsn", "1"), ("include-pk", "1"), ("include-type-oids", "1"),
                  ("include-types", "0"), ("include-transaction", "1")]

TARGETS = {"file_ratio": 0.9, "kafka_ratio": 0.8, "http_vs_file": 0.8, "p99_ms": 100.0, "rss_mb": 64.0,
           "snapshot_ratio": 0.9}


def env_float(name, default):
    v = os.environ.get(name)
    return float(v) if v not in (None, "") else default


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lsn_parse(text):
    hi, lo = text.strip().split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


# --------------------------------------------------------------------------------------
# Processes: run to completion with their own rusage (wait4), not the whole tree's.

class Proc:
    """A child process and, once it has exited, its own CPU time and peak RSS.

    Measured by GNU time (/usr/bin/time -f '%U %S %M'), not by wait4 here: Linux carries
    the parent's RSS high-water mark into a forked child's ru_maxrss across exec, so a
    child of this Python process never reports less than Python's own RSS."""

    def __init__(self, args, log_path=None, stdin=subprocess.DEVNULL, stdout=None, measure=True):
        self.args = args
        self.log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.tfile = None
        if measure:
            fd, self.tfile = tempfile.mkstemp(prefix="bench-time-")
            os.close(fd)
            args = ["/usr/bin/time", "-o", self.tfile, "-f", "%U %S %M"] + list(args)
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(args, stdin=stdin, stdout=stdout if stdout else self.log,
                                  stderr=self.log)
        self.ru = None
        self.rc = None
        self.wall = None
        self.user = self.sys = self.maxrss_kb = None
        # Time its threads spent runnable but waiting for a CPU (schedstat), sampled: on a
        # shared machine this tells a slow contender from a starved one.
        self.sched = {}
        self.sampling = threading.Event()
        if measure:
            threading.Thread(target=self._sample_sched, daemon=True).start()

    def _sample_sched(self):
        while not self.sampling.is_set():
            pid = self.target_pid()
            if pid:
                try:
                    for tid in os.listdir("/proc/%d/task" % pid):
                        with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                            run_ns, wait_ns, _ = f.read().split()
                        self.sched[tid] = int(wait_ns)
                except (OSError, ValueError):
                    pass
            self.sampling.wait(0.05)

    def runq_wait(self):
        return sum(self.sched.values()) / 1e9

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.p.pid, os.WNOHANG)
            if pid:
                self.sampling.set()
                self.wall = time.monotonic() - self.t0
                self.rc = os.waitstatus_to_exitcode(status)
                self.ru = ru
                self.p.returncode = self.rc
                if self.log is not subprocess.DEVNULL:
                    self.log.close()
                if self.tfile:
                    with open(self.tfile) as f:
                        last = f.read().strip().splitlines()[-1].split()
                    os.unlink(self.tfile)
                    self.user, self.sys, self.maxrss_kb = float(last[0]), float(last[1]), int(last[2])
                    # GNU time passes the exit status on; a signal becomes 128+N.
                return self.rc
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("%s did not finish in %ss" % (self.args[0], timeout))
            time.sleep(0.005)

    def target_pid(self):
        """The measured process itself (GNU time's child), or None once gone."""
        if not self.tfile:
            return self.p.pid
        try:
            with open("/proc/%d/task/%d/children" % (self.p.pid, self.p.pid)) as f:
                kids = f.read().split()
            return int(kids[0]) if kids else None
        except OSError:
            return None

    def signal(self, sig):
        if self.rc is None:
            pid = self.target_pid()
            if pid:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def kill(self):
        if self.rc is not None:
            return
        self.signal(signal.SIGKILL)
        try:
            self.wait(10)
        except Exception:
            pass

    def cpu(self):
        if self.user is not None:
            return self.user + self.sys
        return self.ru.ru_utime + self.ru.ru_stime

    def rss_mb(self):
        if self.maxrss_kb is not None:
            return self.maxrss_kb / 1024.0
        return self.ru.ru_maxrss / 1024.0  # KiB on Linux; see the class comment


class WalsenderCpu:
    """Samples the CPU time of the server's walsender processes (the decoding side) every
    100 ms, so a run shows whether the server or the client was the bottleneck."""

    def __init__(self, postmaster_pid):
        self.ppid = postmaster_pid
        self.seen = {}
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def sample(self):
        tick = os.sysconf("SC_CLK_TCK")
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
                fields = st[st.rindex(")") + 2:].split()
                if int(fields[1]) != self.ppid:
                    continue
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    if b"walsender" not in f.read():
                        continue
                self.seen[d] = (int(fields[11]) + int(fields[12])) / tick
            except (OSError, ValueError, IndexError):
                continue

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.1)

    def finish(self):
        self.stop.set()
        self.t.join()
        return sum(self.seen.values())


# --------------------------------------------------------------------------------------
# The server

def pg_bindir():
    if os.environ.get("PGCDC_PG_BIN"):
        return os.environ["PGCDC_PG_BIN"]
    best = None
    for v in sorted(os.listdir("/usr/lib/postgresql"), key=lambda x: int(x) if x.isdigit() else 0):
        d = os.path.join("/usr/lib/postgresql", v)
        if os.path.exists(os.path.join(d, "lib", "wal2json.so")) and os.path.exists(
                os.path.join(d, "bin", "initdb")):
            best = d
    if not best:
        sys.exit("bench: no PostgreSQL with wal2json under /usr/lib/postgresql "
                 "(apt-get install postgresql-15 postgresql-15-wal2json)")
    return os.path.join(best, "bin")


class Server:
    SETTINGS = {
        "listen_addresses": "'127.0.0.1'",
        "wal_level": "logical",
        "max_wal_senders": "10",
        "max_replication_slots": "32",
        "wal_sender_timeout": "'60s'",
        # The workload only has to be written, not survive an OS crash; decoding is what
        # is measured and does not depend on these.
        "fsync": "off",
        "full_page_writes": "off",
        "shared_buffers": "'256MB'",
        "max_wal_size": "'8GB'",
        "checkpoint_timeout": "'30min'",
        "autovacuum": "off",
        "max_connections": "50",
        "log_min_messages": "'warning'",
        # wal2json spills a big transaction to disk past this, for every contender alike.
        "logical_decoding_work_mem": "'64MB'",
    }

    def __init__(self, workdir):
        self.bindir = pg_bindir()
        self.dir = os.path.join(workdir, "pg")
        os.makedirs(self.dir)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, user=self.user)
            os.chmod(workdir, 0o755)
        self.db = "bench"
        self.run_as([self.bin("initdb"), "-D", self.data, "-U", "postgres", "-A", "trust",
                     "-E", "UTF8", "--locale=C", "--no-sync"])
        settings = dict(self.SETTINGS)
        described = self.run_as([self.bin("postgres"), "--describe-config"]).stdout
        # Newer minor releases (Debian's 15.20) load only the output plugins listed here.
        if any(l.split("\t", 1)[0] == "output_plugin_libraries" for l in described.splitlines()):
            settings["output_plugin_libraries"] = "'pgoutput, test_decoding, wal2json'"
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# --- pgcdc bench ---\nport = %d\nunix_socket_directories = '%s'\n"
                    % (self.port, self.dir))
            for k, v in settings.items():
                f.write("%s = %s\n" % (k, v))
        self.run_as([self.bin("pg_ctl"), "-D", self.data, "-l", os.path.join(self.dir, "log"),
                     "-w", "start"])
        self.psql("CREATE DATABASE bench", db="postgres")

    def bin(self, name):
        return os.path.join(self.bindir, name)

    def run_as(self, args, check=True, **kw):
        full = (["runuser", "-u", self.user, "--"] if self.user else []) + args
        r = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           stdin=subprocess.DEVNULL, cwd=self.dir, **kw)
        if check and r.returncode != 0:
            sys.exit("bench: %s failed:\n%s" % (" ".join(args), r.stdout))
        return r

    def psql(self, sql, db=None):
        r = subprocess.run([self.bin("psql"), "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", self.dir,
                            "-p", str(self.port), "-U", "postgres", "-d", db or self.db, "-c", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError("psql: %s\n%s" % (sql[:200], r.stderr))
        return r.stdout.strip()

    def dsn(self):
        return "host=127.0.0.1 port=%d dbname=%s user=postgres" % (self.port, self.db)

    def pgbench(self, args):
        r = subprocess.run([self.bin("pgbench"), "-h", self.dir, "-p", str(self.port),
                            "-U", "postgres"] + args + [self.db],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError("pgbench failed:\n" + r.stdout)
        return r.stdout

    def postmaster_pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def versions(self):
        v = {"postgresql": self.psql("SHOW server_version")}
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}",
                                  "postgresql-%s-wal2json" % v["postgresql"].split(".")[0]],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            v["wal2json"] = out.stdout.strip() or "?"
        except OSError:
            v["wal2json"] = "?"
        return v

    def numeric_strings(self):
        """Whether this wal2json has numeric-data-types-as-string (2.6+); pgcdc uses it when
        it can, so pg_recvlogical must too. Asked once on an empty slot."""
        self.psql("SELECT pg_create_logical_replication_slot('bench_probe', 'wal2json')")
        try:
            self.psql("SELECT count(*) FROM pg_logical_slot_peek_changes('bench_probe', NULL, "
                      "NULL, 'numeric-data-types-as-string', '1')")
            return True
        except RuntimeError:
            return False
        finally:
            self.psql("SELECT pg_drop_replication_slot('bench_probe')")

    def slot_copies(self, base, names):
        self.psql("SELECT pg_create_logical_replication_slot('%s', 'wal2json')" % base)
        for n in names:
            self.psql("SELECT pg_copy_logical_replication_slot('%s', '%s')" % (base, n))

    def current_lsn(self):
        return self.psql("SELECT pg_current_wal_lsn()")

    def stop(self):
        self.run_as([self.bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"],
                    check=False)


# --------------------------------------------------------------------------------------
# Contenders

class Bench:
    def __init__(self, build, workdir):
        self.build = build
        self.work = workdir
        self.pgcdc = os.environ.get("BENCH_PGCDC") or os.path.join(build, "pgcdc")
        self.mock = os.path.join(build, "tests", "kafka_mock_cluster")
        self.bench_decode = os.path.join(build, "tests", "bench_decode")
        self.scale = env_float("BENCH_SCALE", 1.0)
        self.kafka_opts = os.environ.get("BENCH_KAFKA_OPTS", "").split()
        self.results = {}
        self.pg = None
        self.numstr = False
        self.seq = 0

    def n(self, full, env=None):
        if env and os.environ.get(env):
            return int(float(os.environ[env]))
        return max(1, int(full * self.scale))

    def start_server(self):
        self.pg = Server(self.work)
        self.numstr = self.pg.numeric_strings()
        self.results["versions"] = self.pg.versions()

    def dir(self, name):
        self.seq += 1
        d = os.path.join(self.work, "%02d-%s" % (self.seq, name))
        os.makedirs(d)
        return d

    def run_drain(self, what, args, d):
        """Run a contender to its end LSN; its Proc (wall, CPU, RSS) and the walsender's CPU
        meanwhile. Output and errors go to d/log, which a failure quotes."""
        log_path = os.path.join(d, "log")
        ws = WalsenderCpu(self.pg.postmaster_pid())
        p = Proc(args, log_path)
        rc = p.wait(3600)
        wcpu = ws.finish()
        if rc != 0:
            raise RuntimeError("%s exited %d: %s" % (what, rc, open(log_path).read()))
        return p, wcpu

    # -- pg_recvlogical: the reference
    def run_recvlogical(self, slot, endpos):
        d = self.dir("recvlogical-" + slot)
        out = os.path.join(d, "changes.json")
        args = [self.pg.bin("pg_recvlogical"), "-d", self.pg.dsn(), "-S", slot, "--start",
                "--no-loop", "-E", endpos, "-f", out]
        opts = PLUGIN_OPTIONS + ([("numeric-data-types-as-string", "1")] if self.numstr else [])
        for k, v in opts:
            args += ["-o", "%s=%s" % (k, v)]
        p, wcpu = self.run_drain("pg_recvlogical", args, d)
        changes = 0
        with open(out, "rb") as f:
            for line in f:
                if line.startswith(b'{"action":"') and line[11:12] in b"IUDT":
                    changes += 1
        return {"wall": p.wall, "cpu": p.cpu(), "rss_mb": p.rss_mb(), "changes": changes,
                "walsender_cpu": wcpu, "runq_wait": p.runq_wait(), "output": out}

    def pgcdc_args(self, slot, d, sink, extra=(), binary=None):
        args = [binary or self.pgcdc, "run", "-o", "source.dsn=" + self.pg.dsn(), "-o", "source.slot=" + slot,
                "-o", "snapshot.mode=never", "-o", "state.dir=" + os.path.join(d, "state"),
                "-o", "log.level=warn", "-o", "sink.type=" + sink]
        if sink == "file":
            args += ["-o", "sink.file.dir=" + os.path.join(d, "segments")]
        for kv in extra:
            args += ["-o", kv]
        return args

    def count_segment_events(self, segdir):
        n = 0
        for name in os.listdir(segdir):
            if ".jsonl" in name:
                with open(os.path.join(segdir, name), "rb") as f:
                    for _ in f:
                        n += 1
        return n

    def run_pgcdc_file(self, slot, endpos, binary=None, wrap=()):
        d = self.dir("file-" + slot)
        args = list(wrap) + self.pgcdc_args(slot, d, "file", ["source.create_slot=false"],
                                            binary) + ["--end-lsn", endpos]
        p, wcpu = self.run_drain("pgcdc (file)", args, d)
        return {"wall": p.wall, "cpu": p.cpu(), "rss_mb": p.rss_mb(), "walsender_cpu": wcpu,
                "runq_wait": p.runq_wait(),
                "events": self.count_segment_events(os.path.join(d, "segments"))}

    def start_mock(self, d):
        p = Proc([self.mock, "1"], os.path.join(d, "mock.log"), stdin=subprocess.PIPE,
                 stdout=subprocess.PIPE, measure=False)
        line = p.p.stdout.readline().decode()
        if not line.startswith("BOOTSTRAP "):
            raise RuntimeError("kafka_mock_cluster did not start: %r" % line)
        return p, line.split()[1]

    def mock_cmd(self, mock, cmd):
        mock.p.stdin.write((cmd + "\n").encode())
        mock.p.stdin.flush()
        ans = mock.p.stdout.readline().decode().strip()
        if ans != "OK":
            raise RuntimeError("kafka_mock_cluster %s: %s" % (cmd, ans))

    def stop_mock(self, mock):
        try:
            mock.p.stdin.close()
        except OSError:
            pass
        mock.wait(30)

    def kafka_extra(self, bootstrap):
        return ["kafka.bootstrap.servers=" + bootstrap] + ["kafka." + kv for kv in self.kafka_opts]

    def run_pgcdc_kafka(self, slot, endpos, binary=None, wrap=()):
        d = self.dir("kafka-" + slot)
        mock, bootstrap = self.start_mock(d)
        try:
            args = list(wrap) + self.pgcdc_args(slot, d, "kafka", ["source.create_slot=false"] +
                                                self.kafka_extra(bootstrap), binary) + \
                ["--end-lsn", endpos]
            p, wcpu = self.run_drain("pgcdc (kafka)", args, d)
        finally:
            self.stop_mock(mock)
        return {"wall": p.wall, "cpu": p.cpu(), "rss_mb": p.rss_mb(), "walsender_cpu": wcpu,
                "runq_wait": p.runq_wait(), "mock_cpu": mock.cpu()}

    # A receiver for the HTTP contender: answers 200 at once, counts the events of each
    # batch from its pgcdc-idempotency-key (the count is its last field: no JSON parsing),
    # and reports the total on GET /count. Its own process, so it never competes with
    # this script for the GIL.
    RECEIVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
total = [0]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        while n > 0:
            n -= len(self.rfile.read(min(n, 1 << 20)))
        total[0] += int(self.headers.get("pgcdc-idempotency-key", "-0").rsplit("-", 1)[1])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        b = str(total[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print("PORT %d" % s.server_address[1], flush=True)
s.serve_forever()
"""

    def run_pgcdc_http(self, slot, endpos, binary=None, wrap=()):
        d = self.dir("http-" + slot)
        recv = Proc([sys.executable, "-c", self.RECEIVER], os.path.join(d, "receiver.log"),
                    stdout=subprocess.PIPE, measure=False)
        try:
            line = recv.p.stdout.readline().decode()
            if not line.startswith("PORT "):
                raise RuntimeError("the HTTP receiver did not start: %r" % line)
            url = "http://127.0.0.1:%s/hook" % line.split()[1]
            args = list(wrap) + self.pgcdc_args(slot, d, "http", ["source.create_slot=false",
                                                "sink.http.url=" + url], binary) + \
                ["--end-lsn", endpos]
            p, wcpu = self.run_drain("pgcdc (http)", args, d)
            with urllib.request.urlopen(url.replace("/hook", "/count"), timeout=10) as r:
                events = int(r.read())
        finally:
            recv.kill()
        return {"wall": p.wall, "cpu": p.cpu(), "rss_mb": p.rss_mb(), "walsender_cpu": wcpu,
                "runq_wait": p.runq_wait(), "mock_cpu": recv.cpu(), "events": events}

    def s3rver_bin(self):
        b = os.path.join(ROOT, "tests", "s3", "node_modules", ".bin", "s3rver")
        return b if os.path.exists(b) else None

    def run_pgcdc_s3(self, slot, endpos, binary=None, wrap=()):
        """The S3 sink into s3rver (tests/s3, from npm) on 127.0.0.1, default flush settings;
        the events are counted from s3rver's own files."""
        d = self.dir("s3-" + slot)
        port = free_port()
        srv = Proc([self.s3rver_bin(), "-d", os.path.join(d, "s3"), "-a", "127.0.0.1", "-p",
                    str(port), "--configure-bucket", "bench"], os.path.join(d, "s3rver.log"),
                   measure=False)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("s3rver did not start")
                    time.sleep(0.1)
            extra = ["source.create_slot=false", "sink.s3.url=s3://bench/cdc",
                     "sink.s3.endpoint=http://127.0.0.1:%d" % port, "sink.s3.path_style=true",
                     "sink.s3.access_key_id=S3RVER", "sink.s3.secret_access_key=S3RVER"]
            args = list(wrap) + self.pgcdc_args(slot, d, "s3", extra, binary) + ["--end-lsn", endpos]
            p, wcpu = self.run_drain("pgcdc (s3)", args, d)
        finally:
            srv.kill()
        events = 0
        for root, _, files in os.walk(os.path.join(d, "s3", "bench", "cdc")):
            for f in files:
                if f.endswith(".jsonl.gz._S3rver_object"):
                    with gzip.open(os.path.join(root, f), "rb") as g:
                        events += sum(1 for _ in g)
        return {"wall": p.wall, "cpu": p.cpu(), "rss_mb": p.rss_mb(), "walsender_cpu": wcpu,
                "runq_wait": p.runq_wait(), "events": events}

    # ----------------------------------------------------------------------------------
    def mode_throughput(self):
        ins, upd = self.n(500000), self.n(100000)
        dele, pgb = self.n(50000), self.n(20000)
        rounds = int(env_float("BENCH_ROUNDS", 3))
        log("throughput: %d-row INSERT, %d-row UPDATE, %d-row DELETE, %d pgbench "
            "transactions; %d round(s)" % (ins, upd, dele, pgb, rounds))
        pg = self.pg
        pg.psql("CREATE TABLE bench (id bigint PRIMARY KEY, account int NOT NULL, "
                "amount numeric(12,2), status text, note text, created timestamptz, flag boolean)")
        pg.pgbench(["-i", "-q", "-s", "1"])
        contenders = ["recvlogical", "file", "kafka", "http"]
        if self.s3rver_bin():
            contenders.append("s3")
        else:
            log("tests/s3/node_modules has no s3rver: the S3 sink is not measured "
                "(cd tests/s3 && npm install --no-audit --no-fund)")
        other = os.environ.get("BENCH_COMPARE")  # another pgcdc binary, on the same changes
        if other:
            contenders += ["file_b", "kafka_b"]
        slots = ["tp_%s_%d" % (c, r) for r in range(rounds) for c in contenders]
        pg.slot_copies("tp_base", slots)
        t0 = time.monotonic()
        pg.psql("INSERT INTO bench SELECT g, g %% 10000, (g %% 100000) / 100.0 + 0.57, 'active', "
                "'row ' || g || ' of the benchmark workload', now() - g * interval '1 ms', "
                "g %% 2 = 0 FROM generate_series(1, %d) g" % ins)
        pg.psql("UPDATE bench SET amount = amount + 1, status = 'updated', flag = NOT flag "
                "WHERE id <= %d" % upd)
        pg.psql("DELETE FROM bench WHERE id > %d" % (ins - dele))
        pg.pgbench(["-n", "-c", "2", "-j", "2", "-t", str(max(1, pgb // 2))])
        endpos = pg.current_lsn()
        log("workload written in %.1fs, end LSN %s" % (time.monotonic() - t0, endpos))
        pg.psql("DROP TABLE bench")  # after endpos: not part of the stream read

        runs = {c: [] for c in contenders}
        for r in range(rounds):
            k = r % len(contenders)
            order = contenders[k:] + contenders[:k]
            for c in order:
                slot = "tp_%s_%d" % (c, r)
                log("throughput round %d: %s" % (r + 1, c))
                if c == "recvlogical":
                    res = self.run_recvlogical(slot, endpos)
                    self.reference_output = res.pop("output")
                elif c.startswith("file"):
                    res = self.run_pgcdc_file(slot, endpos, other if c.endswith("_b") else None)
                elif c == "http":
                    res = self.run_pgcdc_http(slot, endpos)
                elif c == "s3":
                    res = self.run_pgcdc_s3(slot, endpos)
                else:
                    res = self.run_pgcdc_kafka(slot, endpos, other if c.endswith("_b") else None)
                runs[c].append(res)
                pg.psql("SELECT pg_drop_replication_slot('%s')" % slot)
        pg.psql("SELECT pg_drop_replication_slot('tp_base')")

        changes = runs["recvlogical"][0]["changes"]
        for r in runs["file"] + runs.get("file_b", []) + runs["http"] + runs.get("s3", []):
            if r["events"] != changes:
                raise RuntimeError("a pgcdc sink delivered %d events, pg_recvlogical saw %d changes"
                                   % (r["events"], changes))
        # Best round of each (the least disturbed by other load on the machine).
        best = {c: min(runs[c], key=lambda x: x["wall"]) for c in contenders}
        ref = changes / best["recvlogical"]["wall"]
        table = []
        labels = [("recvlogical", "pg_recvlogical (reference)"), ("file", "pgcdc file sink"),
                  ("kafka", "pgcdc Kafka sink (mock cluster)"),
                  ("http", "pgcdc HTTP sink (local receiver)")]
        if other:
            labels += [("file_b", "B: file sink (BENCH_COMPARE)"),
                       ("kafka_b", "B: Kafka sink (BENCH_COMPARE)")]
        if "s3" in best:
            labels.append(("s3", "pgcdc S3 sink (s3rver, gzip)"))
        for c, label in labels:
            b = best[c]
            rate = changes / b["wall"]
            table.append({"contender": label, "key": c, "changes": changes, "seconds": b["wall"],
                          "changes_per_s": rate, "ratio": rate / ref, "cpu_s": b["cpu"],
                          "walsender_cpu_s": b["walsender_cpu"], "rss_mb": b["rss_mb"],
                          "runq_wait_s": b["runq_wait"],
                          "mock_cpu_s": b.get("mock_cpu"), "all_seconds": [x["wall"] for x in runs[c]]})
        self.results["throughput"] = {"sizes": {"insert": ins, "update": upd, "delete": dele,
                                                "pgbench_tx": pgb}, "rounds": rounds,
                                      "contenders": table}
        print()
        print("== throughput: %d changes (%d-row INSERT, %d UPDATE, %d DELETE, %d pgbench tx), "
              "best of %d" % (changes, ins, upd, dele, pgb, rounds))
        print("%-34s %8s %10s %6s %7s %8s %9s %9s %9s" % ("contender", "seconds", "changes/s",
                                                           "ratio", "cpu s", "rq wait",
                                                           "wsnd cpu", "peak RSS", "median s"))
        for t in table:
            print("%-34s %8.2f %10.0f %5.2fx %7.2f %8.2f %9.2f %6.1f MB %9.2f" % (
                t["contender"], t["seconds"], t["changes_per_s"], t["ratio"], t["cpu_s"],
                t["runq_wait_s"], t["walsender_cpu_s"], t["rss_mb"],
                statistics.median(t["all_seconds"])))
        print("  (cpu s: the client's user+sys; rq wait: its threads runnable but waiting for a "
              "CPU;\n   wsnd cpu: the server's walsender, which decodes; all runs read the same "
              "changes;\n   median s: of all rounds, the check on a best round that was luck)")
        for t in table:
            if t["key"] == "kafka" and t["mock_cpu_s"] is not None:
                print("  (mock cluster process, same machine: %.2f cpu s)" % t["mock_cpu_s"])
        self.target("file >= %.1fx pg_recvlogical" % TARGETS["file_ratio"], table[1]["ratio"] >=
                    TARGETS["file_ratio"], "%.2fx" % table[1]["ratio"])
        self.target("kafka >= %.1fx pg_recvlogical" % TARGETS["kafka_ratio"], table[2]["ratio"] >=
                    TARGETS["kafka_ratio"], "%.2fx" % table[2]["ratio"])
        http = [t for t in table if t["key"] == "http"][0]
        http_vs_file = http["changes_per_s"] / table[1]["changes_per_s"]
        http["vs_file"] = http_vs_file
        self.target("http >= %.1fx the file sink" % TARGETS["http_vs_file"],
                    http_vs_file >= TARGETS["http_vs_file"], "%.2fx" % http_vs_file)
        s3row = [t for t in table if t["key"] == "s3"]
        if s3row:
            r = s3row[0]["changes_per_s"] / table[1]["changes_per_s"]
            self.results["throughput"]["s3_vs_file"] = r
            self.target("s3 >= 0.7x the file sink", r >= 0.7, "%.2fx" % r)
            self.target("RSS <= 64 MB (throughput, s3)", s3row[0]["rss_mb"] <= 64,
                        "%.1f MB" % s3row[0]["rss_mb"])
        for t in table[1:3] + [http]:
            self.target("RSS <= %d MB (throughput, %s)" % (TARGETS["rss_mb"], t["key"]),
                        t["rss_mb"] <= TARGETS["rss_mb"], "%.1f MB" % t["rss_mb"])

    # ----------------------------------------------------------------------------------
    def mode_latency(self):
        secs = int(env_float("BENCH_LAT_SECONDS", max(5.0, 60 * self.scale)))
        rate = int(env_float("BENCH_LAT_RATE", 1000))
        pg = self.pg
        pg.psql("CREATE TABLE IF NOT EXISTS bench_lat (id bigserial PRIMARY KEY, v int, "
                "note text, created timestamptz DEFAULT now())")
        script = os.path.join(self.work, "latency.sql")
        with open(script, "w") as f:
            f.write("\\set v random(1, 1000000)\n"
                    "INSERT INTO bench_lat (v, note) VALUES (:v, 'latency probe');\n")
        os.chmod(script, 0o644)
        out = {}
        other = os.environ.get("BENCH_COMPARE")
        stress = os.environ.get("BENCH_DISK_STRESS") == "1"
        for sink in os.environ.get("BENCH_LAT_SINKS", "file kafka").split():
            runs = [(sink, None)] + ([(sink + "_b", other)] if other else [])
            for label, binary in runs:
                log("latency: %s, %d tx/s for %ds%s" % (label, rate, secs,
                                                        ", disk stress" if stress else ""))
                out[label] = self.latency_run(sink, rate, secs, script, binary, label, stress)
        self.results["latency"] = {"rate": rate, "seconds": secs, "sinks": out,
                                   "disk_stress": stress}
        print()
        print("== latency: pgbench -R %d for %ds, one INSERT per transaction; "
              "commit (source.ts_ms) -> durable%s" % (
                  rate, secs, "; disk stress (64 MiB + fsync in a loop)" if stress else ""))
        print("%-12s %8s %9s %8s %8s %8s %8s %9s %9s" % ("sink", "events", "tx/s", "p50 ms",
                                                        "p99 ms", "max ms", "cpu s", "peak RSS",
                                                        "cpu/s"))
        for sink, r in out.items():
            print("%-12s %8d %9.0f %8.1f %8.1f %8.1f %8.2f %6.1f MB %8.1f%%" % (
                sink, r["events"], r["tps"], r["p50"], r["p99"], r["max"], r["cpu_s"], r["rss_mb"],
                100.0 * r["cpu_s"] / r["seconds"]))
            f = r.get("disk_floor")
            if f:
                print("%-12s %8d %9s %8.1f %8.1f %8.1f   (bare append+fdatasync group commit "
                      "beside it; %.1f s in fdatasyncs over 100 ms)" % (
                          "  disk floor", f["events"], "", f["p50"], f["p99"], f["max"],
                          f["slow_sync_s"]))
        for sink, r in out.items():
            f = r.get("disk_floor")
            self.target("p99 <= %d ms at %d tx/s (%s)" % (TARGETS["p99_ms"], rate, sink),
                        r["p99"] <= TARGETS["p99_ms"], "%.1f ms%s" % (
                            r["p99"], "; the disk's own floor: p99 %.1f ms" % f["p99"] if f
                            else ""))
            self.target("RSS <= %d MB (latency, %s)" % (TARGETS["rss_mb"], sink),
                        r["rss_mb"] <= TARGETS["rss_mb"], "%.1f MB" % r["rss_mb"])

    def latency_run(self, sink, rate, secs, script, binary=None, label=None, stress=False):
        pg = self.pg
        label = label or sink
        d = self.dir("latency-" + label)
        slot = "lat_" + label
        lat = []  # ms from commit to durable, one per event
        stop = threading.Event()
        mock = kcat = None
        extra = []
        if sink == "kafka":
            mock, bootstrap = self.start_mock(d)
            self.mock_cmd(mock, "topic pgcdc.public.bench_lat 4 1")
            extra = self.kafka_extra(bootstrap)
        p = Proc(self.pgcdc_args(slot, d, sink, extra, binary), os.path.join(d, "log"))
        stressor = floor = None
        if stress:
            stressor = subprocess.Popen(
                ["bash", "-c", "while :; do dd if=/dev/zero of=%s bs=1M count=64 conv=fsync "
                 "status=none; done" % os.path.join(d, "stress.bin")], start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while pg.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' "
                          "AND active" % slot) != "1":
                if p.p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("pgcdc (%s) did not start streaming: %s" % (
                        sink, open(os.path.join(d, "log")).read()))
                time.sleep(0.1)
            if sink == "file":
                watcher = threading.Thread(target=self.watch_file, args=(
                    os.path.join(d, "segments"), lat, stop), daemon=True)
            else:
                kcat = subprocess.Popen(
                    ["kcat", "-C", "-b", bootstrap, "-t", "pgcdc.public.bench_lat", "-o", "end",
                     "-u", "-q", "-f", "%s\\n", "-X", "fetch.wait.max.ms=5",
                     "-X", "fetch.error.backoff.ms=5"],
                    stdout=subprocess.PIPE, stderr=open(os.path.join(d, "kcat.log"), "wb"))
                watcher = threading.Thread(target=self.watch_kcat, args=(kcat, lat, stop),
                                           daemon=True)
                time.sleep(2)  # kcat has joined every partition at "end"
            watcher.start()
            if sink == "file":
                # The disk's own floor, in the same minute: see bench_disk_floor.py.
                floor = subprocess.Popen(
                    [sys.executable, os.path.join(ROOT, "scripts", "bench_disk_floor.py"),
                     os.path.join(d, "floor.dat"), str(secs), str(rate)],
                    stdout=subprocess.PIPE, text=True)
            t0 = time.monotonic()
            out = pg.pgbench(["-n", "-c", "4", "-j", "2", "-R", str(rate), "-T", str(secs),
                              "-f", script])
            elapsed = time.monotonic() - t0
            floor_res = json.loads(floor.communicate(timeout=120)[0]) if floor else None
            m = re.search(r"number of transactions actually processed: (\d+)", out)
            ntx = int(m.group(1)) if m else 0
            deadline = time.monotonic() + 60
            while len(lat) < ntx and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            watcher.join(5)
            p.signal(signal.SIGTERM)
            p.wait(30)
        finally:
            p.kill()
            if floor and floor.poll() is None:
                floor.kill()
                floor.wait()
            if stressor:
                os.killpg(stressor.pid, signal.SIGKILL)
                stressor.wait()
                try:
                    os.unlink(os.path.join(d, "stress.bin"))
                except FileNotFoundError:
                    pass
            if kcat:
                kcat.kill()
                kcat.wait()
            if mock:
                self.stop_mock(mock)
            pg.psql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = '%s'" % slot)
        if len(lat) < ntx:
            raise RuntimeError("latency (%s): %d of %d transactions seen durable" % (
                sink, len(lat), ntx))
        with open(os.path.join(d, "latency.csv"), "w") as f:  # for BENCH_KEEP=1 digging
            f.write("".join("%.1f\n" % x for x in lat))
        lat.sort()
        q = statistics.quantiles(lat, n=100, method="inclusive")
        return {"events": len(lat), "tps": ntx / elapsed, "p50": q[49], "p99": q[98],
                "max": lat[-1], "mean": statistics.fmean(lat), "cpu_s": p.cpu(),
                "rss_mb": p.rss_mb(), "seconds": p.wall, "disk_floor": floor_res}

    TS_RE = re.compile(rb'"commit_lsn":\d+,"ts_ms":(-?\d+)')

    def watch_file(self, segdir, lat, stop):
        """Follow .pgcdc-position (replaced after each fdatasync + checkpoint): the events up
        to its offset became durable no later than the moment we see it change."""
        pos_path = os.path.join(segdir, ".pgcdc-position")
        last_stat = None
        cur_seg, cur_off = None, 0  # the open segment being followed, bytes consumed
        pending = b""
        while not stop.is_set():
            try:
                st = os.stat(pos_path)
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                key = None
            if key is None or key == last_stat:
                time.sleep(0.001)
                continue
            last_stat = key
            now_ms = time.time() * 1000.0
            try:
                with open(pos_path) as f:
                    kv = dict(l.split("=", 1) for l in f.read().splitlines()
                              if "=" in l and not l.startswith("#"))
            except OSError:
                continue
            seg, off = kv.get("segment", ""), int(kv.get("offset", "0") or 0)
            chunks = []
            if cur_seg and seg != cur_seg:
                # Rotated: the rest of the old segment is durable (it was closed after sync).
                closed = os.path.join(segdir, cur_seg[:-len(".open")])
                with open(closed, "rb") as f:
                    f.seek(cur_off)
                    chunks.append(f.read())
                for name in sorted(os.listdir(segdir)):  # whole segments closed in between
                    if name.endswith(".jsonl") and name > cur_seg[:-len(".open")] and \
                            (not seg or name < seg):
                        with open(os.path.join(segdir, name), "rb") as f:
                            chunks.append(f.read())
                cur_seg, cur_off = None, 0
            if seg:
                if cur_seg is None:
                    cur_seg, cur_off = seg, 0
                if off > cur_off:
                    with open(os.path.join(segdir, seg), "rb") as f:
                        f.seek(cur_off)
                        chunks.append(f.read(off - cur_off))
                    cur_off = off
            data = pending + b"".join(chunks)
            nl = data.rfind(b"\n")
            pending = data[nl + 1:]
            for m in self.TS_RE.finditer(data, 0, nl + 1):
                lat.append(now_ms - int(m.group(1)))

    def watch_kcat(self, kcat, lat, stop):
        for line in kcat.stdout:
            now_ms = time.time() * 1000.0
            m = self.TS_RE.search(line)
            if m:
                lat.append(now_ms - int(m.group(1)))
            if stop.is_set():
                break

    # ----------------------------------------------------------------------------------
    def mode_bigtxn(self):
        rows = self.n(1000000, "BENCH_BIG_ROWS")
        pg = self.pg
        log("bigtxn: one transaction updating %d rows" % rows)
        pg.psql("CREATE TABLE bench_big (id int PRIMARY KEY, v int NOT NULL, note text)")
        pg.psql("INSERT INTO bench_big SELECT g, g, 'big transaction row ' || g "
                "FROM generate_series(1, %d) g" % rows)
        pg.slot_copies("big_base", ["big_recvlogical", "big_file", "big_kafka"])
        pg.psql("UPDATE bench_big SET v = v + 1")
        endpos = pg.current_lsn()
        res = {}
        log("bigtxn: pg_recvlogical")
        res["recvlogical"] = self.run_recvlogical("big_recvlogical", endpos)
        res["recvlogical"].pop("output")
        log("bigtxn: pgcdc file")
        res["file"] = self.run_pgcdc_file("big_file", endpos)
        log("bigtxn: pgcdc kafka")
        res["kafka"] = self.run_pgcdc_kafka("big_kafka", endpos)
        for s in ("big_base", "big_recvlogical", "big_file", "big_kafka"):
            pg.psql("SELECT pg_drop_replication_slot('%s')" % s)
        pg.psql("DROP TABLE bench_big")
        self.results["bigtxn"] = {"rows": rows, "contenders": res}
        print()
        print("== big transaction: one UPDATE of %d rows" % rows)
        print("%-34s %9s %11s %9s %9s" % ("contender", "seconds", "changes/s", "cpu s", "peak RSS"))
        for k, label in (("recvlogical", "pg_recvlogical"), ("file", "pgcdc file sink"),
                         ("kafka", "pgcdc Kafka sink")):
            r = res[k]
            print("%-34s %9.2f %11.0f %9.2f %6.1f MB" % (label, r["wall"], rows / r["wall"],
                                                        r["cpu"], r["rss_mb"]))
        for k in ("file", "kafka"):
            self.target("RSS <= %d MB (big transaction, %s)" % (TARGETS["rss_mb"], k),
                        res[k]["rss_mb"] <= TARGETS["rss_mb"], "%.1f MB" % res[k]["rss_mb"])

    # ----------------------------------------------------------------------------------
    def mode_decode(self):
        if not shutil.which("valgrind"):
            print("\n== decode+encode: valgrind not installed (apt-get install valgrind); skipped")
            return
        corpora = [("generated", "generated", 2000), ("fixtures", "fixtures", 3)]
        ref = getattr(self, "reference_output", None)
        if ref and os.path.exists(ref):
            # A sample of the throughput workload as pg_recvlogical received it.
            sample = os.path.join(self.work, "workload-sample.json")
            with open(ref, "rb") as fin, open(sample, "wb") as fout:
                lines = [l for l in fin if l[11:12] in b"IUDT"]
                step = max(1, len(lines) // 20000)
                fout.writelines(lines[::step])
            corpora.append(("workload sample", sample, 1))
        out = {}
        for label, corpus, iters in corpora:
            cg = os.path.join(self.work, "callgrind.%s.out" % label.split()[0])
            r = subprocess.run(["valgrind", "--tool=callgrind", "--toggle-collect=bench_pass",
                                "--callgrind-out-file=" + cg, self.bench_decode, "--corpus",
                                corpus, "-n", str(iters)], cwd=os.path.join(ROOT, "tests"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise RuntimeError("bench_decode under callgrind failed:\n" + r.stderr[-2000:])
            changes = int(re.search(r"^changes (\d+)", r.stdout, re.M).group(1))
            nbytes = int(re.search(r"^bytes (\d+)", r.stdout, re.M).group(1))
            ir = callgrind_total(cg)
            out[label] = {"changes": changes, "instructions": ir, "per_change": ir / changes,
                          "bytes_per_change": nbytes / changes}
        self.results["decode"] = out
        print()
        print("== decode+encode (bench_decode under callgrind; pgcdc_decode + "
              "pgcdc_event_encode + pgcdc_event_key)")
        print("%-18s %9s %16s %18s" % ("corpus", "changes", "instructions", "instr/change"))
        for label, r in out.items():
            print("%-18s %9d %16d %12.0f (%.0f B in)" % (label, r["changes"], r["instructions"],
                                                         r["per_change"], r["bytes_per_change"]))

    # ----------------------------------------------------------------------------------
    def mode_wholerun(self):
        if not shutil.which("valgrind"):
            print("\n== whole run: valgrind not installed (apt-get install valgrind); skipped")
            return
        ins = self.n(20000, "BENCH_WHOLE_ROWS")
        upd, dele = ins // 2, ins // 4
        changes = ins + upd + dele
        pg = self.pg
        contenders = [("file", None), ("kafka", None)]
        other = os.environ.get("BENCH_COMPARE")
        if other:
            contenders += [("file_b", other), ("kafka_b", other)]
        log("wholerun: %d changes under callgrind, %s" % (
            changes, " ".join(c for c, _ in contenders)))
        pg.psql("CREATE TABLE bench_whole (id bigint PRIMARY KEY, account int NOT NULL, "
                "amount numeric(12,2), status text, note text, created timestamptz, "
                "flag boolean)")
        pg.slot_copies("whole_base", ["whole_" + c for c, _ in contenders])
        pg.psql("INSERT INTO bench_whole SELECT g, g %% 10000, (g %% 100000) / 100.0 + 0.57, "
                "'active', 'row ' || g || ' of the benchmark workload', "
                "now() - g * interval '1 ms', g %% 2 = 0 FROM generate_series(1, %d) g" % ins)
        pg.psql("UPDATE bench_whole SET amount = amount + 1, status = 'updated', "
                "flag = NOT flag WHERE id <= %d" % upd)
        pg.psql("DELETE FROM bench_whole WHERE id > %d" % (ins - dele))
        endpos = pg.current_lsn()
        out = {}
        for label, binary in contenders:
            cg = os.path.join(self.work, "callgrind.whole_%s.out" % label)
            wrap = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + cg]
            run = self.run_pgcdc_file if label.startswith("file") else self.run_pgcdc_kafka
            r = run("whole_" + label, endpos, binary, wrap)
            if label.startswith("file") and r["events"] != changes:
                raise RuntimeError("wholerun: the file sink wrote %d events of %d changes" % (
                    r["events"], changes))
            ir = callgrind_total(cg)
            out[label] = {"changes": changes, "instructions": ir, "per_change": ir / changes,
                          "cpu_s": r["cpu"]}
            pg.psql("SELECT pg_drop_replication_slot('whole_%s')" % label)
        pg.psql("SELECT pg_drop_replication_slot('whole_base')")
        pg.psql("DROP TABLE bench_whole")
        self.results["wholerun"] = out
        print()
        print("== whole run under callgrind: pgcdc run --end-lsn on %d changes "
              "(all threads)" % changes)
        print("%-18s %16s %14s" % ("contender", "instructions", "instr/change"))
        for label, r in out.items():
            print("%-18s %16d %14.0f" % (label, r["instructions"], r["per_change"]))

    # ----------------------------------------------------------------------------------
    def snapshot_pgcdc(self, table, segdir, workers=None):
        """One `pgcdc run` with snapshot.mode = initial_only of `table` into segdir."""
        d = self.dir("snapshot")
        slot = "snap_%d" % self.seq
        args = [self.pgcdc, "run", "-o", "source.dsn=" + self.pg.dsn(), "-o",
                "source.slot=" + slot, "-o", "snapshot.mode=initial_only", "-o",
                "source.tables.include=public." + table, "-o",
                "state.dir=" + os.path.join(d, "state"), "-o", "log.level=warn", "-o",
                "sink.file.dir=" + segdir]
        if workers is not None:  # the one table in ranges, so that workers can share it
            args += ["-o", "snapshot.workers=%d" % workers, "-o", "snapshot.chunk_pages=%d" %
                     int(os.environ.get("BENCH_SNAP_CHUNK_PAGES", "4096"))]
        try:
            p, wcpu = self.run_drain("pgcdc snapshot", args, d)
            events = self.count_segment_events(segdir)
        finally:
            shutil.rmtree(segdir, ignore_errors=True)
        return {"wall": p.wall, "cpu": p.cpu(), "rss_mb": p.rss_mb(), "events": events,
                "runq_wait": p.runq_wait()}

    def snapshot_copy(self, table):
        """psql's \\copy of the whole table to /dev/null: the reference."""
        d = self.dir("copy")
        p = Proc([self.pg.bin("psql"), "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", self.pg.dir,
                  "-p", str(self.pg.port), "-U", "postgres", "-d", self.pg.db, "-c",
                  "\\copy %s to '/dev/null'" % table], os.path.join(d, "log"))
        if p.wait(3600) != 0:
            raise RuntimeError("psql \\copy failed: " + open(os.path.join(d, "log")).read())
        return {"wall": p.wall, "cpu": p.cpu(), "rss_mb": p.rss_mb()}

    def mode_snapshot(self):
        rows = self.n(2000000, "BENCH_SNAP_ROWS")
        rounds = int(env_float("BENCH_ROUNDS", 3))
        workers = [int(w) for w in os.environ.get("BENCH_SNAP_WORKERS", "").split()]
        pg = self.pg
        table = "bench_snap"
        log("snapshot: %d rows, %d round(s), workers %s" % (rows, rounds, workers))
        pg.psql("CREATE TABLE %s (id bigint PRIMARY KEY, account int NOT NULL, "
                "amount numeric(12,2), status text, note text, created timestamptz, "
                "flag boolean)" % table)
        pg.psql("INSERT INTO %s SELECT g, g %% 10000, (g %% 100000) / 100.0 + 0.57, 'active', "
                "'row ' || g || ' of the benchmark workload', now() - g * interval '1 ms', "
                "g %% 2 = 0 FROM generate_series(1, %d) g" % (table, rows))
        pg.psql("VACUUM ANALYZE %s" % table)
        size = int(pg.psql("SELECT pg_table_size('%s')" % table))
        shm = tempfile.mkdtemp(prefix="pgcdc-bench-snap-", dir="/dev/shm")
        disk = os.path.join(self.work, "snap-disk")
        runs = {"copy": [], "tmpfs": [], "disk": []}
        for w in workers:
            runs["w%d" % w] = []
        try:
            for r in range(rounds):
                log("snapshot round %d" % (r + 1))
                # Warm the cache once per round, so neither contender pays for the first read.
                runs["copy"].append(self.snapshot_copy(table))
                runs["tmpfs"].append(self.snapshot_pgcdc(table, os.path.join(shm, "seg")))
                runs["disk"].append(self.snapshot_pgcdc(table, disk))
                if r == 0:
                    for w in workers:
                        runs["w%d" % w].append(self.snapshot_pgcdc(
                            table, os.path.join(shm, "seg"), w))
        finally:
            shutil.rmtree(shm, ignore_errors=True)
        pg.psql("DROP TABLE %s" % table)
        for k, lst in runs.items():
            for x in lst:
                if k != "copy" and x["events"] != rows:
                    raise RuntimeError("snapshot (%s): %d events for %d rows" % (
                        k, x["events"], rows))
        best = {k: min(v, key=lambda x: x["wall"]) for k, v in runs.items() if v}
        self.results["snapshot"] = {"rows": rows, "table_bytes": size, "runs": runs,
                                    "best": best}
        print()
        print("== snapshot: %d rows, %.0f MB (best of %d)" % (rows, size / 1e6, rounds))
        print("%-38s %9s %11s %7s %9s %9s" % ("contender", "seconds", "rows/s", "ratio",
                                              "cpu s", "peak RSS"))
        ref = rows / best["copy"]["wall"]
        labels = [("copy", "psql \\copy to /dev/null"), ("tmpfs", "pgcdc, sink on tmpfs"),
                  ("disk", "pgcdc, sink on disk")]
        labels += [("w%d" % w, "pgcdc tmpfs, snapshot.workers=%d" % w) for w in workers]
        for k, label in labels:
            b = best[k]
            print("%-38s %9.2f %11.0f %7.2f %9.2f %6.1f MB" % (
                label, b["wall"], rows / b["wall"], rows / b["wall"] / ref, b["cpu"],
                b["rss_mb"]))
        if workers:
            base = best["w%d" % workers[0]]["wall"]
            print("speed-up over %d worker(s): %s" % (workers[0], ", ".join(
                "%d: %.2fx" % (w, base / best["w%d" % w]["wall"]) for w in workers)))
        ratio = rows / best["tmpfs"]["wall"] / ref
        self.target("snapshot >= %.1f x psql \\copy (sink on tmpfs)" % TARGETS["snapshot_ratio"],
                    ratio >= TARGETS["snapshot_ratio"], "%.2f" % ratio)
        rss = max(x["rss_mb"] for k, v in runs.items() if k != "copy" for x in v)
        self.target("RSS <= %d MB (snapshot)" % TARGETS["rss_mb"], rss <= TARGETS["rss_mb"],
                    "%.1f MB" % rss)

    # ----------------------------------------------------------------------------------
    def target(self, what, ok, value):
        self.results.setdefault("targets", []).append({"target": what, "pass": ok, "value": value})
        print("%s %s: %s" % ("PASS" if ok else "MISS", what, value))


def callgrind_total(path):
    """The instruction total of a callgrind output file."""
    ir = None
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                ir = int(line.split()[1])
    return ir


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    rdk = "?"
    try:
        rdk = subprocess.run(["pkg-config", "--modversion", "rdkafka"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True).stdout.strip() or "?"
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "mem_mb": mem, "kernel": os.uname().release,
            "librdkafka": rdk, "loadavg": os.getloadavg()}


def main():
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--build":
        sys.exit(__doc__)
    build = os.path.abspath(args[1])
    all_modes = ["throughput", "latency", "bigtxn", "decode", "wholerun", "snapshot"]
    modes = args[2:] or all_modes
    for m in modes:
        if m not in all_modes:
            sys.exit("bench: unknown mode %s (%s)" % (m, " ".join(all_modes)))
    work = tempfile.mkdtemp(prefix="pgcdc-bench-")
    os.chmod(work, 0o755)
    b = Bench(build, work)
    b.results["machine"] = machine()
    mach = b.results["machine"]
    print("machine: %d cores, %s, %d MB RAM, kernel %s, load %.2f %.2f %.2f" % (
        mach["cores"], mach["cpu"], mach["mem_mb"], mach["kernel"], *mach["loadavg"]))
    b.results["scale"] = b.scale
    try:
        if any(m != "decode" for m in modes):
            b.start_server()
            v = b.results["versions"]
            print("PostgreSQL %s, wal2json %s, librdkafka %s, pgcdc %s, scale %g" % (
                v["postgresql"], v["wal2json"], mach["librdkafka"], b.pgcdc, b.scale))
        for m in modes:
            getattr(b, "mode_" + m)()
    finally:
        if b.pg:
            b.pg.stop()
        if os.environ.get("BENCH_KEEP"):
            log("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if os.environ.get("BENCH_JSON"):
        with open(os.environ["BENCH_JSON"], "w") as f:
            json.dump(b.results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
