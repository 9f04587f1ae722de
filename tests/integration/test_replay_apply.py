"""`pgcdc replay` in the cases a careful user meets: a target whose defaults print values
otherwise (a keyless table's rows are found by their text form), partitioned keyless
tables, a TRUNCATE of tables linked by a foreign key, and an update or delete whose row
the target lacks. `pgcdc run` captures from one database of the module's cluster; replay
applies to another, whose schema comes from pg_dump --schema-only (docs/cutover.md).
"""

import os

import cutover_harness as ch
import harness
from harness import lsn_format, wait_until


dbs = ch.dbs_fixture("r")


def _snapshot_pending(run):
    try:
        with open(os.path.join(run.state_dir, "snapshot")) as f:
            return any(l.startswith("table=pending") for l in f)
    except FileNotFoundError:
        return False


def captured_up_to_now(cluster, run):
    # Every table's snapshot too: they share one point, and a table's transaction may be
    # checkpointed (a split one at once) before the next table's is written.
    end = cluster.current_lsn()
    wait_until(lambda: (harness.read_checkpoint(run.state_dir) or {}).get("lsn_int", 0) >= end
               and not _snapshot_pending(run), 30, what="the sink to hold everything")


def replay(workdir, cluster, tgt, run, sub, opts=None):
    p = ch.replay_proc(os.path.join(workdir, sub), cluster, tgt, run.data_dir, opts=opts,
                       binary=harness.pgcdc_bin())
    rc = p.run(timeout=60)
    return p, rc


KEYLESS = """
CREATE TABLE ev (k int, at timestamptz, d date, iv interval, note text);
ALTER TABLE ev REPLICA IDENTITY FULL;
CREATE TABLE pev (k int, at timestamptz) PARTITION BY RANGE (k);
CREATE TABLE pev_a PARTITION OF pev FOR VALUES FROM (0) TO (10);
CREATE TABLE pev_b PARTITION OF pev FOR VALUES FROM (10) TO (20);
ALTER TABLE pev_a REPLICA IDENTITY FULL;
ALTER TABLE pev_b REPLICA IDENTITY FULL;
"""


def test_keyless_rows_found_whatever_the_target_defaults(cluster, dbs, make_pgcdc, workdir):
    """The target database prints timestamptz in New York time and dates the SQL way; the
    keyless tables' updates and deletes still find their rows (replay pins the settings the
    source printed them with). A partitioned keyless table (events under the root's name)
    matches through its partitions, and a row is told from one at the same ctid in the
    other partition."""
    src, tgt = dbs
    cluster.sql(KEYLESS, dbname=src)
    ch.copy_schema(cluster, src, tgt)
    cluster.sql("ALTER DATABASE \"%s\" SET TimeZone = 'America/New_York'; "
                "ALTER DATABASE \"%s\" SET DateStyle = 'SQL, DMY'; "
                "ALTER DATABASE \"%s\" SET IntervalStyle = 'sql_standard'" % (tgt, tgt, tgt),
                dbname="postgres")
    run = ch.start_capture(make_pgcdc, cluster, src, **{"source.partitions_as_root": "true"})
    cluster.sql("INSERT INTO ev SELECT g, '2024-02-29 12:00+00'::timestamptz + g * interval "
                "'1 hour', '2024-02-29'::date + g, g * interval '1 day 1 second', 'n' "
                "FROM generate_series(1, 6) g", dbname=src)
    # The same ctids, (0,1).., in both partitions.
    cluster.sql("INSERT INTO pev SELECT g, '2024-01-01 00:00+00'::timestamptz + g * interval "
                "'1 minute' FROM generate_series(1, 5) g", dbname=src)
    cluster.sql("INSERT INTO pev SELECT g, '2024-01-01 00:00+00'::timestamptz + g * interval "
                "'1 minute' FROM generate_series(11, 15) g", dbname=src)
    cluster.sql("UPDATE ev SET note = 'changed' WHERE k IN (1, 2); DELETE FROM ev WHERE k = 3; "
                "UPDATE pev SET at = at + interval '1 hour' WHERE k IN (2, 12); "
                "DELETE FROM pev WHERE k IN (11, 4)", dbname=src)
    captured_up_to_now(cluster, run)

    p, rc = replay(workdir, cluster, tgt, run, "replay")
    assert rc == 0, p.describe()
    assert p.error_lines() == [] and p.lines_at("warn") == [], p.describe()
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 0, (lines, err)
    assert sorted(l.split()[:2][1] for l in lines) == ["public.ev", "public.pev"], lines
    assert cluster.scalar("SELECT count(*) FROM pev", dbname=tgt) == 8
    run.stop()


def test_truncate_tables_linked_by_foreign_keys(cluster, dbs, make_pgcdc, workdir):
    """`TRUNCATE customers, orders` (and `TRUNCATE customers CASCADE`) arrive as one
    truncate event per table sharing one LSN, and go out as one statement: the target
    refuses to truncate a referenced table alone. Changes before the TRUNCATE in the same
    target transaction are emptied with it; changes after it stay."""
    src, tgt = dbs
    cluster.sql("CREATE TABLE customers (id int PRIMARY KEY, name text); "
                "CREATE TABLE orders (id int PRIMARY KEY, customer int NOT NULL REFERENCES "
                "customers, total numeric)", dbname=src)
    ch.copy_schema(cluster, src, tgt)
    run = ch.start_capture(make_pgcdc, cluster, src)
    cluster.sql("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 20) g; "
                "INSERT INTO orders SELECT g, g % 20 + 1, g FROM generate_series(1, 50) g",
                dbname=src)
    cluster.sql("BEGIN; INSERT INTO customers VALUES (100, 'late'); "
                "INSERT INTO orders VALUES (100, 100, 1); TRUNCATE customers, orders; "
                "INSERT INTO customers VALUES (1, 'after'); INSERT INTO orders VALUES (1, 1, 2); "
                "COMMIT", dbname=src)
    cluster.sql("INSERT INTO customers VALUES (2, 'two'); INSERT INTO orders VALUES (2, 2, 3)",
                dbname=src)
    cluster.sql("TRUNCATE customers CASCADE", dbname=src)
    cluster.sql("INSERT INTO customers VALUES (3, 'three'); INSERT INTO orders VALUES (3, 3, 4)",
                dbname=src)
    captured_up_to_now(cluster, run)
    truncs = [e for e in run.events() if e["op"] == "t"]
    assert len(truncs) == 4 and len({e.key for e in truncs}) == 2, truncs

    p, rc = replay(workdir, cluster, tgt, run, "replay")
    assert rc == 0, p.describe()
    assert p.error_lines() == [], p.describe()
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 0, (lines, err)
    assert cluster.sql("SELECT id, name FROM customers", dbname=tgt) == [(3, "three")]
    run.stop()


def test_update_or_delete_of_a_missing_row(cluster, dbs, make_pgcdc, workdir):
    """A row the target lacks (deleted there outside replay): the source's update of it
    stops replay, exit 1, naming table and LSN, and nothing of that transaction is applied
    (the ones before it are). With -o replay.missing_rows=warn, replay warns and goes on."""
    src, tgt = dbs
    cluster.sql("CREATE TABLE acct (id int PRIMARY KEY, v text); "
                "CREATE TABLE journal (id int PRIMARY KEY)", dbname=src)
    ch.copy_schema(cluster, src, tgt)
    run = ch.start_capture(make_pgcdc, cluster, src)
    cluster.sql("INSERT INTO acct VALUES (1, 'a'), (2, 'b'), (3, 'c')", dbname=src)
    captured_up_to_now(cluster, run)
    p, rc = replay(workdir, cluster, tgt, run, "r0")
    assert rc == 0, p.describe()
    cluster.sql("DELETE FROM acct WHERE id = 2", dbname=tgt)  # a write outside replay

    cluster.sql("INSERT INTO journal VALUES (1)", dbname=src)
    cluster.sql("BEGIN; INSERT INTO journal VALUES (2); UPDATE acct SET v = 'x' WHERE id = 2; "
                "COMMIT", dbname=src)
    cluster.sql("BEGIN; INSERT INTO journal VALUES (3); DELETE FROM acct WHERE id = 2; COMMIT",
                dbname=src)
    captured_up_to_now(cluster, run)
    evs = run.events()
    upd = [e for e in evs if e["op"] == "u"][0]

    def journal():
        return [r[0] for r in cluster.sql("SELECT id FROM journal ORDER BY id", dbname=tgt)]

    p, rc = replay(workdir, cluster, tgt, run, "r1")
    assert rc == 1, p.describe()
    errs = p.error_lines()
    assert len(errs) == 1, p.describe()
    msg = harness.parse_logfmt(errs[0])["msg"]
    assert "public.acct" in msg and lsn_format(upd["source"]["lsn"]) in msg, msg
    assert "replay.missing_rows=warn" in msg, msg
    assert journal() == [1], journal()

    p, rc = replay(workdir, cluster, tgt, run, "r2", opts={"replay.missing_rows": "warn"})
    assert rc == 0, p.describe()
    warns = p.lines_at("warn")
    assert len(warns) == 2, p.describe()
    assert "update of public.acct" in warns[0] and "delete from public.acct" in warns[1], warns
    assert journal() == [1, 2, 3], journal()
    run.stop()


def test_resume_inside_a_snapshot_that_spans_segments(cluster, dbs, make_pgcdc, workdir):
    """The snapshot writes one sink transaction per table, all at the slot's point, and a
    segment can close between two tables: replay's one snapshot transaction then spans
    segments. Resuming in it (partial_events = the first table's rows) must still read the
    first table's segment to count them, not pass it over as wholly applied."""
    src, tgt = dbs
    cluster.sql("CREATE TABLE sa (id int PRIMARY KEY, pad text); "
                "CREATE TABLE sb (id int PRIMARY KEY, pad text); "
                "INSERT INTO sa SELECT g, repeat('a', 200) FROM generate_series(1, 300) g; "
                "INSERT INTO sb SELECT g, repeat('b', 200) FROM generate_series(1, 300) g",
                dbname=src)
    ch.copy_schema(cluster, src, tgt)
    run = ch.start_capture(make_pgcdc, cluster, src, **{"sink.file.segment_bytes": "4096"})
    captured_up_to_now(cluster, run)
    run.stop()
    snap = [e for e in harness.read_events(run.data_dir) if e["op"] == "r"]
    first = snap[0]["source"]["table"]
    point = snap[0]["source"]["commit_lsn"]
    at_point = [s.name for s in harness.list_segments(run.data_dir)
                if s.first_commit_lsn == point]
    assert len(at_point) >= 2, "the snapshot should span segments: %r" % at_point
    p, rc = replay(workdir, cluster, tgt, run, "full")
    assert rc == 0, p.describe()

    # As if replay had been killed right after committing the first table's rows.
    n_first = sum(1 for e in snap if e["source"]["table"] == first)
    second = "sb" if first == "sa" else "sa"
    cluster.sql("DELETE FROM %s; UPDATE pgcdc.replay_position SET commit_lsn = '%s', "
                "partial_events = %d" % (second, lsn_format(snap[0]["source"]["commit_lsn"]),
                                         n_first), dbname=tgt)
    p, rc = replay(workdir, cluster, tgt, run, "resumed")
    assert rc == 0, p.describe()
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 0, (lines, err)
