"""`pgcdc migrate` + `pgcdc cutover`: a live database moved into an empty second database on
the module's cluster under concurrent writes, in one command; then the cutover verifies
every table and carries the sequences. Also: kill -9 of migrate at each phase resumes, and
bad input (a target that is not empty, no migrate running) exits 2.
"""

import os
import re
import subprocess
import threading
import time

import pytest

import cutover_harness as ch
import harness
from harness import wait_until

EXTRA = r"""
CREATE SEQUENCE orders_no START 500 INCREMENT 7;
CREATE TABLE parents (id int PRIMARY KEY, name text);
CREATE TABLE children (id serial PRIMARY KEY, parent int NOT NULL
                       REFERENCES parents(id) ON DELETE CASCADE, v text);
CREATE TABLE audit (id bigserial PRIMARY KEY, what text);
CREATE FUNCTION audit_fn() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO audit (what) VALUES (TG_OP || ' ' || NEW.id); RETURN NEW; END$$;
CREATE TRIGGER parents_audit AFTER INSERT OR UPDATE ON parents
  FOR EACH ROW EXECUTE FUNCTION audit_fn();
CREATE TABLE meas (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE meas_a PARTITION OF meas FOR VALUES FROM (0) TO (50);
CREATE TABLE meas_b PARTITION OF meas FOR VALUES FROM (50) TO (100);
INSERT INTO parents SELECT g, 'p' || g FROM generate_series(1, 200) g;
INSERT INTO children (parent, v) SELECT 1 + g % 200, 'c' || g FROM generate_series(1, 1000) g;
INSERT INTO meas SELECT g, g % 100, 'm' || g FROM generate_series(1, 2000) g;
SELECT nextval('orders_no'), nextval('orders_no');
"""

TABLES = sorted(ch.TABLES + ["public.audit", "public.children", "public.meas",
                             "public.parents"])


class ExtraWriter(threading.Thread):
    """Writes to the EXTRA tables: cascading deletes, trigger-firing updates, partitions."""

    def __init__(self, cluster, db):
        super().__init__(daemon=True)
        self.cluster, self.db, self.halt, self.failure = cluster, db, threading.Event(), None
        harness._register(self)

    def run(self):
        try:
            c = self.cluster.connect(dbname=self.db)
            i = 0
            with c.cursor() as cur:
                while not self.halt.is_set():
                    i += 1
                    pid = 1000 + i
                    cur.execute("INSERT INTO parents VALUES (%s, 'n')", (pid,))
                    cur.execute("INSERT INTO children (parent, v) VALUES (%s, 'x'), (%s, 'y')",
                                (pid, pid))
                    if i % 3 == 0:
                        cur.execute("DELETE FROM parents WHERE id = %s", (pid - 1,))
                    cur.execute("UPDATE meas SET v = v || '.' WHERE id = %s", (i % 2000 + 1,))
                    cur.execute("SELECT nextval('orders_no')")
                    self.halt.wait(0.005)
            c.close()
        except Exception as e:  # reported by stop()
            self.failure = repr(e)

    def stop(self):
        self.halt.set()
        self.join(30)
        harness._unregister(self)
        assert self.failure is None, self.failure

    def kill_now(self):
        self.halt.set()
        harness._unregister(self)


dbs = ch.dbs_fixture()


def migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name, opts=None, target_user="postgres"):
    o = {"source.slot": name[:60], "migrate.pg_dump": os.path.join(cluster.bindir, "pg_dump"),
         "status.interval_ms": "200", "sink.file.segment_bytes": "262144"}
    o.update(opts or {})
    a = ["migrate", "--source", cluster.dsn(dbname=src), "--target", cluster.dsn(dbname=tgt, user=target_user),
         "--dir", os.path.join(workdir, "mig dir")]
    for k, v in o.items():
        a += ["-o", "%s=%s" % (k, v)]
    return harness.Pgcdc(os.path.join(workdir, "proc"), args=a, config=False, binary=pgcdc_bin)


def cutover(workdir, pgcdc_bin, *args, timeout=180):
    r = subprocess.run([pgcdc_bin, "cutover", "--dir", os.path.join(workdir, "mig dir")] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return r.returncode, r.stdout.decode().splitlines(), r.stderr.decode()


def phase(cluster, tgt):
    if not cluster.scalar("SELECT to_regclass('pgcdc.migrate') IS NOT NULL", dbname=tgt):
        return None
    return cluster.scalar("SELECT phase FROM pgcdc.migrate", dbname=tgt)


def cutover_done(workdir, pgcdc_bin, m, check=None):
    """`pgcdc cutover` succeeds, its lines pass check(lines) (by default: every table
    MATCHes), and migrate then exits 0."""
    rc, lines, err = cutover(workdir, pgcdc_bin)
    assert rc == 0, "%s\n%s\n%s" % ("\n".join(lines), err, m.describe())
    if check:
        check(lines)
    else:
        matched = sorted(l.split()[1] for l in lines if l.startswith("MATCH "))
        assert matched == sorted(ch.TABLES), lines
    assert m.wait(60) == 0, m.describe()


def held_back(cluster, db):
    """(foreign keys, the trigger's tgenabled, history.hid's attidentity) on db."""
    return (cluster.scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                           "AND convalidated", dbname=db),
            cluster.scalar("SELECT tgenabled FROM pg_trigger WHERE tgname = 'parents_audit'",
                           dbname=db),
            cluster.scalar("SELECT attidentity FROM pg_attribute WHERE attrelid = "
                           "'public.history'::regclass AND attname = 'hid'", dbname=db))


def check_done(cluster, src, tgt, lines, slot):
    matched = sorted(l.split()[1] for l in lines if l.startswith("MATCH "))
    assert matched == TABLES, lines
    assert any(l.startswith("DONE write pause") for l in lines), lines
    # The writes stopped: replay catches up with the server's walEnd, the lag is small.
    assert any(l.startswith("LAG ") for l in lines), lines
    # Every sequence gives the same next value on both sides.
    seqs = [r[0] for r in cluster.sql(
        "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences "
        "WHERE schemaname <> 'pgcdc'", dbname=src)]
    assert len(seqs) == 4
    for s in seqs:
        a = cluster.scalar("SELECT nextval(%s)", (s,), dbname=src)
        b = cluster.scalar("SELECT nextval(%s)", (s,), dbname=tgt)
        assert a == b, (s, a, b)
    assert cluster.slot(slot) is None
    assert held_back(cluster, tgt) == held_back(cluster, src) == (1, "O", "a")


@pytest.mark.parametrize("role", ["postgres", "owner"])
def test_migrate_under_writes_then_cutover(cluster, dbs, workdir, pgcdc_bin, name, writers, role):
    """As a superuser, and as the target database's owner, who (like Neon's neondb_owner)
    may not set session_replication_role and may not act as the source's owner role."""
    src, tgt = dbs
    if role == "owner":
        role = "own_%s" % name[-6:]
        cluster.sql("CREATE ROLE %s LOGIN" % role)
        cluster.sql("ALTER DATABASE %s OWNER TO %s" % (tgt, role))
    ch.load_initial(cluster, src, accounts=5000, history=3000)
    cluster.sql(EXTRA, dbname=src)
    w = ch.CutoverWriter(cluster, src, seed=3, pause=0.002)
    x = ExtraWriter(cluster, src)
    writers += [w, x]
    w.start()
    x.start()
    m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name, target_user=role)
    m.start()
    try:
        m.wait_log("migrate: following", timeout=120)
        if role != "postgres":
            assert any("cannot set session_replication_role" in l for l in m.lines), \
                m.describe()
            assert cluster.scalar("SELECT tableowner FROM pg_tables WHERE tablename = "
                                  "'accounts'", dbname=tgt) == role
        else:
            assert any("may set session_replication_role" in l for l in m.lines), m.describe()
        # While following, nothing on the target changes rows behind replay's back: no
        # foreign key (the cascade), the trigger disabled, the identity column BY DEFAULT.
        assert held_back(cluster, tgt) == (0, "D", "d")
        time.sleep(2)
        w.stop()
        x.stop()
        cutover_done(workdir, pgcdc_bin, m,
                     lambda lines: check_done(cluster, src, tgt, lines, name[:60]))
    finally:
        m.kill_now()
    # The dump, not a secret, is all DIR holds besides data; the socket is gone.
    assert not os.path.exists(os.path.join(workdir, "mig dir", "cutover.sock"))


def test_kill9_each_phase_resumes(cluster, dbs, workdir, pgcdc_bin, name, writers):
    src, tgt = dbs
    ch.load_initial(cluster, src, accounts=60000, history=20000)
    cluster.sql(EXTRA, dbname=src)
    w = ch.CutoverWriter(cluster, src, seed=5, pause=0.003)
    writers.append(w)
    w.start()
    m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name,
                     {"replay.missing_rows": "error"})
    seen = set()
    for stage in ("predata", "postdata", "following"):
        m.start()

        def reached():
            assert m.alive(), m.describe()
            p = phase(cluster, tgt)
            return p == "following" if stage == "following" else p in (
                stage, "bulk", "postdata", "following")
        wait_until(reached, 120, interval=0.01, what="phase %s" % stage)
        seen.add(phase(cluster, tgt))
        m.kill9()
        m.wait(10)
    m.start()
    try:
        m.wait_log("migrate: following", timeout=120)
        time.sleep(1)
        w.stop()
        cutover_done(workdir, pgcdc_bin, m,
                     lambda lines: check_done(cluster, src, tgt, lines, name[:60]))
    finally:
        m.kill_now()
    print("phases killed in", sorted(seen))
    assert "predata" in seen or "bulk" in seen, seen


def test_bad_input(cluster, dbs, workdir, pgcdc_bin, name):
    src, tgt = dbs
    rc, lines, err = cutover(workdir, pgcdc_bin)
    assert rc == 2 and "no pgcdc migrate is following" in err, err
    cluster.sql("CREATE TABLE t1 (id int)", dbname=src)
    cluster.sql("CREATE TABLE stray (id int)", dbname=tgt)
    m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name)
    assert m.run(timeout=60) == 2, m.describe()
    assert any("not empty" in l and "public.stray" in l for l in m.lines), m.describe()
    assert cluster.slot(name[:60]) is None
    # Unlogged tables are named, unless left out; large objects are refused.
    cluster.sql("DROP TABLE stray", dbname=tgt)
    cluster.sql("CREATE UNLOGGED TABLE scratchpad (id int)", dbname=src)
    assert m.run(timeout=60) == 2, m.describe()
    assert any("unlogged" in l and "public.scratchpad" in l for l in m.lines), m.describe()
    m2 = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name,
                      {"source.tables.exclude": "public.scratchpad"})
    cluster.sql("SELECT lo_from_bytea(0, 'x')", dbname=src)
    assert m2.run(timeout=60) == 2, m2.describe()
    assert any("1 large objects" in l for l in m2.lines), m2.describe()
    # A pg_dump older than the source: exit 2 naming what is needed.
    old = os.path.join(workdir, "old_pg_dump")
    with open(old, "w") as f:
        f.write("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.1'\n")
    os.chmod(old, 0o755)
    cluster.sql("SELECT lo_unlink(oid) FROM pg_largeobject_metadata", dbname=src)
    m3 = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name,
                      {"source.tables.exclude": "public.scratchpad", "migrate.pg_dump": old})
    assert m3.run(timeout=60) == 2, m3.describe()
    assert any("version 12" in l and "migrate.pg_dump" in l for l in m3.lines), m3.describe()
    assert cluster.slot(name[:60]) is None


def test_read_only_source_failed_cutover_restores(cluster, dbs, workdir, pgcdc_bin, name):
    """cutover --read-only-source makes the source read-only and ends client sessions; when
    the cutover fails (the target was written to outside replay), the source gets its
    previous setting back (off, not RESET), and migrate follows on for a second cutover."""
    src, tgt = dbs
    ch.load_initial(cluster, src, accounts=500)
    cluster.sql("ALTER DATABASE %s SET default_transaction_read_only = off" % src)
    role = "app_%s" % name[-6:]
    cluster.sql("CREATE ROLE %s LOGIN" % role)
    m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name)
    m.start()
    try:
        m.wait_log("migrate: following", timeout=120)
        app = harness.psycopg2.connect(host=cluster.sockdir, port=cluster.port, user=role,
                                       dbname=src)
        app.autocommit = True
        cluster.sql("INSERT INTO scratch VALUES (99999, 'written outside replay')", dbname=tgt)
        rc, lines, err = cutover(workdir, pgcdc_bin, "--read-only-source")
        assert rc == 1, (lines, err)
        assert any(l.startswith("READ-ONLY source") and "1 sessions ended" in l
                   for l in lines), lines
        assert any(l.startswith("DIFF public.scratch") for l in lines), lines
        assert any(l.startswith("ROLLBACK") for l in lines), lines
        with pytest.raises(harness.psycopg2.Error):
            app.cursor().execute("SELECT 1")
        setting = cluster.scalar(
            "SELECT setconfig::text FROM pg_db_role_setting s JOIN pg_database d ON "
            "d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole = 0", (src,))
        assert setting == "{default_transaction_read_only=off}", setting
        rc, lines, err = cutover(workdir, pgcdc_bin, "--abort")
        assert rc == 0 and any(l.startswith("NOTHING to abort") for l in lines), (lines, err)
        # Fixed, the cutover runs again.
        cluster.sql("DELETE FROM scratch WHERE id = 99999", dbname=tgt)
        rc, lines, err = cutover(workdir, pgcdc_bin, "--read-only-source", "--keep-slot")
        assert rc == 0, "%s\n%s\n%s" % ("\n".join(lines), err, m.describe())
        assert any(l.startswith("KEPT slot") for l in lines), lines
        assert cluster.scalar("SELECT setconfig::text FROM pg_db_role_setting s JOIN "
                              "pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s",
                              (src,)) == "{default_transaction_read_only=on}"
        assert m.wait(60) == 0, m.describe()
    finally:
        m.kill_now()
    cluster.sql("ALTER DATABASE %s RESET default_transaction_read_only" % src)
    cluster.drop_slot(name[:60])


def test_write_after_end_fails_cutover(cluster, dbs, workdir, pgcdc_bin, name, writers):
    """Writes that go on after cutover took END (no --read-only-source): the cutover fails
    with one line naming the table and the LSN, migrate follows on, and once the writes
    stop a second cutover succeeds."""
    src, tgt = dbs
    ch.load_initial(cluster, src, accounts=500)
    w = ch.CutoverWriter(cluster, src, seed=7, pause=0.005)
    writers.append(w)
    w.start()
    m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name)
    m.start()
    try:
        m.wait_log("migrate: following", timeout=120)
        rc, lines, err = cutover(workdir, pgcdc_bin)
        assert rc == 1, "%s\n%s\n%s" % ("\n".join(lines), err, m.describe())
        after = [l for l in lines if l.startswith("FAILED ") and "after END" in l]
        assert len(after) == 1, lines
        assert re.match(r"FAILED public\.(\w+) changed at LSN [0-9A-F]+/[0-9A-F]+, after END "
                        r"[0-9A-F]+/[0-9A-F]+: writes to the source did not stop", after[0]), \
            after[0]
        assert after[0].split()[1] in ch.TABLES, after[0]
        assert any(l.startswith("ROLLBACK") for l in lines), lines
        assert m.alive(), m.describe()
        w.stop()
        cutover_done(workdir, pgcdc_bin, m)
    finally:
        m.kill_now()


def test_kill9_during_pg_dump_starts_over(cluster, dbs, workdir, pgcdc_bin, name):
    """migrate kill -9'd while pg_dump runs: the slot's exported snapshot died with it.
    Nothing reached the target yet and the slot is the one DIR records, so the restart
    drops it and DIR's capture state, says so, and starts over; the cutover then matches."""
    src, tgt = dbs
    ch.load_initial(cluster, src, accounts=500)
    tools, mark = os.path.join(workdir, "tools"), os.path.join(workdir, "dump-slowed")
    os.makedirs(tools)
    for t in ("pg_restore", "psql"):
        os.symlink(os.path.join(cluster.bindir, t), os.path.join(tools, t))
    wrapper = os.path.join(tools, "pg_dump")
    with open(wrapper, "w") as f:
        # The first dump in the snapshot waits (long enough to be killed), later ones not.
        f.write('#!/bin/sh\ncase " $* " in *" --snapshot="*)\n'
                '  [ -e "%s" ] || { : > "%s"; sleep 30 </dev/null >/dev/null 2>&1; } ;;\n'
                'esac\nexec "%s" "$@"\n' % (mark, mark, os.path.join(cluster.bindir, "pg_dump")))
    os.chmod(wrapper, 0o755)
    m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name, {"migrate.pg_dump": wrapper})
    m.start()
    wait_until(lambda: os.path.exists(mark) or not m.alive(), 60, what="pg_dump started")
    assert m.alive(), m.describe()
    m.kill9()
    assert cluster.slot(name[:60]) is not None
    assert phase(cluster, tgt) is None
    # A slot of that name that is not the one DIR records is never dropped.
    record = os.path.join(workdir, "mig dir", "state", "slot")
    with open(record) as f:
        ours = f.read()
    with open(record, "w") as f:
        f.write(re.sub(r"consistent_point=\S+", "consistent_point=FF/0", ours))
    assert m.run(timeout=60) == 2, m.describe()
    assert any("not the one" in l and "will not drop it" in l for l in m.lines), m.describe()
    assert cluster.slot(name[:60]) is not None
    with open(record, "w") as f:
        f.write(ours)
    m.start()
    try:
        m.wait_log("migrate: following", timeout=120)
        assert any("stopped while pg_dump ran" in l and "starting over" in l
                   for l in m.lines), m.describe()
        cutover_done(workdir, pgcdc_bin, m)
    finally:
        m.kill_now()
