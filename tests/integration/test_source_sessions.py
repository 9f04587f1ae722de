"""Values do not depend on the source's settings or encoding: every source session pins
DateStyle, IntervalStyle, TimeZone and extra_float_digits (timestamptz in UTC), and events
are valid UTF-8 from LATIN1, WIN1252 and SQL_ASCII databases, streamed and snapshot alike.
SQL_ASCII bytes that are not UTF-8 stop pgcdc naming table, column and LSN with nothing
confirmed past them, unless source.invalid_utf8 = replace (U+FFFD, counted and logged)."""

import json
import re
import subprocess
import time

import harness as h
import ops_harness as oh


def _raw_events(p):
    """Every event line of p's segments, decoded as strict UTF-8 (a bad byte fails here)."""
    out = []
    for seg in h.list_segments(p.data_dir):
        with open(seg.path, "rb") as f:
            data = f.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise AssertionError("%s is not valid UTF-8: %s near %r" % (
                seg.name, e, data[max(0, e.start - 40):e.end + 10]))
        out.extend(json.loads(line) for line in text.splitlines() if line)
    return out


def _sql(cluster, db, query, params=None):
    """One statement in db from a UTF-8 client (psycopg2 would take SQL_ASCII for ASCII)."""
    c = cluster.connect(dbname=db)
    try:
        c.set_client_encoding("UTF8")
        with c.cursor() as cur:
            cur.execute(query, params)
    finally:
        c.close()


def _new_db(cluster, db, encoding=None, **settings):
    cluster.sql('DROP DATABASE IF EXISTS "%s"' % db, dbname="postgres")
    enc = (" ENCODING '%s' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" % encoding
           if encoding else "")
    cluster.sql('CREATE DATABASE "%s"%s' % (db, enc), dbname="postgres")
    for k, v in settings.items():
        cluster.sql('ALTER DATABASE "%s" SET %s = %s' % (db, k, v), dbname="postgres")


def _run_to_now(cluster, p, db):
    """Run p until everything committed so far in db is confirmed; returns the exit code."""
    end = cluster.current_lsn()
    return p.run(["--end-lsn", h.lsn_format(end)], timeout=60)


def test_values_ignore_database_settings(cluster, make_pgcdc, name):
    db = "tz_" + name[-6:]
    _new_db(cluster, db, timezone="'Asia/Tokyo'", datestyle="'SQL, DMY'",
            intervalstyle="sql_standard", extra_float_digits="0")
    cluster.sql("CREATE TABLE t (id int PRIMARY KEY, ts timestamptz, d date, iv interval, "
                "f float8)", dbname=db)
    row = "'2024-02-29 12:34:56.789+00', '2024-02-29', '1 day 2 hours', 0.1::float8 + 0.2"
    cluster.sql("INSERT INTO t VALUES (1, %s)" % row, dbname=db)
    # The DSN's own options are kept (log_statement), and pgcdc's win (TimeZone).
    dsn = cluster.dsn(dbname=db, options="'-c log_statement=all -c TimeZone=Asia/Tokyo'")
    p = make_pgcdc(settings={"source.dsn": dsn, "snapshot.mode": "initial"})
    assert _run_to_now(cluster, p, db) == 0, p.describe()
    p.start()
    cluster.sql("INSERT INTO t VALUES (2, %s)" % row, dbname=db)
    h.wait_until(lambda: len(h.read_events(p.data_dir, tolerate_partial=True)) == 2, 30,
                 what="the streamed row")
    assert p.stop() == 0, p.describe()
    log = cluster.log_text()
    for stmt in ("SELECT setting FROM pg_catalog.pg_settings",  # the replication session
                 "COPY "):  # the snapshot session (it reads with COPY)
        assert "@%s LOG:  statement: %s" % (db, stmt) in log, (
            stmt, [l for l in log.splitlines() if "statement" in l][:20])
    evs = _raw_events(p)
    assert [(e["op"], e["after"]["id"]) for e in evs] == [("r", 1), ("c", 2)], evs
    for e in evs:
        a = e["after"]
        assert a["ts"] == "2024-02-29 12:34:56.789+00", (e["op"], a)
        assert a["d"] == "2024-02-29", (e["op"], a)
        assert a["iv"] == "1 day 02:00:00", (e["op"], a)
        assert str(a["f"]) == "0.30000000000000004", (e["op"], a)


def test_events_are_utf8_from_other_encodings(cluster, make_pgcdc, name):
    cases = [("LATIN1", "éß"), ("WIN1252", "é€ß"), ("SQL_ASCII", "é€ß")]
    for i, (enc, text) in enumerate(cases):
        db = "%s_%s" % (enc.lower(), name[-6:])
        _new_db(cluster, db, enc)
        _sql(cluster, db, 'CREATE TABLE "tbl_%s" (id int PRIMARY KEY, "naïve" text)' % text[0])
        _sql(cluster, db, 'INSERT INTO "tbl_%s" VALUES (1, %%s)' % text[0], (text,))
        p = make_pgcdc(settings={"source.dsn": cluster.dsn(dbname=db), "snapshot.mode": "initial",
                                 "source.slot": "%s_%d" % (name, i)}, sub=enc)
        assert _run_to_now(cluster, p, db) == 0, p.describe()
        _sql(cluster, db, 'INSERT INTO "tbl_%s" VALUES (2, %%s)' % text[0], (text + "!",))
        assert _run_to_now(cluster, p, db) == 0, p.describe()
        evs = _raw_events(p)
        got = [(e["op"], e["source"]["table"], e["after"]) for e in evs]
        want = [("r", "tbl_" + text[0], {"id": 1, "naïve": text}),
                ("c", "tbl_" + text[0], {"id": 2, "naïve": text + "!"})]
        assert got == want, "%s: %r" % (enc, got)
        if enc == "LATIN1":
            c = make_pgcdc(settings={"source.dsn": cluster.dsn(dbname=db)},
                           args=["check"], sub="check")
            c.run(timeout=30)
            assert any(l.startswith("PASS server_encoding: LATIN1") for l in c.stdout_lines), (
                c.stdout())


def _bad(cluster, db, id_, prefix="caf"):
    """Insert a note whose last byte is 0xE9 (LATIN1's é): not UTF-8."""
    cluster.sql("INSERT INTO t VALUES (%d, '%s' || convert_from('\\xe9'::bytea, 'SQL_ASCII'))"
                % (id_, prefix), dbname=db)


def test_sql_ascii_invalid_bytes(cluster, make_pgcdc, name):
    db = "sqla_" + name[-6:]
    _new_db(cluster, db, "SQL_ASCII")
    cluster.sql("CREATE TABLE t (id int PRIMARY KEY, note text)", dbname=db)
    dsn = cluster.dsn(dbname=db)

    # Streamed, source.invalid_utf8 = error: exit 1 naming table, column and LSN; the
    # transaction before it is confirmed, nothing past it.
    slot = name + "_s"
    p = make_pgcdc(settings={"source.dsn": dsn, "source.slot": slot}, sub="stream")
    assert _run_to_now(cluster, p, db) == 0, p.describe()
    cluster.sql("INSERT INTO t VALUES (1, 'ok')", dbname=db)
    before = cluster.current_lsn()
    _bad(cluster, db, 2)
    rc = _run_to_now(cluster, p, db)
    assert rc == 1, p.describe()
    err = " ".join(p.error_lines())
    assert "public.t" in err and "column note" in err and "source.invalid_utf8" in err, err
    lsn = h.lsn_parse(err.split(" at LSN ")[1].split()[0])
    assert lsn >= before, err
    confirmed = cluster.confirmed_flush(slot)
    assert confirmed <= lsn, (h.lsn_format(confirmed), h.lsn_format(lsn))
    assert [e["after"]["id"] for e in _raw_events(p)] == [1]

    # Snapshot, error: the same, for the snapshot's rows.
    q = make_pgcdc(settings={"source.dsn": dsn, "source.slot": name + "_e",
                             "snapshot.mode": "initial"}, sub="snap_error")
    assert _run_to_now(cluster, q, db) == 1, q.describe()
    err = " ".join(q.error_lines())
    assert "public.t" in err and "column note" in err, err

    # replace: U+FFFD in snapshot and streamed rows, counted in the metric and logged.
    port = h.free_port()
    r = make_pgcdc(settings={"source.dsn": dsn, "source.slot": name + "_r",
                             "snapshot.mode": "initial", "source.invalid_utf8": "replace",
                             "metrics.listen": "127.0.0.1:%d" % port}, sub="replace")
    r.start()
    h.wait_until(lambda: any(e["op"] == "r" and e["source"]["snapshot"] == "last"
                             for e in h.read_events(r.data_dir, tolerate_partial=True)),
                 30, what="the snapshot")
    _bad(cluster, db, 3, prefix="stream")
    end = cluster.current_lsn()
    cluster.wait_confirmed(name + "_r", end)
    status, body, _ = oh.http_get("http://127.0.0.1:%d/metrics" % port)
    assert r.stop() == 0, r.describe()
    m = oh.Metrics(body)
    assert m.get("pgcdc_invalid_utf8_replaced_total") == 2, body
    warn = [l for l in r.lines_at("warn") if "U+FFFD" in l]
    assert warn and "table=public.t" in warn[0] and "column=note" in warn[0], r.stderr()
    notes = {(e["op"], e["after"]["id"]): e["after"]["note"] for e in _raw_events(r)}
    assert notes == {("r", 1): "ok", ("r", 2): "caf\ufffd", ("c", 3): "stream\ufffd"}, notes


def _sockets_to(pid, port):
    """`ss` lines of pid's established TCP sockets to port, with their timers."""
    out = subprocess.run(["ss", "-tnop", "state", "established", "( dport = :%d )" % port],
                         capture_output=True, text=True, check=True).stdout
    return [l for l in out.splitlines() if "pid=%d," % pid in l]


def test_catalog_session_keepalives_and_timeout(cluster, make_pgcdc, name):
    """The catalog connection (partition roots, types), asked inside the replication loop,
    has TCP keepalives like the replication connection, and a lookup that hangs ends by
    statement_timeout and is retried like a lost connection."""
    cluster.sql("CREATE TABLE %s (id int, v int) PARTITION BY RANGE (id); "
                "CREATE TABLE %s_1 PARTITION OF %s FOR VALUES FROM (0) TO (1000)"
                % (name, name, name))
    p = make_pgcdc(settings={"source.partitions_as_root": "true"})
    p.start()
    cluster.wait_slot_active(name)
    cluster.sql("INSERT INTO %s VALUES (1, 1)" % name)
    h.wait_until(lambda: len(h.read_events(p.data_dir, tolerate_partial=True)) == 1, 30,
                 what="the first event")
    # libpq turns keepalives on by default, at the kernel's 2 hours: ours fire after 30 s.
    # A socket with bytes in flight shows its retransmission timer instead: sample again.
    def keepalives_within_30s():
        socks = _sockets_to(p.pid, cluster.port)
        assert len(socks) == 2, socks  # replication and catalog
        ms = [re.search(r"timer:\(keepalive,(\d+)(ms|sec|min)", s) for s in socks]
        if not all(ms):
            return False
        assert all(m.group(2) != "min" and int(m.group(1)) <= 30 for m in ms), socks
        return True
    h.wait_until(keepalives_within_30s, 10, interval=0.1, what="both sockets' keepalive timers")

    # The root is asked again every 5 s: make that lookup hang on a lock. (The insert
    # routes through pg_inherits too: it is made before the lock, committed after it.)
    writer = cluster.connect(autocommit=False)
    locker = cluster.connect(autocommit=False)
    try:
        writer.cursor().execute("INSERT INTO %s VALUES (2, 2)" % name)
        time.sleep(5.5)
        locker.cursor().execute("LOCK TABLE pg_catalog.pg_inherits IN ACCESS EXCLUSIVE MODE")
        writer.commit()
        line = p.wait_log(r"stream interrupted; retrying", timeout=40)
        assert "statement timeout" in line, line
    finally:
        locker.rollback()
        locker.close()
        writer.close()
    h.wait_until(lambda: len(h.read_events(p.data_dir, tolerate_partial=True)) == 2, 60,
                 what="the second event after the retry")
    assert p.stop() == 0, p.describe()
    assert [e.table for e in p.events()] == ["public." + name] * 2
