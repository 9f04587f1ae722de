"""Integration-test harness for pgcdc: a throwaway PostgreSQL cluster, the pgcdc process,
the file-sink segment reader, LSN helpers and a continuous writer.

Nothing here knows pgcdc's log messages beyond the logfmt shape (`level=...`), so tests
wait on observable facts (the slot's state on the server, events in the segment files,
the process's exit) rather than on wording.

Every process started here is registered and killed by `cleanup_all()` (conftest.py calls
it at session end, and each fixture stops its own objects), so a failing test never
leaves a postgres or pgcdc behind.
"""

import atexit
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import zlib
from decimal import Decimal

import psycopg2
import psycopg2.extensions

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# --------------------------------------------------------------------------------------
# Locating tools


def pg_bindir():
    """Directory of initdb/pg_ctl/postgres: $PGCDC_PG_BIN, else the newest
    /usr/lib/postgresql/N/bin that has wal2json installed beside it."""
    env = os.environ.get("PGCDC_PG_BIN")
    if env:
        return env
    best = None
    base = "/usr/lib/postgresql"
    if os.path.isdir(base):
        for v in os.listdir(base):
            if not v.isdigit():
                continue
            if os.path.exists(os.path.join(base, v, "lib", "wal2json.so")) and os.path.exists(
                os.path.join(base, v, "bin", "initdb")
            ):
                if best is None or int(v) > int(best):
                    best = v
    if best is None:
        raise RuntimeError(
            "no PostgreSQL with wal2json found under /usr/lib/postgresql; "
            "install postgresql-15 postgresql-15-wal2json or set PGCDC_PG_BIN"
        )
    return os.path.join(base, best, "bin")


def pgcdc_bin():
    """The binary under test: $PGCDC_BIN (ctest sets it), else ../../build/pgcdc."""
    b = os.environ.get("PGCDC_BIN") or os.path.join(REPO, "build", "pgcdc")
    if not os.access(b, os.X_OK):
        raise RuntimeError("pgcdc binary not found at %s (build it, or set PGCDC_BIN)" % b)
    return b


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_root():
    return os.geteuid() == 0


# --------------------------------------------------------------------------------------
# LSN helpers


def lsn_parse(text):
    """'16/B374D848' -> int."""
    hi, lo = text.strip().split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_format(v):
    """int -> '16/B374D848' (pg_lsn_out's form)."""
    return "%X/%X" % (v >> 32, v & 0xFFFFFFFF)


# --------------------------------------------------------------------------------------
# Process registry: everything we start is killed at the end, even on failure.

_registry_lock = threading.Lock()
_registry = []  # objects with .kill_now()


def _register(obj):
    with _registry_lock:
        _registry.append(obj)


def _unregister(obj):
    with _registry_lock:
        if obj in _registry:
            _registry.remove(obj)


def cleanup_all():
    with _registry_lock:
        objs = list(reversed(_registry))
    for o in objs:
        try:
            o.kill_now()
        except Exception:
            pass


# Scripts that use the harness without pytest get the same clean-up at exit.
atexit.register(cleanup_all)


def wait_until(cond, timeout, interval=0.05, what="condition"):
    """Poll cond() until it returns a truthy value; return it. AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # a transient failure (server restarting) keeps polling
            last_exc = e
        if time.monotonic() >= deadline:
            msg = "timed out after %.1fs waiting for %s" % (timeout, what)
            if last_exc is not None:
                msg += " (last error: %r)" % (last_exc,)
            raise AssertionError(msg)
        time.sleep(interval)


# --------------------------------------------------------------------------------------
# PostgreSQL cluster

DEFAULT_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "logical",
    "max_wal_senders": "10",
    "max_replication_slots": "20",
    "wal_sender_timeout": "'10s'",
    # Speed: a test server need not survive an OS crash. Commits are still written to the
    # WAL before they return (synchronous_commit stays on), so a postgres crash loses
    # nothing a client saw committed.
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "'128MB'",
    "max_connections": "50",
    "log_min_messages": "'warning'",
    "log_connections": "on",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "checkpoint_timeout": "'5min'",
    "max_wal_size": "'2GB'",
    "autovacuum": "off",
}


class PgCluster:
    """A PostgreSQL cluster in its own temp dir, listening on 127.0.0.1:<port> (TCP, what
    pgcdc uses) and on a unix socket in that dir (what the harness's sql() uses).

    As root, initdb/pg_ctl run as the `postgres` user through runuser (PostgreSQL refuses
    to run as root); otherwise as the current user.
    """

    def __init__(self, name="pg", host_auth="trust", password=None, settings=None, dbname="itdb",
                 base_dir=None):
        self.name = name
        self.bindir = pg_bindir()
        self.host_auth = host_auth
        self.password = password
        self.dbname = dbname
        self.port = free_port()
        self.settings = dict(DEFAULT_SETTINGS)
        if settings:
            self.settings.update(settings)
        self.dir = tempfile.mkdtemp(prefix="pgcdc-it-%s-" % name, dir=base_dir)
        self.datadir = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.sockdir = self.dir
        self.user = "postgres" if is_root() else None
        if self.user:
            shutil.chown(self.dir, user=self.user, group=None)
            os.chmod(self.dir, 0o755)
        _register(self)
        self._initdb()

    # -- commands run as the server's user
    def _cmd(self, args, check=True, timeout=120):
        full = list(args)
        if self.user:
            full = ["runuser", "-u", self.user, "--"] + full
        r = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           stdin=subprocess.DEVNULL, cwd=self.dir)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s\n--- server log:\n%s" % (
                " ".join(args), r.returncode, r.stdout.decode(errors="replace"), self.log_tail()))
        return r

    def _initdb(self):
        args = [os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", "postgres",
                "--auth-local=trust", "--auth-host=%s" % self.host_auth, "-E", "UTF8",
                "--locale=C", "--no-sync"]
        if self.password is not None:
            pwfile = os.path.join(self.dir, "pwfile")
            with open(pwfile, "w") as f:
                f.write(self.password + "\n")
            if self.user:
                shutil.chown(pwfile, user=self.user)
            args.append("--pwfile=%s" % pwfile)
        self._cmd(args)
        if self.password is not None:
            os.unlink(os.path.join(self.dir, "pwfile"))
        # Newer minor releases (15.20 in Debian 12's security updates) only allow the output
        # plugins listed in output_plugin_libraries; older ones have no such setting.
        self.has_output_plugin_libraries = self.has_setting("output_plugin_libraries")
        if self.has_output_plugin_libraries and "output_plugin_libraries" not in self.settings:
            self.settings["output_plugin_libraries"] = "'pgoutput, test_decoding, wal2json'"
        self.write_settings()

    def has_setting(self, name):
        """Whether this server binary knows the setting `name`."""
        r = self._cmd([os.path.join(self.bindir, "postgres"), "--describe-config"])
        return any(line.split("\t", 1)[0] == name
                   for line in r.stdout.decode(errors="replace").splitlines())

    def write_settings(self):
        """(Re)write the harness's settings into postgresql.auto-like include file."""
        conf = os.path.join(self.datadir, "postgresql.conf")
        with open(conf) as f:
            base = f.read().split("# --- pgcdc harness ---")[0]
        lines = [base, "# --- pgcdc harness ---\n",
                 "port = %d\n" % self.port,
                 "unix_socket_directories = '%s'\n" % self.sockdir]
        for k, v in self.settings.items():
            lines.append("%s = %s\n" % (k, v))
        with open(conf, "w") as f:
            f.write("".join(lines))

    def set(self, **kv):
        """Change settings for the next start (values as postgresql.conf text)."""
        self.settings.update(kv)
        self.write_settings()

    def start(self, timeout=60):
        self._cmd([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                   "-w", "-t", str(timeout), "start"], timeout=timeout + 10)
        self._ensure_db()
        return self

    def stop(self, mode="fast", timeout=60):
        self._cmd([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", mode, "-w",
                   "-t", str(timeout), "stop"], timeout=timeout + 10)

    def restart(self, mode="fast", timeout=60):
        """pg_ctl restart -m MODE (immediate = crash: recovery on start)."""
        self._cmd([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                   "-m", mode, "-w", "-t", str(timeout), "restart"], timeout=timeout + 10)

    def running(self):
        r = self._cmd([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "status"],
                      check=False)
        return r.returncode == 0

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def kill(self):
        """SIGKILL the postmaster, then let pg_ctl stop -m immediate take its children."""
        pid = self.postmaster_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill_now(self):
        """Finalizer: stop at once and remove the directory."""
        _unregister(self)
        try:
            if self.running():
                self.stop(mode="immediate", timeout=30)
        except Exception:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    destroy = kill_now

    def log_tail(self, n=40):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def log_text(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- connections
    def dsn(self, dbname=None, user="postgres", password=None, **extra):
        """key=value DSN over TCP 127.0.0.1 (what pgcdc is given)."""
        parts = ["host=127.0.0.1", "port=%d" % self.port, "dbname=%s" % (dbname or self.dbname),
                 "user=%s" % user]
        pw = password if password is not None else self.password
        if pw is not None:
            parts.append("password=%s" % pw)
        for k, v in extra.items():
            parts.append("%s=%s" % (k, v))
        return " ".join(parts)

    def uri(self, dbname=None, user="postgres", password=None):
        pw = password if password is not None else self.password
        auth = user if pw is None else "%s:%s" % (user, pw)
        return "postgresql://%s@127.0.0.1:%d/%s" % (auth, self.port, dbname or self.dbname)

    def connect(self, dbname=None, autocommit=True):
        """psycopg2 connection over the unix socket (local trust auth)."""
        c = psycopg2.connect(host=self.sockdir, port=self.port, user="postgres",
                             dbname=dbname or self.dbname, connect_timeout=10)
        c.autocommit = autocommit
        return c

    def sql(self, query, params=None, dbname=None):
        """Run one statement (or a ;-separated script without params) in autocommit mode.
        Returns fetchall() rows when the statement returns rows, else None."""
        c = self.connect(dbname=dbname)
        try:
            with c.cursor() as cur:
                cur.execute(query, params)
                if cur.description is not None:
                    return cur.fetchall()
                return None
        finally:
            c.close()

    def scalar(self, query, params=None, dbname=None):
        rows = self.sql(query, params, dbname)
        return rows[0][0] if rows else None

    def _ensure_db(self):
        c = psycopg2.connect(host=self.sockdir, port=self.port, user="postgres", dbname="postgres",
                             connect_timeout=10)
        c.autocommit = True
        try:
            with c.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,))
                if not cur.fetchone():
                    cur.execute('CREATE DATABASE "%s"' % self.dbname)
        finally:
            c.close()

    # -- replication state
    def current_lsn(self):
        return lsn_parse(self.scalar("SELECT pg_current_wal_lsn()::text"))

    def slot(self, name):
        """pg_replication_slots row as a dict (LSNs as ints), or None."""
        rows = self.sql(
            "SELECT slot_name, plugin, slot_type, database, active, active_pid, "
            "restart_lsn::text, confirmed_flush_lsn::text, wal_status "
            "FROM pg_replication_slots WHERE slot_name = %s", (name,), dbname="postgres")
        if not rows:
            return None
        r = rows[0]
        return {
            "slot_name": r[0], "plugin": r[1], "slot_type": r[2], "database": r[3],
            "active": r[4], "active_pid": r[5],
            "restart_lsn": lsn_parse(r[6]) if r[6] else None,
            "confirmed_flush_lsn": lsn_parse(r[7]) if r[7] else None,
            "wal_status": r[8],
        }

    def confirmed_flush(self, name):
        s = self.slot(name)
        return s["confirmed_flush_lsn"] if s else None

    def wait_slot_active(self, name, timeout=30, active=True):
        return wait_until(lambda: (self.slot(name) or {}).get("active") is active, timeout,
                          what="slot %s active=%s" % (name, active))

    def wait_confirmed(self, name, lsn, timeout=30):
        """Wait until the slot's confirmed_flush_lsn >= lsn."""
        return wait_until(lambda: (self.confirmed_flush(name) or 0) >= lsn, timeout,
                          what="slot %s confirmed_flush_lsn >= %s (now %s)" % (
                              name, lsn_format(lsn), lsn_format(self.confirmed_flush(name) or 0)))

    def drop_slot(self, name):
        if self.slot(name):
            wait_until(lambda: not (self.slot(name) or {}).get("active"), 30,
                       what="slot %s inactive before drop" % name)
            self.sql("SELECT pg_drop_replication_slot(%s)", (name,), dbname="postgres")

    def reference_changes(self, slot):
        """Peek a wal2json slot through SQL: list of (commit_lsn, lsn, action, schema, table)
        for every I/U/D/T change, in stream order. An independent source of truth."""
        return self.reference_stream(slot)[0]

    def reference_stream(self, slot):
        """(changes as in reference_changes, [(commit_lsn, end_lsn, xid)] of every
        transaction, empty ones included) from peeking wal2json slot `slot`."""
        rows = self.sql(
            "SELECT data FROM pg_logical_slot_peek_changes(%s, NULL, NULL, 'format-version', '2', "
            "'include-lsn', '1', 'include-transaction', '1', 'include-xids', '1')", (slot,))
        out, commits, pending = [], [], []
        for (data,) in rows:
            m = json.loads(data)
            a = m["action"]
            if a == "B":
                pending = []
            elif a == "C":
                cl = lsn_parse(m["lsn"])
                out.extend((cl,) + p for p in pending)
                commits.append((cl, lsn_parse(m["nextlsn"]), m.get("xid")))
                pending = []
            elif a in "IUDT":
                pending.append((lsn_parse(m["lsn"]), a, m["schema"], m["table"]))
        return out, commits


# --------------------------------------------------------------------------------------
# logfmt


_LOGFMT_RE = re.compile(r'([A-Za-z0-9_.\-]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line):
    """`ts=... level=info msg="a b" k=v` -> dict (JSON lines are parsed as JSON)."""
    line = line.strip()
    if line.startswith("{"):
        try:
            return json.loads(line)
        except ValueError:
            pass
    d = {}
    for k, v in _LOGFMT_RE.findall(line):
        if v.startswith('"'):
            try:
                v = json.loads(v)
            except ValueError:
                v = v[1:-1]
        d[k] = v
    return d


def log_level(line):
    return parse_logfmt(line).get("level")


# --------------------------------------------------------------------------------------
# pgcdc runner


class PgcdcExited(AssertionError):
    pass


class Pgcdc:
    """One pgcdc process. Settings go into a config file in `workdir` (`key = value`);
    `opts` become `-o KEY=VALUE` arguments. PGCDC_* variables of the test's own
    environment are not passed on (ctest sets PGCDC_BIN etc.), only those in `env`.

    Defaults: sink.file.dir = workdir/data, state.dir = workdir/state, status.interval_ms=200,
    snapshot.mode=never.
    """

    def __init__(self, workdir, settings=None, opts=None, env=None, args=None, user=None,
                 config=True, binary=None):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.settings = {
            "sink.file.dir": os.path.join(workdir, "data"),
            "state.dir": os.path.join(workdir, "state"),
            "status.interval_ms": "200",
            "snapshot.mode": "never",
        }
        if settings:
            self.settings.update(settings)
        for k in [k for k, v in self.settings.items() if v is None]:
            del self.settings[k]
        self.opts = dict(opts or {})
        self.extra_env = dict(env or {})
        self.args = list(args) if args else ["run"]
        self.user = user
        self.config = config
        self.binary = binary or pgcdc_bin()
        self.proc = None
        self.lines = []  # stderr lines (str, no newline)
        self.stdout_lines = []
        self._cv = threading.Condition()
        self._readers = []
        self.hwm_kb = 0  # max VmHWM seen while running
        self.maxrss_kb = 0  # ru_maxrss from wait4 (includes the forked Python's RSS)
        self.returncode = None
        self.started_at = None
        self.exited_at = None

    @property
    def data_dir(self):
        return self.settings.get("sink.file.dir")

    @property
    def state_dir(self):
        return self.settings.get("state.dir")

    @property
    def conf_path(self):
        return os.path.join(self.workdir, "pgcdc.conf")

    def write_config(self):
        with open(self.conf_path, "w") as f:
            f.write("# written by tests/integration/harness.py\n")
            for k, v in self.settings.items():
                f.write("%s = %s\n" % (k, v))
        if self.user:
            shutil.chown(self.conf_path, user=self.user)

    def command(self, extra_args=()):
        cmd = [self.binary] + list(self.args)
        if self.config:
            self.write_config()
            cmd += ["-c", self.conf_path]
        for k, v in self.opts.items():
            cmd += ["-o", "%s=%s" % (k, v)]
        cmd += list(extra_args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        return cmd

    def environ(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGCDC_")}
        # libpq must not pick up a password or service from the developer's environment.
        for k in ("PGPASSWORD", "PGSERVICE", "PGPASSFILE", "PGHOST", "PGPORT", "PGUSER",
                  "PGDATABASE"):
            env.pop(k, None)
        env.update(self.extra_env)
        return env

    def start(self, extra_args=()):
        assert not self.alive(), "already running"
        self.lines = []
        self.stdout_lines = []
        self.hwm_kb = 0
        self.maxrss_kb = 0
        self.returncode = None
        self.exited_at = None
        self._exited = threading.Event()
        self.cmdline = self.command(extra_args)
        self.proc = subprocess.Popen(self.cmdline, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.environ(), cwd=self.workdir)
        self.started_at = time.monotonic()
        _register(self)
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout_lines),
                             daemon=True),
        ]
        for t in self._readers:
            t.start()
        threading.Thread(target=self._reap, daemon=True).start()
        threading.Thread(target=self._sample_hwm, daemon=True).start()
        return self

    def _read(self, stream, sink):
        for raw in iter(stream.readline, b""):
            with self._cv:
                sink.append(raw.decode("utf-8", errors="replace").rstrip("\n"))
                self._cv.notify_all()
        stream.close()
        with self._cv:
            self._cv.notify_all()

    def _reap(self):
        """The only place the child is waited for: exit code and rusage (peak RSS)."""
        proc = self.proc
        try:
            _, status, ru = os.wait4(proc.pid, 0)
            rc = os.waitstatus_to_exitcode(status)
            maxrss = ru.ru_maxrss
        except ChildProcessError:  # reaped elsewhere (should not happen): take Popen's word
            rc = proc.returncode if proc.returncode is not None else -255
            maxrss = 0
        proc.returncode = rc  # so Popen never waits for it again
        if self.user and rc >= 128:
            rc = -(rc - 128)  # runuser reports a child killed by signal N as 128+N
        with self._cv:
            self.maxrss_kb = max(self.maxrss_kb, maxrss)
            self.returncode = rc
            self.exited_at = time.monotonic()
            self._cv.notify_all()
        self._exited.set()

    def _pid(self):
        """pid of pgcdc itself (under runuser, the child of runuser)."""
        if self.proc is None or self.returncode is not None:
            return None
        if not self.user:
            return self.proc.pid
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                kids = f.read().split()
            return int(kids[0]) if kids else None
        except (OSError, ValueError):
            return None

    def vm_hwm_kb(self):
        """VmHWM (peak resident set) of the running process, in kB; None once it is gone."""
        pid = self._pid()
        if not pid:
            return None
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def _sample_hwm(self):
        ev = self._exited
        while not ev.is_set():
            v = self.vm_hwm_kb()
            if v:
                self.hwm_kb = max(self.hwm_kb, v)
            ev.wait(0.05)

    @property
    def peak_rss_kb(self):
        """Peak resident set of pgcdc (VmHWM sampled every 50 ms while it runs).
        (ru_maxrss from wait4 is not used: Linux carries the pre-exec hiwater mark of the
        forked Python child into it.)"""
        return self.hwm_kb

    # -- state
    def alive(self):
        return self.proc is not None and not self._exited.is_set()

    @property
    def pid(self):
        return self._pid()

    def stderr(self):
        with self._cv:
            return "\n".join(self.lines)

    def stdout(self):
        with self._cv:
            return "\n".join(self.stdout_lines)

    def error_lines(self):
        with self._cv:
            return [l for l in self.lines if log_level(l) in ("error", "fatal")]

    def lines_at(self, *levels):
        with self._cv:
            return [l for l in self.lines if log_level(l) in levels]

    def describe(self):
        return "pgcdc %s (exit %s)\n--- stderr (%d lines, last 60):\n%s" % (
            " ".join(getattr(self, "cmdline", [])), self.returncode, len(self.lines),
            "\n".join(self.lines[-60:]))

    def wait_log(self, pattern, timeout=30, start=0):
        """Wait for a stderr line matching regex `pattern` (or a predicate on the line).
        Returns the line. Fails at once if the process exits first."""
        pred = pattern if callable(pattern) else re.compile(pattern).search
        deadline = time.monotonic() + timeout
        i = start
        with self._cv:
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i]):
                        return self.lines[i]
                    i += 1
                if self.returncode is not None and not any(t.is_alive() for t in self._readers):
                    raise PgcdcExited("pgcdc exited (%s) before logging %r\n%s" % (
                        self.returncode, pattern, self.describe()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no log line matching %r within %ss\n%s" % (
                        pattern, timeout, self.describe()))
                self._cv.wait(min(left, 0.2))

    def assert_alive(self, what=""):
        if not self.alive():
            self.wait(5)
            raise AssertionError("pgcdc exited unexpectedly%s\n%s" % (
                (" " + what) if what else "", self.describe()))

    def signal(self, sig):
        pid = self._pid()
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout):
        """Wait for exit; returns the exit code (negative: killed by that signal).
        AssertionError if it is still running after `timeout` seconds (it is then killed)."""
        if self.proc is None:
            raise AssertionError("pgcdc was never started")
        if not self._exited.wait(timeout):
            desc = self.describe()
            self.kill_now()
            raise AssertionError("pgcdc still running after %.1fs\n%s" % (timeout, desc))
        for t in self._readers:
            t.join(timeout=5)
        _unregister(self)
        return self.returncode

    def stop(self, timeout=10, sig=None):
        """Send SIGTERM (or sig) and wait up to timeout; returns the exit code."""
        self.signal(sig if sig is not None else signal.SIGTERM)
        return self.wait(timeout)

    def kill9(self):
        """SIGKILL pgcdc (a crash) and reap it."""
        self.signal(signal.SIGKILL)
        return self.wait(10)

    def kill_now(self):
        _unregister(self)
        if self.proc is None or self._exited.is_set():
            return
        self.signal(signal.SIGKILL)
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self._exited.wait(10)

    def run(self, extra_args=(), timeout=60):
        """Start, wait for exit, return the exit code."""
        self.start(extra_args)
        return self.wait(timeout)

    # -- sink
    def segments(self, **kw):
        return read_segments(self.data_dir, **kw)

    def events(self, **kw):
        return read_events(self.data_dir, **kw)

    def checkpoint(self):
        return read_checkpoint(self.state_dir)


# --------------------------------------------------------------------------------------
# File sink reader

SEGMENT_RE = re.compile(r"^(\d{10})-([0-9A-Fa-f]{16})\.jsonl(\.open)?$")


class Segment:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        m = SEGMENT_RE.match(self.name)
        self.valid_name = bool(m)
        self.seq = int(m.group(1)) if m else None
        self.first_commit_lsn = int(m.group(2), 16) if m else None
        self.open = self.name.endswith(".open")

    def __repr__(self):
        return "Segment(%s)" % self.name


def list_segments(d):
    """Segment files of sink.file.dir sorted by name (stream order). Files that are neither
    `*.jsonl` nor `*.jsonl.open` are ignored (temp files)."""
    if not d or not os.path.isdir(d):
        return []
    names = sorted(n for n in os.listdir(d) if n.endswith(".jsonl") or n.endswith(".jsonl.open"))
    return [Segment(os.path.join(d, n)) for n in names]


def load_event(line):
    """Parse one event line: integers stay exact (Python ints), decimals as Decimal."""
    return json.loads(line, parse_float=Decimal)


class Event(dict):
    """A parsed event; .raw is its line, .segment the file name."""

    raw = ""
    segment = ""

    @property
    def key(self):
        s = self["source"]
        return (s["commit_lsn"], s["lsn"])

    @property
    def table(self):
        s = self["source"]
        return "%s.%s" % (s["schema"], s["table"])


def read_segments(d, tolerate_partial=False):
    """[(Segment, [Event...])] in name order. A final line without its newline is an error,
    unless tolerate_partial (reading while the worker runs or after a crash)."""
    out = []
    for seg in list_segments(d):
        try:
            out.append((seg, read_segments_one(seg, tolerate_partial=tolerate_partial)))
        except FileNotFoundError:
            if not tolerate_partial:  # renamed under us while the worker runs
                raise
    return out


def read_events(d, tolerate_partial=False):
    evs = []
    for _, e in read_segments(d, tolerate_partial=tolerate_partial):
        evs.extend(e)
    return evs


def count_lines(d):
    """Number of complete lines in all segments (cheap progress check)."""
    n = 0
    for seg in list_segments(d):
        try:
            with open(seg.path, "rb") as f:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    n += b.count(b"\n")
        except FileNotFoundError:
            pass
    return n


def _checkpoint_fields(text):
    d = {}
    for line in text.splitlines():
        line = line.strip()
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            d[k] = v
    return d


def read_checkpoint(state_dir):
    """<state.dir>/checkpoint as a dict (lsn parsed to int under 'lsn_int'), or None.
    The slot format (two 512-byte slots, each with gen= and a CRC-32 of the text before
    its crc= line) gives the intact slot with the higher gen; the plain format, its lines."""
    p = os.path.join(state_dir, "checkpoint")
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    d = None
    if raw.startswith(b"# pgcdc file sink checkpoint (two slots"):
        for slot in (raw[:512], raw[512:1024]):
            at = slot.find(b"\ncrc=")
            if at < 0:
                continue
            body = slot[:at + 1]
            if int(slot[at + 5:at + 13], 16) != zlib.crc32(body):
                continue
            s = _checkpoint_fields(body.decode())
            if d is None or int(s.get("gen", 0)) > int(d.get("gen", 0)):
                d = s
        if d is None:
            return {}
    else:
        d = _checkpoint_fields(raw.decode(errors="replace"))
    if "lsn" in d:
        try:
            d["lsn_int"] = lsn_parse(d["lsn"])
        except ValueError:
            pass
    return d


def check_stream_invariants(events):
    """The exactly-once/order invariants every file-sink stream must satisfy:
    no duplicate (commit_lsn, lsn); commit_lsn non-decreasing in file order; within one
    transaction, lsn increasing; every event of a transaction contiguous."""
    seen = set()
    prev_commit = -1
    prev_lsn = -1
    closed = set()
    for i, e in enumerate(events):
        k = e.key
        assert isinstance(k[0], int) and isinstance(k[1], int), "lsn/commit_lsn not integers: %r" % (
            e.raw[:300],)
        assert k not in seen, "duplicate event (commit_lsn, lsn)=%r at #%d in %s: %s" % (
            k, i, e.segment, e.raw[:300])
        seen.add(k)
        c = k[0]
        assert c >= prev_commit, "commit_lsn went backwards at #%d in %s: %s after %s" % (
            i, e.segment, lsn_format(c), lsn_format(prev_commit))
        if c == prev_commit:
            assert k[1] > prev_lsn, "lsn not increasing inside a transaction at #%d in %s" % (
                i, e.segment)
        else:
            assert c not in closed, "transaction %s split" % lsn_format(c)
            if prev_commit >= 0:
                closed.add(prev_commit)
        prev_commit, prev_lsn = c, k[1]


def group_transactions(events):
    """[(commit_lsn, [events])] in stream order."""
    out = []
    for e in events:
        c = e["source"]["commit_lsn"]
        if out and out[-1][0] == c:
            out[-1][1].append(e)
        else:
            out.append((c, [e]))
    return out


# --------------------------------------------------------------------------------------
# Slowing the server down


class BackendThrottle(threading.Thread):
    """Runs the server backends whose query is a COPY naming `needle` only run_s out of
    every period_s (SIGSTOP, then SIGCONT for run_s): a kill meant to land mid-snapshot
    then lands there however fast the machine, since the snapshot's pace is the test's,
    not the server's. Backends are found again every period, so the readers of a restarted
    pgcdc are slowed too. stop() continues every backend it ever stopped."""

    Q = ("SELECT pid FROM pg_stat_activity WHERE query ILIKE 'COPY%%' AND query LIKE %s"
         " AND pid <> pg_backend_pid()")

    def __init__(self, cluster, needle, run_s=0.002, period_s=0.02):
        super().__init__(daemon=True, name="throttle")
        self.cluster, self.pattern = cluster, "%" + needle + "%"
        self.run_s, self.period_s = run_s, period_s
        self.stopped = set()
        self.rounds = 0
        self._halt = threading.Event()

    @staticmethod
    def _signal(pids, sig):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def run(self):
        conn = self.cluster.connect()
        try:
            with conn.cursor() as cur:
                stop_s = self.period_s - self.run_s
                while not self._halt.is_set():
                    # Asked only while none of them is stopped: reading pg_stat_activity
                    # waits for a backend caught mid-update of its entry (or holding
                    # ProcArrayLock at its commit), which would never be continued. The time
                    # the query takes counts as running time: the share stays run/period.
                    t0 = time.monotonic()
                    cur.execute(self.Q, (self.pattern,))
                    pids = [r[0] for r in cur.fetchall()]
                    self.stopped.update(pids)
                    time.sleep(max(0.0, self.run_s - (time.monotonic() - t0)))
                    ran = time.monotonic() - t0
                    self._signal(pids, signal.SIGSTOP)
                    self._halt.wait(max(stop_s, ran * stop_s / self.run_s))
                    self._signal(pids, signal.SIGCONT)
                    self.rounds += 1
        finally:
            self._signal(self.stopped, signal.SIGCONT)
            conn.close()

    def stop(self):
        self._halt.set()
        if self.ident is not None:  # started
            self.join(30)
        self._signal(self.stopped, signal.SIGCONT)


# --------------------------------------------------------------------------------------
# Continuous writer


WRITER_DDL = """
CREATE TABLE IF NOT EXISTS {a} (id bigint PRIMARY KEY, txn bigint NOT NULL, val text);
CREATE TABLE IF NOT EXISTS {b} (id bigint PRIMARY KEY, txn bigint NOT NULL, val text);
"""


class Writer(threading.Thread):
    """Commits small multi-row transactions on two tables (`<prefix>_a`, `<prefix>_b`)
    continuously, reconnecting when the server goes away, and records every transaction
    it knows committed, in commit order:

        self.committed = [(txn_no, [(table, op, id), ...]), ...]

    Row ids are chosen by the writer (writer_id * 10**12 + txn_no * 1000 + i) so the
    expected events are known without asking the server. A COMMIT whose outcome was lost
    with the connection is resolved on reconnect by looking for the transaction's marker
    row (its first insert). With one writer, `committed` is the commit order; several
    writers (distinct writer_id, same tables) interleave, each keeping its own order.
    """

    RETRYABLE = (psycopg2.OperationalError, psycopg2.InterfaceError)

    @classmethod
    def lost_connection(cls, conn, e):
        """Whether error e means the server went away (retry) rather than a bug (raise)."""
        pgcode = getattr(e, "pgcode", None)
        return (isinstance(e, cls.RETRYABLE) or conn is None or conn.closed != 0
                or pgcode in ("57P01", "57P02", "57P03")
                # libpq-level failure ("server closed the connection unexpectedly")
                or (type(e) is psycopg2.DatabaseError and pgcode is None))

    def __init__(self, cluster, prefix="w", writer_id=1, pause=0.002, seed=None, updates=True,
                 deletes=True, max_txns=None):
        super().__init__(daemon=True, name="writer-%d" % writer_id)
        self.cluster = cluster
        self.a = "%s_a" % prefix
        self.b = "%s_b" % prefix
        self.writer_id = writer_id
        self.pause = pause
        self.rng = random.Random(seed if seed is not None else writer_id * 7919)
        self.updates = updates
        self.deletes = deletes
        self.max_txns = max_txns
        self.committed = []
        self.live_a = []  # ids known committed and not deleted
        self.live_b = []
        self.reconnects = 0
        self.failure = None
        self._halt = threading.Event()
        self.txn_no = 0
        self.lock = threading.Lock()
        _register(self)

    @staticmethod
    def create_tables(cluster, prefix="w"):
        cluster.sql(WRITER_DDL.format(a="%s_a" % prefix, b="%s_b" % prefix))

    def _rid(self, txn, i):
        return self.writer_id * 10 ** 12 + txn * 1000 + i

    def _connect(self):
        deadline = time.monotonic() + 120
        while not self._halt.is_set():
            try:
                return self.cluster.connect(autocommit=False)
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return None

    def _plan(self, k):
        """The changes of transaction k, in statement order; the first is the marker."""
        ops = [(self.a, "c", self._rid(k, i)) for i in range(self.rng.randint(1, 4))]
        ops += [(self.b, "c", self._rid(k, 100 + i)) for i in range(self.rng.randint(0, 3))]
        if self.updates and self.live_a and self.rng.random() < 0.5:
            ops.append((self.a, "u", self.rng.choice(self.live_a)))
        if self.deletes and len(self.live_b) > 5 and self.rng.random() < 0.3:
            ops.append((self.b, "d", self.rng.choice(self.live_b)))
        return ops

    def _execute(self, conn, k, ops):
        with conn.cursor() as cur:
            for table, op, rid in ops:
                if op == "c":
                    cur.execute("INSERT INTO %s (id, txn, val) VALUES (%%s, %%s, %%s)" % table,
                                (rid, k, "v%d" % k))
                elif op == "u":
                    cur.execute("UPDATE %s SET txn = %%s, val = %%s WHERE id = %%s" % table,
                                (k, "u%d" % k, rid))
                else:
                    cur.execute("DELETE FROM %s WHERE id = %%s" % table, (rid,))

    def _drop(self, conn):
        self.reconnects += 1
        try:
            conn.close()
        except Exception:
            pass

    def run(self):
        conn = None
        try:
            while not self._halt.is_set():
                if self.max_txns is not None and self.txn_no >= self.max_txns:
                    break
                if conn is None:
                    conn = self._connect()
                    if conn is None:
                        break
                k = self.txn_no + 1
                ops = self._plan(k)
                try:
                    self._execute(conn, k, ops)
                except psycopg2.Error as e:
                    if not self.lost_connection(conn, e):
                        raise
                    self._drop(conn)  # never reached COMMIT: not committed
                    conn = None
                    continue
                try:
                    conn.commit()
                except psycopg2.Error as e:
                    if not self.lost_connection(conn, e):
                        raise
                    self._drop(conn)
                    conn = None
                    if not self._resolve(k, ops):
                        continue
                with self.lock:
                    self.committed.append((k, ops))
                    self.txn_no = k
                for table, op, rid in ops:
                    live = self.live_a if table == self.a else self.live_b
                    if op == "c":
                        live.append(rid)
                    elif op == "d":
                        live.remove(rid)
                if self.pause:
                    self._halt.wait(self.pause * self.rng.random() * 2)
        except Exception as e:  # reported by stop()
            import traceback
            self.failure = e
            self.failure_tb = traceback.format_exc()
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass

    def _resolve(self, k, ops):
        """Did transaction k commit? Look for its marker row (retrying while the server
        comes back)."""
        marker = ops[0][2]
        deadline = time.monotonic() + 120
        while True:
            c = self._connect()
            if c is None:
                raise RuntimeError("writer stopped while resolving txn %d" % k)
            try:
                with c.cursor() as cur:
                    cur.execute("SELECT txn FROM %s WHERE id = %%s" % self.a, (marker,))
                    r = cur.fetchone()
                return bool(r and r[0] == k)
            except psycopg2.Error as e:
                if not self.lost_connection(c, e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            finally:
                c.close()

    def stop(self, timeout=60):
        """Stop writing; raises if the writer failed for a reason other than a lost
        connection."""
        self._halt.set()
        self.join(timeout)
        _unregister(self)
        if self.failure is not None:
            raise AssertionError("writer failed: %r\n%s" % (self.failure, self.failure_tb))
        assert not self.is_alive(), "writer did not stop"

    def kill_now(self):
        self._halt.set()
        _unregister(self)

    def wait_txns(self, n, timeout=60):
        """Wait until at least n transactions are committed in total."""
        wait_until(lambda: len(self.committed) >= n or self.failure, timeout,
                   what="writer to commit %d txns" % n)
        if self.failure is not None:
            raise AssertionError("writer failed: %r\n%s" % (self.failure, self.failure_tb))

    def expected(self):
        """[(txn_no, [(table, op, id)])] committed so far."""
        with self.lock:
            return list(self.committed)


def event_summary(e):
    """(table, op, id) of an event of a writer table (id from after, else before)."""
    row = e["after"] if e["after"] is not None else e["before"]
    return (e["source"]["table"], e["op"], row["id"] if row else None)


def kill9_loop(cluster, p, slot, rng, kills, pause=(0.2, 1.5), idle_chance=0.0):
    """kill -9 the running worker p `kills` times, rng.uniform(*pause) s apart, restarting it
    once the slot is free; with idle_chance, sometimes first let writers go on while nobody
    reads. Returns the slot's confirmed position at each kill."""
    confirmed_at_kill = []
    for i in range(kills):
        time.sleep(rng.uniform(*pause))
        p.assert_alive("before kill %d" % (i + 1))
        p.kill9()
        cluster.wait_slot_active(slot, active=False, timeout=30)
        confirmed_at_kill.append(cluster.confirmed_flush(slot))
        if idle_chance and rng.random() < idle_chance:
            time.sleep(rng.uniform(0, 0.5))
        p.start()
    return confirmed_at_kill


def verify_writers(events, writers, cluster=None):
    """Check the events of the writers' tables against what the writers committed: the
    same transactions, each exactly once, with the same changes in the same order, and
    each writer's transactions in its commit order. With `cluster`, also check the rows
    left in the source tables equal inserts minus deletes."""
    tables = {}
    for w in writers:
        tables[w.a] = w
        tables[w.b] = w
    evs = [e for e in events if e["source"]["table"] in tables]
    check_stream_invariants(evs)
    txns = group_transactions(evs)
    got = {w.writer_id: [] for w in writers}
    for commit_lsn, tevs in txns:
        ws = {tables[e["source"]["table"]].writer_id for e in tevs}
        assert len(ws) == 1, "transaction %s mixes writers" % lsn_format(commit_lsn)
        wid = ws.pop()
        w = [x for x in writers if x.writer_id == wid][0]
        txnos = {e["after"]["txn"] for e in tevs if e["after"] is not None}
        assert len(txnos) == 1, "transaction %s holds rows of writer txns %r" % (
            lsn_format(commit_lsn), txnos)
        got[wid].append((txnos.pop(), [event_summary(e) for e in tevs]))
    for w in writers:
        exp = w.expected()
        g = got[w.writer_id]
        exp_nos = [k for k, _ in exp]
        got_nos = [k for k, _ in g]
        if got_nos != exp_nos:
            missing = sorted(set(exp_nos) - set(got_nos))
            extra = sorted(set(got_nos) - set(exp_nos))
            dups = sorted({k for k in got_nos if got_nos.count(k) > 1})
            raise AssertionError(
                "writer %d: %d txns committed, %d in the sink; missing %s; unexpected %s; "
                "duplicated %s; in order: %s" % (
                    w.writer_id, len(exp_nos), len(got_nos), missing[:20], extra[:20], dups[:20],
                    got_nos == sorted(got_nos)))
        for (k, ops), (k2, summ) in zip(exp, g):
            assert [tuple(x) for x in ops] == summ, "writer txn %d: expected %r, got %r" % (k, ops, summ)
        if cluster is not None:
            for t, live in ((w.a, w.live_a), (w.b, w.live_b)):
                lo, hi = w.writer_id * 10 ** 12, (w.writer_id + 1) * 10 ** 12
                ids = sorted(r[0] for r in cluster.sql(
                    "SELECT id FROM %s WHERE id >= %%s AND id < %%s" % t, (lo, hi)))
                assert ids == sorted(live), "table %s rows differ from the writer's record" % t
    return txns


def check_segment_files(d, strict=True):
    """The file sink's directory layout: names `<seq 10 digits>-<first commit LSN 16 hex>.jsonl`,
    sequence numbers increasing, at most one `.jsonl.open` and it is the last, every
    closed segment complete (ends with a newline), each non-empty segment's name carrying
    its first event's commit_lsn. With strict=False (after a crash) the open segment may
    end in a partial line. Returns read_segments' result."""
    names = sorted(os.listdir(d)) if os.path.isdir(d) else []
    segs = list_segments(d)
    for n in names:
        full = os.path.join(d, n)
        if os.path.isfile(full) and (n.endswith(".jsonl") or n.endswith(".jsonl.open")):
            assert SEGMENT_RE.match(n), "badly named segment file %r" % n
    opens = [s for s in segs if s.open]
    assert len(opens) <= 1, "more than one open segment: %r" % opens
    if opens:
        assert segs[-1].open, "the open segment %s is not the last in name order" % opens[0].name
    for a, b in zip(segs, segs[1:]):
        # Names sort in stream order. (Numbers may skip one where a crash left a segment
        # that recovery removed.)
        assert b.seq > a.seq, "segment sequence not increasing: %s, %s" % (a.name, b.name)
        assert b.first_commit_lsn >= a.first_commit_lsn, "segment LSNs go backwards: %s, %s" % (
            a.name, b.name)
    out = []
    for seg in segs:
        partial_ok = (not strict) and seg.open
        got = read_segments_one(seg, tolerate_partial=partial_ok)
        if got:
            assert got[0]["source"]["commit_lsn"] == seg.first_commit_lsn, (
                "segment %s starts with commit_lsn %s, not the one in its name" % (
                    seg.name, lsn_format(got[0]["source"]["commit_lsn"])))
        out.append((seg, got))
    return out


def read_segments_one(seg, tolerate_partial=False):
    with open(seg.path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    tail = lines.pop()
    if tail and not tolerate_partial:
        raise AssertionError("%s ends with a partial line: %r" % (seg.name, tail[:200]))
    evs = []
    for i, line in enumerate(lines):
        text = line.decode("utf-8")
        try:
            e = Event(load_event(text))
        except ValueError as ex:
            raise AssertionError("%s line %d is not JSON (%s): %r" % (seg.name, i + 1, ex, text[:300]))
        e.raw = text
        e.segment = seg.name
        evs.append(e)
    return evs
