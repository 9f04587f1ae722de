"""`pgcdc migrate`'s operations: applied segments deleted while following (and kept with
migrate.keep_segments), a kill -9 and restart after deletions still ending in a matching
cutover; replay's progress as log lines and as metrics on metrics.listen; the preflight on
both sides, with the room the snapshot needs refused on a 2 MB disk; the bulk load reading
ahead of capture yet committing only what capture made durable (SIGTERM and kill -9 while
it reads ahead), ANALYZE beside post-data, a key built early in its own tablespace.
"""

import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

import cutover_harness as ch
import harness
from harness import wait_until


dbs = ch.dbs_fixture()


def migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name, opts=None, target_user="postgres",
                 dir_=None):
    o = {"source.slot": name[:60], "migrate.pg_dump": os.path.join(cluster.bindir, "pg_dump"),
         "status.interval_ms": "200", "sink.file.segment_bytes": "4096"}
    o.update(opts or {})
    a = ["migrate", "--source", cluster.dsn(dbname=src),
         "--target", cluster.dsn(dbname=tgt, user=target_user),
         "--dir", dir_ or os.path.join(workdir, "mig")]
    for k, v in o.items():
        a += ["-o", "%s=%s" % (k, v)]
    return harness.Pgcdc(os.path.join(workdir, "proc"), args=a, config=False, binary=pgcdc_bin)


def seqs(data_dir):
    return [int(os.path.basename(s.path).split("-")[0]) for s in harness.list_segments(data_dir)]


def metrics(port):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(pgcdc_replay_\w+) (\S+)$", text, re.M)}


def test_segments_deleted_while_following_and_kill9(cluster, dbs, workdir, pgcdc_bin, name,
                                                     writers):
    src, tgt = dbs
    ch.load_initial(cluster, src, accounts=3000, history=1000)
    w = ch.CutoverWriter(cluster, src, seed=11, pause=0.003)
    writers.append(w)
    w.start()
    port = harness.free_port()
    data = os.path.join(workdir, "mig", "data")
    m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name,
                     {"metrics.listen": "127.0.0.1:%d" % port})
    m.start()
    try:
        m.wait_log("migrate: following", timeout=120)
        # Segments the target has applied go; the newest closed one and the open one stay.
        wait_until(lambda: seqs(data) and seqs(data)[0] > 1, 30, what="a deleted segment")
        # Replay's counters, served by the capture's metrics endpoint.
        wait_until(lambda: metrics(port).get("pgcdc_replay_rows_total", 0) > 0, 20,
                   what="pgcdc_replay_rows_total")
        mt = metrics(port)
        assert {"pgcdc_replay_lag_bytes", "pgcdc_replay_lag_seconds"} <= set(mt), mt
        # Not a terminal: a progress line every 10 s through the log.
        m.wait_log(r"migrate progress.*stage=(following|postdata|bulk)", timeout=25)
        before = seqs(data)
        m.kill9()
        m.wait(10)
        m.start()
        m.wait_log("migrate: following", timeout=120)
        wait_until(lambda: seqs(data)[-1] > before[-1] + 3, 30, what="new segments")
        after = seqs(data)
        # No number reused: the sink goes on after the highest one, deletions or not.
        assert after == sorted(set(after)) and after[0] >= before[0], (before, after)
        w.stop()
        # Idle: replay's lag comes back to about nothing.

        def idle():
            mt = metrics(port)
            return mt["pgcdc_replay_lag_bytes"] < 65536 and mt["pgcdc_replay_lag_seconds"] < 3
        # The restarted capture serves them again (wait_until retries a refused connection).
        wait_until(idle, 30, what="replay's lag back to ~0 on the restarted migrate's metrics")
        r = subprocess.run([pgcdc_bin, "cutover", "--dir", os.path.join(workdir, "mig")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180)
        lines = r.stdout.decode().splitlines()
        assert r.returncode == 0, "%s\n%s\n%s" % ("\n".join(lines), r.stderr.decode(),
                                                  m.describe())
        matched = sorted(l.split()[1] for l in lines if l.startswith("MATCH "))
        assert matched == sorted(ch.TABLES), lines
        assert m.wait(60) == 0, m.describe()
    finally:
        m.kill_now()


def test_keep_segments(cluster, dbs, workdir, pgcdc_bin, name, writers):
    src, tgt = dbs
    ch.load_initial(cluster, src, accounts=1000)
    w = ch.CutoverWriter(cluster, src, seed=12, pause=0.003)
    writers.append(w)
    w.start()
    m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name,
                     {"migrate.keep_segments": "true"})
    m.start()
    try:
        m.wait_log("migrate: following", timeout=120)
        data = os.path.join(workdir, "mig", "data")
        n = len(seqs(data))
        wait_until(lambda: len(seqs(data)) > n + 5, 30, what="more segments")
        time.sleep(3)  # several of the ops child's rounds
        s = seqs(data)
        assert s == list(range(1, len(s) + 1)), s
    finally:
        m.stop()
        cluster.drop_slot(name[:60])


def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", path],
                       capture_output=True, text=True)
    return r.returncode == 0, r.stderr.strip()


def test_preflight_both_sides_and_space(cluster, dbs, workdir, pgcdc_bin, name):
    src, tgt = dbs
    # About 2.5 MB of heap: some 10 MB of events, on a 2 MB disk.
    cluster.sql("CREATE TABLE wide (id int PRIMARY KEY, t text)", dbname=src)
    cluster.sql("INSERT INTO wide SELECT g, repeat('x', 60) FROM generate_series(1, 25000) g",
                dbname=src)
    mnt = os.path.join(workdir, "small-disk")
    ok, why = _mount_tmpfs(mnt, "2m")
    if not ok:
        pytest.skip("cannot mount a small tmpfs (needs root): %s" % why)
    try:
        m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name, dir_=os.path.join(mnt, "m"))
        assert m.run(timeout=60) == 2, m.describe()
        err = [l for l in m.lines if "needs about" in l]
        assert err and "free" in err[-1] and "migrate.keep_segments" in err[-1], m.describe()
        assert cluster.slot(name[:60]) is None
        # `pgcdc check` prints the same estimate for a snapshot into its file sink's dir.
        for d, status in ((os.path.join(mnt, "data"), "FAIL"),
                          (os.path.join(workdir, "big", "data"), "PASS")):
            r = subprocess.run([pgcdc_bin, "check", "-o", "source.dsn=" + cluster.dsn(dbname=src),
                                "-o", "source.slot=" + name[:60], "-o", "sink.file.dir=" + d,
                                "-o", "snapshot.mode=initial"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            out = r.stdout.decode()
            assert re.search(r"^%s space: the snapshot needs about \d+ bytes" % status, out,
                             re.M), out
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)
    # The target: a role that may not create pgcdc's schema is refused, naming the fix.
    role = "weak_%s" % name[-6:]
    cluster.sql("CREATE ROLE %s LOGIN" % role)
    m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name, target_user=role)
    assert m.run(timeout=60) == 2, m.describe()
    assert any("may not create the schema pgcdc" in l and "GRANT CREATE" in l
               for l in m.lines), m.describe()
    # The source: a failing check of `pgcdc check` (no slot left) stops migrate with its fix.
    n = cluster.scalar("SELECT current_setting('max_replication_slots')::int - count(*) "
                       "FROM pg_replication_slots")
    for i in range(n):
        cluster.sql("SELECT pg_create_physical_replication_slot('fill_%s_%d')" % (name[-6:], i))
    try:
        m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name,
                         dir_=os.path.join(workdir, "m2"))
        assert m.run(timeout=60) == 2, m.describe()
        assert any("slots" in l and "max_replication_slots" in l for l in m.error_lines()), \
            m.describe()
    finally:
        for i in range(n):
            cluster.sql("SELECT pg_drop_replication_slot('fill_%s_%d')" % (name[-6:], i))


def _copy_in_progress(cluster, tgt):
    return cluster.scalar("SELECT max(tuples_processed) FROM pg_stat_progress_copy "
                          "WHERE datname = %s AND command = 'COPY FROM'", (tgt,)) or 0


def _pending(workdir):
    try:
        with open(os.path.join(workdir, "mig", "state", "snapshot")) as f:
            return [l for l in f if l.startswith("table=pending")]
    except FileNotFoundError:
        return None


def _reads_ahead(cluster, src, tgt, workdir, pgcdc_bin, name, space_name):
    rows = 200000
    cluster.sql("CREATE TABLE big (id bigint, v text NOT NULL, "
                "CONSTRAINT big_pkey PRIMARY KEY (id) USING INDEX TABLESPACE %s)" % space_name,
                dbname=src)
    cluster.sql("INSERT INTO big SELECT g, repeat('x', 80) || g FROM generate_series(1, %d) g"
                % rows, dbname=src)
    cluster.sql("CREATE INDEX big_tail ON big (right(v, 3))", dbname=src)
    m = migrate_proc(cluster, workdir, src, tgt, pgcdc_bin, name,
                     {"sink.file.segment_bytes": "1048576"})
    # The source's snapshot COPY (not the target's COPY ... FROM) runs a tenth of the time:
    # the table's snapshot then spans seconds, and replay catches up with capture in it.
    throttle = harness.BackendThrottle(cluster, "TO STDOUT", run_s=0.002, period_s=0.02)
    throttle.start()
    try:
        for stop in ("rewind", "sigterm", "kill9"):
            if stop != "sigterm":
                m.start()
            # Far enough that replay has caught up with capture's writes more than once.
            wait_until(lambda: m.alive() and _copy_in_progress(cluster, tgt) >= 30000, 120,
                       interval=0.02, what="the target's COPY of big")
            assert _pending(workdir), "big's snapshot was done before the check"
            assert not any("snapshot table done" in l and "table=big" in l for l in m.lines)
            if stop == "rewind":
                # The snapshot's session dies: capture retries in its own process, and its
                # sink first takes back the cut table; replay, reading ahead, starts over.
                at = len(m.lines)
                cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                            "query LIKE 'COPY %%TO STDOUT' AND pid <> pg_backend_pid()")
                # The table as capture takes it again differs from what replay read ahead.
                cluster.sql("UPDATE big SET v = 'rewound' WHERE id <= 50000", dbname=src)
                m.wait_log("stream interrupted; retrying", timeout=30, start=at)
                m.wait_log("replay rolled back what it read ahead", timeout=60, start=at)
                continue
            if stop == "sigterm":
                m.stop(timeout=60)
            else:
                m.kill9()
                m.wait(10)
            n = cluster.scalar("SELECT count(*) FROM big", dbname=tgt)
            assert n == 0, "%s: %d rows of big committed before capture made them durable" % (
                stop, n)
            # The next snapshot of big is taken at a later point: without these rows.
            cluster.sql("DELETE FROM big WHERE id %% 97 = 0 AND id <= %s" % (rows // 2),
                        dbname=src)
    finally:
        throttle.stop()
    m.start()
    try:
        m.wait_log("migrate: following", timeout=180)
        # ANALYZE ran beside post-data, and again for a table with an expression index
        # once the index existed: the expression has its statistics.
        assert cluster.scalar("SELECT count(*) FROM pg_stats WHERE tablename = 'big_tail'",
                              dbname=tgt) == 1
        assert cluster.scalar("SELECT t.spcname FROM pg_class c JOIN pg_tablespace t ON "
                              "t.oid = c.reltablespace WHERE c.relname = 'big_pkey'",
                              dbname=tgt) == space_name
        cluster.sql("UPDATE big SET v = 'after' WHERE id = 1", dbname=src)
        r = subprocess.run([pgcdc_bin, "cutover", "--dir", os.path.join(workdir, "mig")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180)
        out = r.stdout.decode()
        assert r.returncode == 0, out + r.stderr.decode() + m.describe()
        assert re.search(r"^MATCH public\.big\b", out, re.M), out
        assert m.wait(60) == 0, m.describe()
    finally:
        m.kill_now()
    want = cluster.scalar("SELECT count(*) FROM big", dbname=src)
    assert cluster.scalar("SELECT count(*) FROM big", dbname=tgt) == want


def test_bulk_load_reads_ahead_and_commits_only_what_capture_made_durable(
        cluster, dbs, workdir, pgcdc_bin, name):
    """The bulk load COPYs a table's rows while capture is still writing its snapshot (read
    ahead of the sink's commit), yet commits nothing capture has not made durable: a
    capture retrying in its own process (its snapshot session killed) makes replay roll back
    and read again; a SIGTERM and a kill -9 while reading ahead leave the target table
    empty, and a restart (whose snapshot of the table is taken at a later point, after
    deletes) still matches.
    ANALYZE, run beside post-data, leaves an index expression with its statistics; the key,
    built right after the load, is in the tablespace the source's is in."""
    src, tgt = dbs
    # The key is built right after the load, outside post-data: in its own tablespace still.
    space = os.path.join(workdir, "space")
    os.makedirs(space)
    if os.geteuid() == 0:
        shutil.chown(space, "postgres")
    cluster.sql("CREATE TABLESPACE %s LOCATION '%s'" % (name[:60], space))
    try:
        _reads_ahead(cluster, src, tgt, workdir, pgcdc_bin, name, name[:60])
    finally:  # before workdir, which holds the tablespace, is removed
        for db in (tgt, src):
            cluster.sql("DROP TABLE IF EXISTS big", dbname=db)
        cluster.sql("DROP TABLESPACE IF EXISTS %s" % name[:60])
