"""Snapshots resumed table by table (issue: snapshots at real-database scale): kill -9 at
random moments of a multi-table initial snapshot under concurrent writes keeps the slot and
the finished tables, and the rest are taken at a new point with no gap and no overlap; a
table added to source.tables.include on a restart gets its existing rows once as `r`, at
its own point, and none of its changes from before that point. With a small
sink.file.segment_bytes a table's snapshot rotates through several segments, yet after
each kill no reader sees part of a table, and no closed segment is taken back."""

import os
import random
import re
import time

import fidelity_harness as fh
import harness as h

ROWS = int(os.environ.get("PGCDC_IT_RESUME_ROWS", "80000"))
KILLS = int(os.environ.get("PGCDC_IT_RESUME_KILLS", "10"))
NARROW = "CREATE TABLE {t} (id bigint PRIMARY KEY, v bigint NOT NULL, note text)"


def _fill(cluster, table, n):
    cluster.sql(NARROW.format(t=table))
    cluster.sql("INSERT INTO %s SELECT g, 0, 'r' FROM generate_series(1, %d) g" % (table, n))
    cluster.sql("VACUUM ANALYZE %s" % table)


_SRC = re.compile(rb'"table":"([^"]*)","txId":\d+,"lsn":(\d+),"commit_lsn":(\d+)')


def _positions(d):
    """(table, commit_lsn, lsn) of every event line in file order."""
    out = []
    for seg in h.list_segments(d):
        with open(seg.path, "rb") as f:
            for line in f:
                m = _SRC.search(line, line.rfind(b'"source":'))
                out.append((m.group(1).decode(), int(m.group(3)), int(m.group(2))))
    return out


def _fold_equals_table(cluster, events, table, positions):
    """Per key, the events in file order (which is (commit_lsn, lsn) order), strictly
    applied (no overlap, no gap), give the table's content; each key has at most one `r`."""
    label = "public." + table
    mine = [e for e in events if e.table == label]
    keys = [(c, l) for t, c, l in positions if t == table]
    assert keys == sorted(keys), "%s's events are not in (commit_lsn, lsn) order" % table
    r_ids = [e["after"]["id"] for e in mine if e["op"] == "r"]
    assert len(r_ids) == len(set(r_ids)), "%s: a key has two `r` events" % table
    state, counts = fh.apply_events(events, tables={label})
    got = {k[1][0]: v for k, v in state.items()}
    want = fh.table_rows(cluster, table)
    assert got == want, "%s rebuilt from the events differs from the table: %d vs %d rows" % (
        table, len(got), len(want))
    return counts


def _visible(d):
    """What a reader may read right after a crash (replay, a warehouse): the closed
    segments, and the open one up to .pgcdc-position's offset. Checks that each table's
    snapshot rows there end with its last row (no part of a table a crash could take back).
    Returns ({closed segment: size}, {table: closed segments holding its snapshot rows})."""
    pos = {}
    try:
        with open(os.path.join(d, ".pgcdc-position")) as f:
            pos = dict(l.strip().split("=", 1) for l in f if "=" in l)
    except FileNotFoundError:
        pass
    closed, spans, started, ended = {}, {}, set(), set()
    if not os.path.isdir(d):
        return closed, spans  # killed before the sink made its directory
    for n in sorted(os.listdir(d)):
        with open(os.path.join(d, n), "rb") as f:
            if n.endswith(".jsonl"):
                data = f.read()
                closed[n] = len(data)
            elif n == pos.get("segment"):
                data = f.read(int(pos["offset"]))
            else:
                continue  # part segments, and the open one past the position
        for line in data.splitlines():
            if not line.endswith(b'"op":"r"}') and b'"op":"r",' not in line:
                continue
            t = _SRC.search(line, line.rfind(b'"source":')).group(1).decode()
            started.add(t)
            ended.update([t] if b'"snapshot":"last"' in line else [])
            spans.setdefault(t, set()).update([n] if n.endswith(".jsonl") else [])
    assert started <= ended, "a reader sees part of a table's snapshot: %r" % (started - ended)
    return closed, spans


def _state_pending(p):
    try:
        with open(os.path.join(p.state_dir, "snapshot")) as f:
            return [l for l in f if l.startswith("table=pending")]
    except FileNotFoundError:
        return None


def test_kill9_during_multi_table_snapshot_resumes_table_by_table(cluster, make_pgcdc, name):
    tables = ["%s_t%d" % (name, i) for i in range(6)]
    for t in tables:
        _fill(cluster, t, ROWS)
    churns = [fh.Churn(cluster, t, max_id=ROWS, next_id=10 ** 9, seed=i, pause=0.002)
              for i, t in enumerate(tables[:3])]
    rng = random.Random(int(os.environ.get("PGCDC_IT_SEED", str(int(time.time())))))
    logs, seen = [], {}
    settings = {"snapshot.mode": "initial", "source.tables.include": "public.%s_t*" % name,
                "sink.file.segment_bytes": "1048576"}
    # The server's readers run a fifth of the time while kills land, so on any machine
    # the snapshot spans several runs and tables finish between kills.
    throttle = h.BackendThrottle(cluster, name, run_s=0.004, period_s=0.02)
    try:
        for c in churns:
            c.start()
        throttle.start()
        kills, left = 0, []
        def left_now():
            pending = _state_pending(p)
            return len(tables) if pending is None else len(pending)

        for attempt in range(KILLS * 3):
            p = make_pgcdc(settings=settings)
            p.start()
            if attempt > 0 and left_now() == 0:
                break  # every table done: the next run only streams
            if attempt % 3 == 2:  # every third run dies in the tables after the next done
                before = left_now()
                h.wait_until(lambda: left_now() < before or not p.alive(), 120,
                             what="a table's snapshot done")
            time.sleep(rng.uniform(0.02, 0.2))
            if kills >= KILLS or not p.alive() or left_now() == 0:
                break
            assert p.kill9() == -9, p.describe()
            seen.update(_visible(p.data_dir)[0])
            logs.append(p.stderr())
            left.append(left_now())
            kills += 1
        throttle.stop()
        print("tables left at each kill: %r" % left)
        assert kills >= 3, "only %d kills landed during the snapshot" % kills
        assert left[-1] < len(tables), "no table was done before a kill: %r" % left
        h.wait_until(lambda: _state_pending(p) == [], 120, what="every table's snapshot done")
        time.sleep(0.5)
    finally:
        throttle.stop()
        for c in churns:
            c.stop()
    fh.finish(cluster, p, name)
    logs.append(p.stderr())
    events = fh.read_events_fast(p.data_dir)
    h.check_segment_files(p.data_dir, strict=False)
    closed, spans = _visible(p.data_dir)
    taken_back = {n: z for n, z in seen.items() if closed.get(n) != z}
    assert not taken_back, "closed segments changed after a crash: %r" % taken_back
    assert max(len(v) for v in spans.values()) >= 3, \
        "no table's snapshot rotated through segments: %r" % spans
    positions = _positions(p.data_dir)
    assert [c for _, c, _ in positions] == sorted(c for _, c, _ in positions), \
        "commit order does not hold in the output"
    for t in tables:
        _fold_equals_table(cluster, events, t, positions)
    done = {}
    for log in logs:
        for m in re.finditer(r'msg="snapshot table done" schema=public table=(\S+)', log):
            done[m.group(1)] = done.get(m.group(1), 0) + 1
    assert done == {t: 1 for t in tables}, "tables read to the end, per table: %r" % done
    print("kills %d; events %d" % (kills, len(events)))


def test_table_added_later_gets_its_rows_at_its_own_point(cluster, make_pgcdc, name):
    a, b = name + "_a", name + "_b"
    _fill(cluster, a, 1000)
    _fill(cluster, b, 5000)
    p = make_pgcdc(settings={"snapshot.mode": "initial", "source.tables.include": "public." + a})
    p.start()
    cluster.sql("UPDATE %s SET v = 1 WHERE id <= 10" % b)  # not selected yet: never emitted
    cluster.sql("UPDATE %s SET v = 1 WHERE id <= 10" % a)
    fh.finish(cluster, p, name)
    churn = fh.Churn(cluster, b, max_id=5000, next_id=10 ** 9, pause=0.002)
    churn.start()
    try:
        h.wait_until(lambda: churn.commits >= 10, 30, what="the writer")
        p2 = make_pgcdc(settings={"snapshot.mode": "initial",
                                  "source.tables.include": "public.%s,public.%s" % (a, b)})
        p2.start()
        p2.wait_log(r"snapshot table done.*table=%s" % b, 60)
        time.sleep(0.5)
    finally:
        churn.stop()
    fh.finish(cluster, p2, name)
    events = h.read_events(p2.data_dir)
    mine = [e for e in events if e.table == "public." + b]
    snap = [e for e in mine if e["op"] == "r"]
    assert snap, "the added table's rows were not snapshotted"
    point = snap[0]["source"]["commit_lsn"]
    assert all(e["source"]["commit_lsn"] == point for e in snap)
    assert snap[-1]["source"]["snapshot"] == "last"
    before = [e for e in mine if e["op"] != "r" and e["source"]["commit_lsn"] <= point]
    assert not before, "changes of the added table before its point: %s" % before[0].raw
    assert mine[:len(snap)] == snap, "the added table's first events are not its snapshot"
    positions = _positions(p2.data_dir)
    _fold_equals_table(cluster, events, a, positions)
    _fold_equals_table(cluster, events, b, positions)
    # The snapshot sits in the stream at its point: after every event committed before it.
    idx = events.index(snap[0])
    assert all(e["source"]["commit_lsn"] <= point for e in events[:idx])
    assert all(e["source"]["commit_lsn"] >= point for e in events[idx:])


def test_check_warns_when_no_slot_is_left_for_a_later_snapshot(cluster, make_pgcdc, name):
    import ops_harness as oh
    free = int(cluster.scalar("SELECT current_setting('max_replication_slots')::int - count(*) "
                              "FROM pg_replication_slots"))
    fillers = ["%s_f%d" % (name, i) for i in range(free - 1)]
    try:
        for f in fillers:
            cluster.sql("SELECT pg_create_physical_replication_slot(%s)", (f,))
        rc, results, p = oh.run_check(make_pgcdc)
        warn = oh.check_lines_of(results, "WARN", "slots")
        assert warn and "temporary slot" in warn[0][2], oh.describe_check(p)
        sig = oh.check_lines_of(results, "PASS", "signal")
        assert sig and "does not exist" in sig[0][2], oh.describe_check(p)
    finally:
        for f in fillers:
            cluster.sql("SELECT pg_drop_replication_slot(%s)", (f,))


SIGNAL_DDL = ("CREATE SCHEMA IF NOT EXISTS pgcdc; CREATE TABLE IF NOT EXISTS pgcdc.signal ("
              "id bigserial PRIMARY KEY, type text NOT NULL DEFAULT 'snapshot', tables text[] "
              "NOT NULL, requested_at timestamptz NOT NULL DEFAULT now(), requested_by name "
              "NOT NULL DEFAULT current_user)")


def _fold_upsert(events, label):
    """A re-snapshot's `r` rows come on top of the table's changes: apply r/c/u as upserts."""
    state = {}
    for e in events:
        if e.table != label:
            continue
        if e["op"] in "rcu":
            old = e["before"]
            if e["op"] == "u" and old and old["id"] != e["after"]["id"]:
                state.pop(old["id"], None)
            row = dict(state.get(e["after"]["id"], {}))
            row.update(e["after"])
            state[e["after"]["id"]] = row
        elif e["op"] == "d":
            state.pop(e["before"]["id"], None)
    return state


def test_snapshot_on_demand_while_streaming_under_writes(cluster, make_pgcdc, name):
    table = name + "_od"
    rows = int(os.environ.get("PGCDC_IT_ONDEMAND_ROWS", "800000"))
    _fill(cluster, table, rows)
    cluster.sql(SIGNAL_DDL)
    # One reader: the re-snapshot must outlast wal_sender_timeout by a clear margin.
    p = make_pgcdc(settings={"snapshot.mode": "initial", "source.tables.include": "public." + table,
                             "status.interval_ms": "100", "snapshot.workers": "1"})
    p.start()
    p.wait_log(r"snapshot complete", 120)
    # The snapshot below lasts longer than this: the stream must keep its connection.
    cluster.sql("ALTER SYSTEM SET wal_sender_timeout = '200ms'")
    cluster.sql("SELECT pg_reload_conf()")
    churn = fh.Churn(cluster, table, max_id=rows, next_id=10 ** 9, pause=0.002)
    try:
        churn.start()
        h.wait_until(lambda: churn.commits >= 20, 30, what="the writer")
        req = make_pgcdc(args=["snapshot", "--table", "public." + table], sub="req")
        assert req.run(timeout=30) == 0, req.describe()
        lsn = h.lsn_parse(req.stdout_lines[-1].strip())
        p.wait_log(r"snapshot requested through pgcdc.signal", 30)
        p.wait_log(r"snapshot of the owed tables done", 120)
        time.sleep(0.5)
    finally:
        churn.stop()
        cluster.sql("ALTER SYSTEM RESET wal_sender_timeout")
        cluster.sql("SELECT pg_reload_conf()")
    fh.finish(cluster, p, name)
    assert not p.error_lines(), p.describe()
    assert "stream interrupted" not in p.stderr(), "the stream lost its connection:\n" + p.describe()
    events = fh.read_events_fast(p.data_dir)
    label = "public." + table
    r = [e for e in events if e.table == label and e["op"] == "r"]
    assert len(r) >= 2 * rows - rows // 2, "the re-snapshot emitted %d rows in all" % len(r)
    got = _fold_upsert(events, label)
    want = fh.table_rows(cluster, table)
    assert got == want, "the fold differs from the table: %d vs %d rows" % (len(got), len(want))
    positions = _positions(p.data_dir)
    assert [c for _, c, _ in positions] == sorted(c for _, c, _ in positions)
    done = re.findall(r'msg="snapshot table done" schema=public table=%s rows=\d+ ms=(\d+) '
                      r'point=(\S+)' % table, p.stderr())
    assert len(done) == 2 and h.lsn_parse(done[1][1]) > lsn, (
        "the re-snapshot's point %r is not after the request at %s" % (done, lsn))
    # Longer than wal_sender_timeout: the standby status sent meanwhile kept the stream.
    assert int(done[1][0]) > 200, "the re-snapshot took only %s ms" % done[1][0]
    print("re-snapshot: %s ms" % done[1][0])


def test_snapshot_request_bad_input(cluster, make_pgcdc, name):
    cluster.sql(NARROW.format(t=name + "_x"))
    cases = [("public.%s_nope" % name, "no such table"),
             ("public.%s_x" % name, "left out by source.tables.include")]
    for table, want in cases:
        p = make_pgcdc(args=["snapshot", "--table", table], sub="bad",
                       settings={"source.tables.include": "public.other"})
        assert p.run(timeout=30) == 2, p.describe()
        assert table in p.stderr() and want in p.stderr(), p.describe()
    p = make_pgcdc(args=["snapshot"], sub="bad")
    assert p.run(timeout=30) == 2 and "--table" in p.stderr(), p.describe()
