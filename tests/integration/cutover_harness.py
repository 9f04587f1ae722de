"""Helpers for the cutover tests (replay + verify): source/target databases on one cluster,
schema copied with pg_dump --schema-only, a pgbench-style writer over tables that exercise
every kind of value and change, and runners for `pgcdc replay` and `pgcdc verify`.

Built on harness.py (PgCluster, Pgcdc, wait_until); nothing here replaces it.
"""

import os
import random
import subprocess
import threading

import pytest

import harness

# --------------------------------------------------------------------------------------
# Databases


def create_db(cluster, dbname):
    cluster.sql('CREATE DATABASE "%s"' % dbname, dbname="postgres")


def dbs_fixture(prefix=""):
    """A test module's `dbs` fixture (assign it to `dbs`)."""
    @pytest.fixture
    def dbs(cluster, name):
        """(source db, target db): "<prefix>src_<name>", "<prefix>tgt_<name>", created empty
        for this test."""
        src, tgt = "%ssrc_%s" % (prefix, name), "%stgt_%s" % (prefix, name)
        create_db(cluster, src)
        create_db(cluster, tgt)
        return src, tgt
    return dbs


def copy_schema(cluster, src_db, dst_db):
    """pg_dump --schema-only SRC | psql DST, as the runbook does (docs/cutover.md)."""
    env = dict(os.environ)
    for k in ("PGPASSWORD", "PGSERVICE", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        env.pop(k, None)
    pre = ["runuser", "-u", cluster.user, "--"] if cluster.user else []
    dump = subprocess.run(pre + [os.path.join(cluster.bindir, "pg_dump"), "--schema-only",
                                 "--no-publications", "--no-subscriptions",
                                 "-h", cluster.sockdir, "-p", str(cluster.port), "-U", "postgres",
                                 src_db],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, env=env,
                          cwd="/")
    assert dump.returncode == 0, dump.stderr.decode(errors="replace")
    load = subprocess.run(pre + [os.path.join(cluster.bindir, "psql"), "-X", "-q",
                                 "-v", "ON_ERROR_STOP=1", "-h", cluster.sockdir,
                                 "-p", str(cluster.port), "-U", "postgres", "-d", dst_db],
                          input=dump.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60, env=env, cwd="/")
    assert load.returncode == 0, load.stderr.decode(errors="replace")


def start_capture(make_pgcdc, cluster, src, **settings):
    """A file-sink capture of src from an initial snapshot (settings on top), started and
    past its first checkpoint."""
    s = {"source.dsn": cluster.dsn(dbname=src), "snapshot.mode": "initial"}
    s.update(settings)
    run = make_pgcdc(settings=s)
    run.start()
    harness.wait_until(lambda: os.path.exists(os.path.join(run.data_dir, ".pgcdc-position")),
                       60, what="the file sink's first checkpoint")
    return run


def replay_position(cluster, dbname):
    """(commit_lsn int, partial_events) recorded in the target, or None."""
    rows = cluster.sql("SELECT to_regclass('pgcdc.replay_position') IS NOT NULL", dbname=dbname)
    if not rows[0][0]:
        return None
    rows = cluster.sql("SELECT commit_lsn::text, partial_events FROM pgcdc.replay_position",
                       dbname=dbname)
    if not rows:
        return None
    return harness.lsn_parse(rows[0][0]), rows[0][1]


PINNED = ("SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; SET extra_float_digits = 1; "
          "SET bytea_output = 'hex'; SET IntervalStyle = 'postgres'")


def rows_text(cluster, dbname, table, order="id"):
    """Every row of table as its text form, under pinned settings, ordered."""
    c = cluster.connect(dbname=dbname)
    try:
        with c.cursor() as cur:
            cur.execute(PINNED)
            cur.execute("SELECT t::text FROM %s t ORDER BY %s" % (table, order))
            return [r[0] for r in cur.fetchall()]
    finally:
        c.close()


# --------------------------------------------------------------------------------------
# Runners


def replay_proc(workdir, cluster, target_db, data_dir, args=(), opts=None, binary=None,
                password=None):
    """A harness.Pgcdc running `pgcdc replay --input DATA --target DSN ARGS` (no config file);
    start() / run() / kill9() / wait_log() as for `pgcdc run`. A password put in the DSN
    is never asked for (trust auth) but must never show either."""
    a = ["replay", "--input", data_dir, "--target",
         cluster.dsn(dbname=target_db, password=password)] + list(args)
    for k, v in (opts or {}).items():
        a += ["-o", "%s=%s" % (k, v)]
    return harness.Pgcdc(workdir, args=a, config=False, binary=binary)


def verify(cluster, source_db, target_db, tables=(), binary=None, timeout=120, password=None):
    """Run `pgcdc verify`; returns (exit code, stdout lines, stderr)."""
    cmd = [binary or harness.pgcdc_bin(), "verify", "--source",
           cluster.dsn(dbname=source_db, password=password), "--target",
           cluster.dsn(dbname=target_db, password=password)]
    for t in tables:
        cmd += ["--table", t]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCDC_")}
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       env=env)
    return r.returncode, r.stdout.decode().splitlines(), r.stderr.decode()


# --------------------------------------------------------------------------------------
# Workload

SCHEMA = r"""
CREATE TABLE accounts (id bigint PRIMARY KEY, balance numeric(14,2) NOT NULL DEFAULT 0,
                       branch int NOT NULL, note text);
CREATE TABLE history (hid bigint GENERATED ALWAYS AS IDENTITY, account bigint, delta numeric,
                      at timestamptz NOT NULL DEFAULT now(), memo text);
CREATE TABLE docs (id int PRIMARY KEY, counter int NOT NULL DEFAULT 0, tag text, body text,
                   body_len int GENERATED ALWAYS AS (length(body)) STORED);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE types (
    id bigint PRIMARY KEY,
    i8 bigint, i2 smallint, num numeric, f8 double precision, f4 real, flag boolean,
    by bytea, tarr text[], iarr int[], j json, jb jsonb,
    ts timestamp, tstz timestamptz, d date, tm time, iv interval,
    t text, vc varchar(20), ch char(5), u uuid, ip inet, pt point
);
CREATE TABLE fullrow (k int, v text, n int);
ALTER TABLE fullrow REPLICA IDENTITY FULL;
CREATE TABLE scratch (id int PRIMARY KEY, v text);
"""

TABLES = ["public.accounts", "public.docs", "public.fullrow", "public.history",
          "public.scratch", "public.types"]

BIG_DIGITS = "9" * 500 + "." + "1234567890" * 50  # 1000 digits

# Values that are easy to get wrong. Column order as in SCHEMA (after id).
SPECIAL_ROWS = [
    # i8, i2, num, f8, f4, flag, by, tarr, iarr, j, jb, ts, tstz, d, tm, iv, t, vc, ch, u, ip, pt
    (9007199254740993, -32768, BIG_DIGITS, 0.1, 3.14159, True, b"\x00\x01\xff\\'\"",
     ['a "quoted"', None, "back\\slash", "", "NULL", "{brace}", "com,ma"], [1, None, -3],
     '{"k": [1, 2.50, "x\\u0000y"], "a": null}', '{"z": 1, "a": {"b": [true, null]}}',
     "2024-02-29 23:59:59.999999", "2024-02-29 23:59:59.123456+05:30", "0001-01-01",
     "24:00:00", "1 year 2 mons -3 days 04:05:06.789",
     "caf\u00e9 \U0001F600 \u2028 tab\there nl\nhere cr\rhere \x01\x1f quote\" back\\ end",
     "", "ab", "c0ffee00-0000-4000-8000-000000000001", "2001:db8::1/64", "(1.5,-2)"),
    (-9223372036854775808, 32767, "-0.000000000000000000000000000001", -1.7976931348623157e308,
     -0.0, False, b"", [], [], "[]", "{}", "infinity", "-infinity", "2000-01-01", "00:00:00",
     "0", "", None, None, None, "10.0.0.1", "(0,0)"),
    (None,) * 22,
]


def special_value_sql():
    return ("INSERT INTO types VALUES (%s)" % ", ".join(["%s"] * 23))


class CutoverWriter(threading.Thread):
    """pgbench-style transactions on the SCHEMA tables, until stopped:
    - tpcb-like: update an account's balance, insert a history row (no primary key)
    - docs: bump counter/tag of a row whose big TOASTed body is left alone (the update's
      event lacks body), now and then rewrite the body
    - types: insert rows of special values, update some columns, change a key, delete
    - fullrow (no key, REPLICA IDENTITY FULL): update and delete single rows, duplicates
    - scratch: inserts and, now and then, TRUNCATE
    `pause` seconds between transactions; `committed` counts them."""

    def __init__(self, cluster, dbname, seed=1, pause=0.002):
        super().__init__(daemon=True, name="cutover-writer")
        self.cluster = cluster
        self.dbname = dbname
        self.rng = random.Random(seed)
        self.pause = pause
        self.committed = 0
        self.failure = None
        self._halt = threading.Event()
        self.next_type_id = 1_000_000
        self.types_ids = []
        harness._register(self)

    def run(self):
        try:
            conn = self.cluster.connect(dbname=self.dbname, autocommit=False)
            with conn.cursor() as cur:
                cur.execute("SELECT id FROM types")
                self.types_ids = [r[0] for r in cur.fetchall()]
                cur.execute("SELECT count(*) FROM accounts")
                self.naccounts = cur.fetchone()[0]
                cur.execute("SELECT count(*) FROM docs")
                self.ndocs = cur.fetchone()[0]
            conn.commit()
            while not self._halt.is_set():
                with conn.cursor() as cur:
                    self.one(cur)
                conn.commit()
                self.committed += 1
                if self.pause:
                    self._halt.wait(self.pause)
            conn.close()
        except Exception as e:  # reported by stop()
            import traceback
            self.failure = "%r\n%s" % (e, traceback.format_exc())

    def one(self, cur):
        rng = self.rng
        k = rng.random()
        if k < 0.45:
            aid = rng.randrange(1, self.naccounts + 1)
            delta = rng.randint(-5000, 5000)
            cur.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (delta, aid))
            cur.execute("INSERT INTO history (account, delta, memo) VALUES (%s, %s, %s)",
                        (aid, delta, rng.choice([None, "", "m\u00e9mo", "x" * 40])))
        elif k < 0.65:
            did = rng.randrange(1, self.ndocs + 1)
            if rng.random() < 0.05:
                cur.execute("UPDATE docs SET body = %s, counter = counter + 1 WHERE id = %s",
                            (big_text(rng.randrange(10 ** 9)), did))
            else:
                cur.execute("UPDATE docs SET counter = counter + 1, tag = %s WHERE id = %s",
                            ("t%d" % rng.randrange(1000), did))
        elif k < 0.85:
            op = rng.random()
            if op < 0.4 or len(self.types_ids) < 5:
                tid = self.next_type_id
                self.next_type_id += 1
                cur.execute(special_value_sql(), (tid,) + rng.choice(SPECIAL_ROWS))
                self.types_ids.append(tid)
            elif op < 0.7:
                tid = rng.choice(self.types_ids)
                cur.execute("UPDATE types SET t = %s, num = %s, tarr = %s WHERE id = %s",
                            ("upd \u00e9 %d\t\"q\"" % rng.randrange(100),
                             "%d.%s" % (rng.randrange(10 ** 30), "7" * 200),
                             [None, "x,y", '"'], tid))
            elif op < 0.8:
                tid = rng.choice(self.types_ids)
                new = self.next_type_id
                self.next_type_id += 1
                cur.execute("UPDATE types SET id = %s WHERE id = %s", (new, tid))
                self.types_ids.remove(tid)
                self.types_ids.append(new)
            else:
                tid = rng.choice(self.types_ids)
                cur.execute("DELETE FROM types WHERE id = %s", (tid,))
                self.types_ids.remove(tid)
        elif k < 0.95:
            kk = rng.randrange(20)
            op = rng.random()
            if op < 0.5:
                cur.execute("INSERT INTO fullrow VALUES (%s, %s, %s)",
                            (kk, rng.choice(["a", "b", None]), rng.randrange(3)))
            elif op < 0.8:
                cur.execute("UPDATE fullrow SET n = n + 1 WHERE ctid = "
                            "(SELECT ctid FROM fullrow WHERE k = %s LIMIT 1)", (kk,))
            else:
                cur.execute("DELETE FROM fullrow WHERE ctid = "
                            "(SELECT ctid FROM fullrow WHERE k = %s LIMIT 1)", (kk,))
        else:
            if rng.random() < 0.1:
                cur.execute("TRUNCATE scratch")
            else:
                cur.execute("INSERT INTO scratch VALUES (%s, %s) ON CONFLICT (id) DO UPDATE "
                            "SET v = EXCLUDED.v", (rng.randrange(500), "s%d" % rng.randrange(99)))

    def stop(self, timeout=30):
        self._halt.set()
        self.join(timeout)
        harness._unregister(self)
        assert self.failure is None, "writer failed: %s" % self.failure
        assert not self.is_alive(), "writer did not stop"

    def kill_now(self):
        self._halt.set()
        harness._unregister(self)


def big_text(seed, kb=24):
    """About kb KiB of incompressible text (so it is TOASTed out of line)."""
    import hashlib
    parts, h = [], str(seed).encode()
    while sum(len(p) for p in parts) < kb * 1024:
        h = hashlib.sha256(h).hexdigest().encode()
        parts.append(h.decode())
    return "".join(parts)


def load_initial(cluster, dbname, accounts=2000, docs=20, history=0, types=30, fullrow=40):
    """The SCHEMA tables with rows for the snapshot to carry."""
    cluster.sql(SCHEMA, dbname=dbname)
    cluster.sql("INSERT INTO accounts (id, branch, note) SELECT g, g %% 10, "
                "CASE WHEN g %% 7 = 0 THEN NULL ELSE 'acct ' || g END "
                "FROM generate_series(1, %s) g", (accounts,), dbname=dbname)
    if history:
        cluster.sql("INSERT INTO history (account, delta, memo) SELECT g %% 1000, g, 'h' || g "
                    "FROM generate_series(1, %s) g", (history,), dbname=dbname)
    c = cluster.connect(dbname=dbname)
    try:
        with c.cursor() as cur:
            for i in range(1, docs + 1):
                cur.execute("INSERT INTO docs (id, tag, body) VALUES (%s, %s, %s)",
                            (i, "d%d" % i, big_text(i)))
            for i in range(1, types + 1):
                cur.execute(special_value_sql(), (i,) + SPECIAL_ROWS[i % len(SPECIAL_ROWS)])
            for i in range(fullrow):
                cur.execute("INSERT INTO fullrow VALUES (%s, %s, %s)", (i % 20, "r", 0))
    finally:
        c.close()

