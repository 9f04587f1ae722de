"""`pgcdc verify` in the cases a careful user meets: partitioned tables, tables only the
target has, a --table that names nothing, and target defaults that change text forms.
Two databases on the module's cluster; no capture needed.
"""

import cutover_harness as ch


dbs = ch.dbs_fixture("v")


PARTED = ("CREATE TABLE parted (k int, v text) PARTITION BY RANGE (k); "
          "CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (100); "
          "CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM (100) TO (1000)")
PARTED_ROWS = "INSERT INTO parted SELECT g, 'v' || g FROM generate_series(1, 150) g"


def test_partitioned_table(cluster, dbs):
    """A partitioned table is compared through all its rows: 150 against 0 is a DIFF
    (FROM ONLY on the root read nothing on either side: a MATCH of 0 rows). By default
    verify compares the root and does not list its partitions, so the target may
    partition the same rows differently."""
    src, tgt = dbs
    cluster.sql(PARTED + "; " + PARTED_ROWS, dbname=src)
    cluster.sql(PARTED, dbname=tgt)

    rc, lines, err = ch.verify(cluster, src, tgt, tables=["public.parted"])
    assert rc == 1, (lines, err)
    assert lines == [l for l in lines if l.startswith("DIFF public.parted ")], lines
    assert "source rows=150" in lines[0] and "target rows=0" in lines[0], lines

    # Every table by default: the root, not its leaves.
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 1 and [l.split()[:2] for l in lines] == [["DIFF", "public.parted"]], lines

    # The same rows on a target partitioned otherwise: equal.
    cluster.sql("DROP TABLE parted; CREATE TABLE parted (k int, v text) PARTITION BY LIST "
                "((k % 3)); CREATE TABLE parted_0 PARTITION OF parted FOR VALUES IN (0); "
                "CREATE TABLE parted_r PARTITION OF parted DEFAULT; " + PARTED_ROWS, dbname=tgt)
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 0, (lines, err)
    assert lines == [l for l in lines if l.startswith("MATCH public.parted rows=150 ")], lines
    assert len(lines) == 1, lines


def test_extra_and_unknown_tables(cluster, dbs):
    """A table only the target has is EXTRA (and not a match); a --table on neither side
    is a usage error, exit 2, before anything is compared."""
    src, tgt = dbs
    for db in (src, tgt):
        cluster.sql("CREATE TABLE both_t (id int PRIMARY KEY); INSERT INTO both_t VALUES (1)",
                    dbname=db)
    cluster.sql("CREATE SCHEMA extra; CREATE TABLE extra.only_t (x int)", dbname=tgt)
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 1, (lines, err)
    assert sorted(lines)[0].startswith("EXTRA extra.only_t on target"), lines
    assert [l.split()[:2] for l in lines if not l.startswith("EXTRA")] == \
        [["MATCH", "public.both_t"]], lines
    assert "only on the target" in err, err

    rc, lines, err = ch.verify(cluster, src, tgt, tables=["public.both_t", "public.nosuch"])
    assert rc == 2, (lines, err)
    assert lines == [], lines  # nothing compared
    errs = [l for l in err.splitlines() if "level=error" in l]
    assert len(errs) == 1 and "public.nosuch" in errs[0], err

    # Named on one side only: MISSING, exit 1, as before.
    rc, lines, err = ch.verify(cluster, src, tgt, tables=["extra.only_t"])
    assert rc == 1 and lines == ["MISSING extra.only_t on source"], (lines, err)


def test_pinned_text_forms(cluster, dbs):
    """Databases whose defaults print values differently (search_path for reg* types,
    TimeZone, DateStyle, IntervalStyle) still compare equal: verify pins them."""
    src, tgt = dbs
    ddl = ("CREATE TABLE refs (id int PRIMARY KEY, r regclass, ty regtype, at timestamptz, "
           "d date, iv interval, f float8)")
    data = ("INSERT INTO refs VALUES (1, 'public.refs', 'public.refs', "
            "'2024-02-29 12:34:56.789+00', '2024-02-29', '1 day 02:03:04', 0.1)")
    for db in (src, tgt):
        cluster.sql(ddl + "; " + data, dbname=db)
    cluster.sql('ALTER DATABASE "%s" SET search_path = pg_catalog' % tgt, dbname="postgres")
    cluster.sql("ALTER DATABASE \"%s\" SET TimeZone = 'America/New_York'; "
                "ALTER DATABASE \"%s\" SET DateStyle = 'SQL, DMY'; "
                "ALTER DATABASE \"%s\" SET IntervalStyle = 'sql_standard'" % (tgt, tgt, tgt),
                dbname="postgres")
    rc, lines, err = ch.verify(cluster, src, tgt)
    assert rc == 0, (lines, err)
    assert [l.split()[:2] for l in lines] == [["MATCH", "public.refs"]], lines
