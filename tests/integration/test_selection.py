"""Table selection, keyless tables, REPLICA IDENTITY FULL, DDL while streaming, and
partitioned tables (issue 4)."""

import time

import pytest

import fidelity_harness as fh
import harness as h


def _prefix(name):
    """A short unique prefix for this test's tables (names stay well under 63 bytes)."""
    return "t" + name[-6:]


def _tables(events, ops):
    return {e.table for e in events if e["op"] in ops}


# --------------------------------------------------------------------------------------
# include / exclude


SEL_CASES = {
    # Patterns that wal2json's own add-tables/filter-tables cannot express (`orders_*`):
    # pgcdc filters alone.
    "pgcdc_filter": ("public.{p}_orders_*, {p}_audit.*", "public.{p}_orders_tmp",
                     ["public.{p}_orders_", "public.{p}_orders_a", "public.{p}_orders_b",
                      "{p}_audit.log", "{p}_audit.orders_x", "public.{p}_orders_late",
                      "{p}_audit.late"]),
    # Patterns that fit wal2json's syntax: also passed to the server as add/filter-tables.
    "server_filter": ("{p}_audit.*,public.{p}_orders_a", "{p}_audit.orders_x",
                      ["public.{p}_orders_a", "{p}_audit.log", "{p}_audit.late"]),
}


@pytest.mark.parametrize("case", sorted(SEL_CASES))
def test_include_exclude_wildcards_snapshot_and_stream(cluster, make_pgcdc, name, case):
    p_ = _prefix(name)
    inc, exc, expected = [x.format(p=p_) if isinstance(x, str) else [y.format(p=p_) for y in x]
                          for x in SEL_CASES[case]]
    all_tables = ["public.%s_orders_a" % p_, "public.%s_orders_b" % p_, "public.%s_orders_" % p_,
                  "public.%s_orders_tmp" % p_, "public.%s_ordersx" % p_, "public.%s_other" % p_,
                  "%s_audit.log" % p_, "%s_audit.orders_x" % p_, "%s_audit2.log" % p_]
    cluster.sql("CREATE SCHEMA %s_audit; CREATE SCHEMA %s_audit2" % (p_, p_))
    for t in all_tables:
        cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, v text); "
                    "INSERT INTO %s VALUES (1, 'a'), (2, 'b')" % (t, t))
    p = make_pgcdc(settings={"snapshot.mode": "initial", "source.tables.include": inc,
                             "source.tables.exclude": exc})
    p.start()
    fh.wait_snapshot_last(p, timeout=60)
    late = ["public.%s_orders_late" % p_, "%s_audit.late" % p_, "public.%s_late_other" % p_]
    for t in late:
        cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, v text); "
                    "INSERT INTO %s VALUES (1, 'a'), (2, 'b')" % (t, t))
    for t in all_tables + late:
        cluster.sql("INSERT INTO %s VALUES (3, 'c'); UPDATE %s SET v = 'u' WHERE id = 1; "
                    "DELETE FROM %s WHERE id = 2" % (t, t, t))
    fh.finish(cluster, p, name)
    events = p.events()
    snap_expected = {t for t in expected if t not in late}
    assert _tables(events, "r") == snap_expected
    for op in "cud":
        assert _tables(events, op) == set(expected), op
    assert len(events) == 5 * len(expected)
    assert not p.error_lines(), p.describe()


def test_listed_table_missing_is_a_config_error(cluster, make_pgcdc, name):
    p_ = _prefix(name)
    cluster.sql("CREATE TABLE %s_there (id int PRIMARY KEY)" % p_)
    for mode in ("initial", "never"):
        p = make_pgcdc(settings={
            "snapshot.mode": mode,
            "source.tables.include": "public.%s_there,public.%s_missing" % (p_, p_)}, sub=mode)
        rc = p.run(timeout=30)
        assert rc == 2, p.describe()
        err = p.stderr()
        assert "public.%s_missing" % p_ in err, err
        assert "%s_there" % p_ not in err.replace("public.%s_there," % p_, ""), err
        assert cluster.slot(name) is None, "a slot was created before the configuration error"
    # A pattern with a wildcard that matches nothing is not an error.
    p = make_pgcdc(settings={"snapshot.mode": "initial",
                             "source.tables.include": "public.%s_there,public.%s_nomatch_*" % (
                                 p_, p_)}, sub="ok")
    rc = p.run(["--end-lsn", h.lsn_format(cluster.current_lsn())], timeout=30)
    assert rc == 0, p.describe()


# --------------------------------------------------------------------------------------
# keyless tables, replica identity


def test_keyless_table_warned_and_inserts_captured(cluster, make_pgcdc, name):
    p_ = _prefix(name)
    cluster.sql("""
        CREATE TABLE {p}_nokey (a int, b text);
        CREATE TABLE {p}_nothing (id int PRIMARY KEY, b text);
        ALTER TABLE {p}_nothing REPLICA IDENTITY NOTHING;
        CREATE TABLE {p}_full (a int, b text);
        ALTER TABLE {p}_full REPLICA IDENTITY FULL;
        CREATE TABLE {p}_keyed (id int PRIMARY KEY, b text);
        INSERT INTO {p}_nokey VALUES (1, 'before');
    """.format(p=p_))
    p = make_pgcdc(settings={"snapshot.mode": "initial", "source.tables.include": "public.%s_*" % p_})
    p.start()
    warn = p.wait_log(lambda l: h.log_level(l) == "warn" and "%s_nokey" % p_ in l, timeout=30)
    assert "public.%s_nokey" % p_ in warn and "public.%s_nothing" % p_ in warn, warn
    assert "%s_full" % p_ not in warn and "%s_keyed" % p_ not in warn, warn
    fh.wait_snapshot_last(p, timeout=60)
    cluster.sql("INSERT INTO {p}_nokey VALUES (2, 'x'), (3, NULL)".format(p=p_))
    cluster.sql("UPDATE {p}_nokey SET b = 'y' WHERE a = 2".format(p=p_))  # cannot be captured
    cluster.sql("DELETE FROM {p}_nokey WHERE a = 3".format(p=p_))
    cluster.sql("INSERT INTO {p}_keyed VALUES (1, 'after the skipped ones')".format(p=p_))
    fh.finish(cluster, p, name)
    evs = [(e.table, e["op"], e["after"]) for e in p.events()]
    nk = "public.%s_nokey" % p_
    assert evs == [(nk, "r", {"a": 1, "b": "before"}), (nk, "c", {"a": 2, "b": "x"}),
                   (nk, "c", {"a": 3, "b": None}),
                   ("public.%s_keyed" % p_, "c", {"id": 1, "b": "after the skipped ones"})], evs
    assert not p.error_lines(), p.describe()


def test_replica_identity_full_before(cluster, make_pgcdc, name):
    p_ = _prefix(name)
    t = p_ + "_full"
    cluster.sql("""
        CREATE TABLE {t} (id int PRIMARY KEY, name text, price numeric, f float8, ok bool,
                          tags text[], note text, big text);
        ALTER TABLE {t} ALTER COLUMN big SET STORAGE EXTERNAL;
        ALTER TABLE {t} REPLICA IDENTITY FULL;
    """.format(t=t))
    p = make_pgcdc(settings={"source.tables.include": "public." + t})
    p.start()
    cluster.wait_slot_active(name)
    cluster.sql("INSERT INTO {t} VALUES (1, 'widget', 9.90, 0.1, true, '{{a,\"b c\"}}', NULL, "
                "repeat('z', 5000)), (2, 'gadget', 19.90, -0.5, false, NULL, 'x', 'small')".format(t=t))
    kinds = fh.column_kinds(cluster, t)
    old1 = fh.source_texts(cluster, t)[1]
    cluster.sql("UPDATE %s SET price = 10.50, note = 'n' WHERE id = 1" % t)
    old2 = fh.source_texts(cluster, t)[2]
    cluster.sql("DELETE FROM %s WHERE id = 2" % t)
    cluster.sql("UPDATE %s SET id = 3 WHERE id = 1" % t)  # key change: before has the old key
    fh.finish(cluster, p, name)
    evs = p.events()
    assert [e["op"] for e in evs] == ["c", "c", "u", "d", "u"], [e.raw[:200] for e in evs]
    u, d, k = evs[2], evs[3], evs[4]
    assert not fh.compare_row(u["before"], old1, kinds), fh.compare_row(u["before"], old1, kinds)
    assert u["after"]["price"] == "10.50" and u["after"]["note"] == "n"
    assert "big" not in u["after"], "unchanged TOASTed value must be absent from after"
    assert not fh.compare_row(d["before"], old2, kinds), fh.compare_row(d["before"], old2, kinds)
    assert d["after"] is None
    assert k["before"]["id"] == 1 and k["after"]["id"] == 3 and k["before"]["big"] == "z" * 5000


# --------------------------------------------------------------------------------------
# DDL while streaming


def test_ddl_mid_stream(cluster, make_pgcdc, name):
    p_ = _prefix(name)
    t, t2 = p_ + "_ddl", p_ + "_ddl_new"
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, a int, b text, n int)" % t)
    p = make_pgcdc(settings={"source.tables.include": "public.%s_ddl*" % p_})
    p.start()
    cluster.wait_slot_active(name)
    steps = [
        "INSERT INTO {t} VALUES (1, 10, 'x', 5)",
        "ALTER TABLE {t} ADD COLUMN c text DEFAULT 'dflt'",
        "INSERT INTO {t} VALUES (2, 20, 'y', 6, 'cc')",
        "UPDATE {t} SET b = 'x2' WHERE id = 1",
        "ALTER TABLE {t} DROP COLUMN a",
        "INSERT INTO {t} VALUES (3, 'z', 7, 'c3')",
        "ALTER TABLE {t} RENAME COLUMN b TO bb",
        "INSERT INTO {t} (id, bb, n) VALUES (4, 'w', 8)",
        "ALTER TABLE {t} ALTER COLUMN n TYPE bigint",
        "INSERT INTO {t} (id, n) VALUES (5, 9007199254740993)",
        "ALTER TABLE {t} ALTER COLUMN n TYPE numeric USING n::numeric",
        "INSERT INTO {t} (id, n) VALUES (6, 1.50)",
        "BEGIN; ALTER TABLE {t} ADD COLUMN d int; INSERT INTO {t} (id, d) VALUES (7, 1); "
        "UPDATE {t} SET d = 2 WHERE id = 7; COMMIT",
        "CREATE TABLE {t2} (id int PRIMARY KEY, v text)",
        "INSERT INTO {t2} VALUES (1, 'new'), (2, 'new2')",
        "UPDATE {t2} SET v = 'upd' WHERE id = 1",
        "DROP TABLE {t2}",
        "INSERT INTO {t} (id, bb) VALUES (8, 'after drop')",
        "DELETE FROM {t} WHERE id = 2",
    ]
    for s in steps:
        cluster.sql(s.format(t=t, t2=t2))
        p.assert_alive("after: " + s)
    fh.finish(cluster, p, name)
    T, T2 = "public." + t, "public." + t2
    want = [
        (T, "c", {"id": 1, "a": 10, "b": "x", "n": 5}),
        (T, "c", {"id": 2, "a": 20, "b": "y", "n": 6, "c": "cc"}),
        (T, "u", {"id": 1, "a": 10, "b": "x2", "n": 5, "c": "dflt"}),
        (T, "c", {"id": 3, "b": "z", "n": 7, "c": "c3"}),
        (T, "c", {"id": 4, "bb": "w", "n": 8, "c": "dflt"}),
        (T, "c", {"id": 5, "bb": None, "n": 9007199254740993, "c": "dflt"}),
        (T, "c", {"id": 6, "bb": None, "n": "1.50", "c": "dflt"}),
        (T, "c", {"id": 7, "bb": None, "n": None, "c": "dflt", "d": 1}),
        (T, "u", {"id": 7, "bb": None, "n": None, "c": "dflt", "d": 2}),
        (T2, "c", {"id": 1, "v": "new"}),
        (T2, "c", {"id": 2, "v": "new2"}),
        (T2, "u", {"id": 1, "v": "upd"}),
        (T, "c", {"id": 8, "bb": "after drop", "n": None, "c": "dflt", "d": None}),
        (T, "d", None),
    ]
    events = p.events()
    got = [(e.table, e["op"], e["after"]) for e in events]
    assert got == want, "\n".join("%r" % (g,) for g in got)
    assert events[-1]["before"] == {"id": 2}
    assert not p.error_lines(), p.describe()


# --------------------------------------------------------------------------------------
# partitions


PART_CASES = {
    "leaf_names": (False, "public.{p}_meas*"),
    "as_root": (True, "public.{p}_meas*"),
    "as_root_include_root": (True, "public.{p}_meas"),
}


@pytest.mark.parametrize("case", sorted(PART_CASES))
def test_partitioned_table(cluster, make_pgcdc, name, case):
    as_root, inc = PART_CASES[case]
    p_ = _prefix(name)
    root = p_ + "_meas"
    inc = inc.format(p=p_)
    cluster.sql("""
        CREATE TABLE {r} (id int, region text, v int, PRIMARY KEY (id, region))
            PARTITION BY LIST (region);
        CREATE TABLE {r}_eu PARTITION OF {r} FOR VALUES IN ('eu');
        CREATE TABLE {r}_us PARTITION OF {r} FOR VALUES IN ('us');
        CREATE TABLE {r}_ap PARTITION OF {r} FOR VALUES IN ('ap') PARTITION BY RANGE (id);
        CREATE TABLE {r}_ap1 PARTITION OF {r}_ap FOR VALUES FROM (0) TO (1000000);
        INSERT INTO {r} VALUES (1, 'eu', 1), (2, 'us', 2), (3, 'ap', 3), (6, 'us', 6);
    """.format(r=root))
    opts = {"source.partitions_as_root": "true"} if as_root else None
    p = make_pgcdc(settings={"snapshot.mode": "initial", "source.tables.include": inc}, opts=opts)
    p.start()
    fh.wait_snapshot_last(p, timeout=60)
    cluster.sql("INSERT INTO {r} VALUES (4, 'eu', 4), (5, 'ap', 5)".format(r=root))
    cluster.sql("UPDATE {r} SET v = 10 WHERE id = 1".format(r=root))
    cluster.sql("UPDATE {r} SET region = 'eu' WHERE id = 2".format(r=root))  # moves partition
    cluster.sql("DELETE FROM {r} WHERE id = 3".format(r=root))
    # A partition created while streaming, and one detached while streaming (from then on
    # an ordinary table under its own name, selected only if the patterns select it).
    cluster.sql("CREATE TABLE {r}_sa PARTITION OF {r} FOR VALUES IN ('sa'); "
                "INSERT INTO {r} VALUES (7, 'sa', 7)".format(r=root))
    # pgcdc learns of a detach by looking the root up again (every 5 s, README): wal2json
    # names only the leaf, and nothing in the stream says the partition left its tree.
    cluster.sql("ALTER TABLE {r} DETACH PARTITION {r}_us".format(r=root))
    time.sleep(5.5)
    cluster.sql("INSERT INTO {r}_us VALUES (8, 'us', 8)".format(r=root))
    fh.finish(cluster, p, name)
    events = p.events()
    got = [(e.table, e["op"], (e["after"] or e["before"])["id"]) for e in events]
    leaf = {"eu": "public.%s_eu" % root, "us": "public.%s_us" % root, "ap": "public.%s_ap1" % root,
            "sa": "public.%s_sa" % root}
    R = "public." + root

    def n(region):
        return R if as_root else leaf[region]
    snap = sorted(g for g in got if g[1] == "r")
    want_snap = sorted([(n("eu"), "r", 1), (n("us"), "r", 2), (n("ap"), "r", 3), (n("us"), "r", 6)])
    assert snap == want_snap, got
    want_stream = [(n("eu"), "c", 4), (n("ap"), "c", 5), (n("eu"), "u", 1),
                   (n("us"), "d", 2), (n("eu"), "c", 2), (n("ap"), "d", 3), (n("sa"), "c", 7)]
    detached_selected = inc.endswith("*")
    if detached_selected:
        want_stream.append((leaf["us"], "c", 8))
    assert got[len(snap):] == want_stream, got
    # Every row exactly once: rebuilt by (id, region), equal to the tables' content.
    state, _ = fh.apply_events(events, key_cols=("id", "region"))
    rebuilt = sorted((k[1], v["v"]) for k, v in state.items())
    rows = sorted(((i, r), v) for i, r, v in cluster.sql(
        "SELECT id, region, v FROM {r} UNION ALL SELECT id, region, v FROM {r}_us".format(r=root))
        if detached_selected or i != 8)
    assert rebuilt == rows
    assert not p.error_lines(), p.describe()


@pytest.mark.xfail(strict=True, reason="documented limitation (README): wal2json 2.5 names only "
                   "the leaf, and pgcdc can only ask the current catalog for its root; a "
                   "partition dropped before pgcdc reads its changes is reported under its own "
                   "name, with a warning")
def test_partition_detached_before_its_changes_are_decoded(cluster, make_pgcdc, name):
    """Rows committed while a partition belonged to the root, decoded only after it was
    detached and dropped (pgcdc was down, or lagging): with source.partitions_as_root they
    belong to the root and must not be lost. (Looking the root up in the current catalog
    at decoding time finds no such table any more.)"""
    p_ = _prefix(name)
    root = p_ + "_pm"
    cluster.sql("""
        CREATE TABLE {r} (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
        CREATE TABLE {r}_old PARTITION OF {r} FOR VALUES IN ('old');
        CREATE TABLE {r}_new PARTITION OF {r} FOR VALUES IN ('new');
    """.format(r=root))
    p = make_pgcdc(settings={"source.tables.include": "public." + root},
                   opts={"source.partitions_as_root": "true"})
    p.start()
    cluster.wait_slot_active(name)
    cluster.sql("INSERT INTO {r} VALUES (1, 'new')".format(r=root))
    fh.finish(cluster, p, name)
    cluster.sql("INSERT INTO {r} VALUES (2, 'old'), (3, 'new')".format(r=root))
    cluster.sql("ALTER TABLE {r} DETACH PARTITION {r}_old; DROP TABLE {r}_old".format(r=root))
    p.start()
    fh.finish(cluster, p, name)
    got = [(e.table, e["op"], e["after"]["id"]) for e in p.events()]
    R = "public." + root
    assert got == [(R, "c", 1), (R, "c", 2), (R, "c", 3)], got


def test_odd_names_selected_and_named_alike(cluster, make_pgcdc, name):
    """A schema with a space, a table with a quote and upper case, a column with a quote
    and a non-ASCII letter: selected by a pattern, named identically in snapshot and
    stream events."""
    p_ = _prefix(name)
    sch, tab = "%s My Sch" % p_, 'Ta"b\u00e9 X'
    cluster.sql('CREATE SCHEMA "{s}"; CREATE TABLE "{s}"."{t}" (id int PRIMARY KEY, "v a""l\u00e9" text); '
                'INSERT INTO "{s}"."{t}" VALUES (1, \'snap\')'.format(s=sch, t=tab.replace('"', '""')))
    cluster.sql('CREATE TABLE "{s}".other (id int PRIMARY KEY)'.format(s=sch))
    p = make_pgcdc(settings={"snapshot.mode": "initial", "source.tables.include": "%s.Ta*" % sch})
    p.start()
    fh.wait_snapshot_last(p, timeout=60)
    cluster.sql('INSERT INTO "{s}"."{t}" VALUES (2, \'stream\'); INSERT INTO "{s}".other VALUES (1)'.format(
        s=sch, t=tab.replace('"', '""')))
    fh.finish(cluster, p, name)
    evs = p.events()
    assert [(e["source"]["schema"], e["source"]["table"], e["op"], e["after"]) for e in evs] == [
        (sch, tab, "r", {"id": 1, 'v a"l\u00e9': "snap"}),
        (sch, tab, "c", {"id": 2, 'v a"l\u00e9': "stream"})], [e.raw for e in evs]
