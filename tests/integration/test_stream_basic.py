"""Streaming core, file sink: event content, commit order, --end-lsn, SIGTERM and resume."""

import random
import signal
import string
import time

import harness as h

BIG_INT = 9007199254740993  # 2**53 + 1: a double would print ...992
NUM38 = "12345678901234567890123456789012345678"
NUM38_FRAC = "-12345678901234567890.123456789012345678"
NOTE = 'he said "hi"\\ back\nnew line\ttab \u00fc\u20ac\U0001F600 </script>'


def _txn(cluster, statements):
    """Run statements in one transaction; return (txid, commit wall time in ms)."""
    c = cluster.connect(autocommit=False)
    try:
        with c.cursor() as cur:
            for st in statements:
                if isinstance(st, tuple):
                    cur.execute(*st)
                else:
                    cur.execute(st)
            cur.execute("SELECT txid_current()")
            xid = cur.fetchone()[0]
        c.commit()
        return xid, int(time.time() * 1000)
    finally:
        c.close()


def test_events_end_lsn(cluster, make_pgcdc, name):
    users, full, sch = name + "_users", name + "_full", name + "_s"
    cluster.sql("""
        CREATE TABLE {u} (id int PRIMARY KEY, name text, score bigint, amount numeric,
                          ratio float8, flag boolean, doc jsonb, raw bytea, tags int[],
                          note text, big text);
        ALTER TABLE {u} ALTER COLUMN big SET STORAGE EXTERNAL;
        CREATE TABLE {f} (id int PRIMARY KEY, v text, n int);
        ALTER TABLE {f} REPLICA IDENTITY FULL;
        CREATE SCHEMA {s};
        CREATE TABLE {s}.items (id bigint PRIMARY KEY, qty int);
    """.format(u=users, f=full, s=sch))
    ref = name + "_ref"
    cluster.sql("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (ref,))
    try:
        p = make_pgcdc(opts={"sink.kafka.topic_prefix": "itpfx"})
        # First run creates the slot (snapshot.mode=never) and stops at once.
        rc = p.run(["--end-lsn", h.lsn_format(cluster.current_lsn())], timeout=30)
        assert rc == 0, p.describe()
        slot = cluster.slot(name)
        assert slot and slot["plugin"] == "wal2json" and not slot["active"], slot
        assert not p.error_lines(), p.describe()

        rng = random.Random(1)
        big = "".join(rng.choice(string.ascii_letters) for _ in range(12000))
        t0 = int(time.time() * 1000)
        x1, t1 = _txn(cluster, [
            ("INSERT INTO {u} VALUES (1, 'a', %s, %s, 1.5, true, '{{\"a\": 1, \"b\": [1, 2]}}', "
             "'\\xdeadbeef', '{{1,2,3}}', %s, %s)".format(u=users), (BIG_INT, NUM38, NOTE, big)),
            "INSERT INTO {u} (id) VALUES (2)".format(u=users),
            "INSERT INTO {f} VALUES (1, 'x', 10)".format(f=full),
            "INSERT INTO {s}.items VALUES (1, 5), (2, 6)".format(s=sch),
        ])
        x2, t2 = _txn(cluster, ["UPDATE {u} SET name = 'b' WHERE id = 1".format(u=users)])
        x3, t3 = _txn(cluster, ["UPDATE {f} SET v = 'y' WHERE id = 1".format(f=full)])
        x4, t4 = _txn(cluster, ["DELETE FROM {u} WHERE id = 2".format(u=users),
                                "DELETE FROM {f} WHERE id = 1".format(f=full)])
        x5, t5 = _txn(cluster, ["TRUNCATE {s}.items".format(s=sch)])
        x6, t6 = _txn(cluster, [
            ("INSERT INTO {u} (id, amount, flag) VALUES (3, %s, false)".format(u=users), (NUM38_FRAC,)),
            "INSERT INTO {s}.items VALUES (7, 1)".format(s=sch),
            "UPDATE {u} SET score = -{b} WHERE id = 3".format(u=users, b=BIG_INT),
        ])
        end = cluster.current_lsn()

        run_start = int(time.time() * 1000)
        rc = p.run(["--end-lsn", h.lsn_format(end)], timeout=60)
        run_end = int(time.time() * 1000)
        assert rc == 0, p.describe()
        assert not p.error_lines(), p.describe()

        segs = h.check_segment_files(p.data_dir)
        events = [e for _, evs in segs for e in evs]
        h.check_stream_invariants(events)
        ours = {users, full, "items"}
        events = [e for e in events if e["source"]["table"] in ours]

        # Same changes, same (commit_lsn, lsn), same order as wal2json gives through SQL.
        ref_changes, ref_commits = cluster.reference_stream(ref)
        want = [r for r in ref_changes if r[4] in ours]
        got = [(e["source"]["commit_lsn"], e["source"]["lsn"],
                {"c": "I", "u": "U", "d": "D", "t": "T"}[e["op"]], e["source"]["schema"],
                e["source"]["table"]) for e in events]
        assert got == want

        # Per-transaction source fields.
        txns = h.group_transactions(events)
        assert [len(t[1]) for t in txns] == [5, 1, 1, 2, 1, 3]
        for (commit_lsn, evs), xid, tc in zip(txns, [x1, x2, x3, x4, x5, x6],
                                              [t1, t2, t3, t4, t5, t6]):
            for e in evs:
                s = e["source"]
                assert s["txId"] == xid
                assert s["connector"] == "pgcdc"
                assert isinstance(s["version"], str) and s["version"]
                assert s["name"] == "itpfx"
                assert s["db"] == cluster.dbname
                assert s["snapshot"] == "false"
                assert isinstance(s["lsn"], int) and isinstance(s["commit_lsn"], int)
                assert s["lsn"] < s["commit_lsn"] == commit_lsn
                assert s["commit_lsn"] <= end
                assert abs(s["ts_ms"] - tc) < 3000, (s["ts_ms"], tc)
                assert t0 - 1000 <= s["ts_ms"]
                assert run_start - 1000 <= e["ts_ms"] <= run_end + 1000
                assert s["schema"] == (sch if s["table"] == "items" else "public")
                assert set(e) >= {"before", "after", "source", "op", "ts_ms"}

        e = events
        # T1: inserts, every value form.
        assert e[0]["op"] == "c" and e[0]["before"] is None
        a = e[0]["after"]
        assert a["id"] == 1 and a["name"] == "a"
        assert a["score"] == BIG_INT and type(a["score"]) is int
        assert '"score":%d' % BIG_INT in e[0].raw.replace(" ", "")
        assert a["amount"] == NUM38
        assert a["ratio"] == "1.5"
        assert a["flag"] is True
        assert a["doc"] == '{"a": 1, "b": [1, 2]}'
        assert a["raw"] == "\\xdeadbeef"
        assert a["tags"] == "{1,2,3}"
        assert a["note"] == NOTE
        assert a["big"] == big
        assert e[1]["after"] == {"id": 2, "name": None, "score": None, "amount": None, "ratio": None,
                                 "flag": None, "doc": None, "raw": None, "tags": None, "note": None,
                                 "big": None}
        assert (e[2]["source"]["table"], e[2]["op"], e[2]["after"]) == (full, "c", {"id": 1, "v": "x", "n": 10})
        assert [x["after"] for x in e[3:5]] == [{"id": 1, "qty": 5}, {"id": 2, "qty": 6}]
        # T2: update; the unchanged TOASTed column is absent, not null.
        u = e[5]
        assert u["op"] == "u" and u["before"] == {"id": 1}
        assert "big" not in u["after"], "unchanged TOAST value must be absent: %r" % (u.raw[:300],)
        assert u["after"]["name"] == "b" and u["after"]["score"] == BIG_INT
        assert u["after"]["amount"] == NUM38
        # T3: update under REPLICA IDENTITY FULL: before is the whole old row.
        assert (e[6]["op"], e[6]["before"], e[6]["after"]) == (
            "u", {"id": 1, "v": "x", "n": 10}, {"id": 1, "v": "y", "n": 10})
        # T4: deletes: key only under DEFAULT, whole row under FULL.
        assert (e[7]["op"], e[7]["before"], e[7]["after"]) == ("d", {"id": 2}, None)
        assert (e[8]["op"], e[8]["before"], e[8]["after"]) == ("d", {"id": 1, "v": "y", "n": 10}, None)
        # T5: truncate.
        assert (e[9]["op"], e[9]["before"], e[9]["after"], e[9]["source"]["table"]) == (
            "t", None, None, "items")
        # T6: a transaction over two tables, in statement order.
        assert e[10]["after"]["amount"] == NUM38_FRAC and e[10]["after"]["flag"] is False
        assert e[11]["after"] == {"id": 7, "qty": 1}
        assert e[12]["op"] == "u" and e[12]["after"]["score"] == -BIG_INT

        # Confirmed to the server: up to the end of the last transaction's commit record.
        conf = cluster.confirmed_flush(name)
        last_end = [e for c, e, _ in ref_commits if c == txns[-1][0]][0]
        assert conf >= last_end, "confirmed_flush_lsn %s short of the last commit's end %s" % (
            h.lsn_format(conf), h.lsn_format(last_end))
        assert conf <= cluster.current_lsn()

        # Running again to the same end adds nothing.
        before = [x.raw for x in p.events()]
        rc = p.run(["--end-lsn", h.lsn_format(end)], timeout=30)
        assert rc == 0, p.describe()
        assert [x.raw for x in p.events()] == before
    finally:
        cluster.drop_slot(ref)
        cluster.drop_slot(name)


def test_sigterm_resume_no_dup_no_loss(cluster, make_pgcdc, name, writers):
    h.Writer.create_tables(cluster, name)
    p = make_pgcdc()
    p.start()
    cluster.wait_slot_active(name, timeout=30)
    assert cluster.slot(name)["plugin"] == "wal2json"
    w = h.Writer(cluster, prefix=name, pause=0.003)
    writers.append(w)
    w.start()
    try:
        for cycle in range(3):
            seen = h.count_lines(p.data_dir)
            n = len(w.committed)
            w.wait_txns(n + 30)
            h.wait_until(lambda: h.count_lines(p.data_dir) > seen + 30, 30,
                         what="events to reach the files")
            sig = signal.SIGINT if cycle == 1 else signal.SIGTERM  # Ctrl-C does the same
            t = time.monotonic()
            rc = p.stop(timeout=10, sig=sig)
            took = time.monotonic() - t
            assert rc == 0, "%s: exit %s after %.1fs\n%s" % (sig.name, rc, took, p.describe())
            assert not p.error_lines(), p.describe()
            # Everything it wrote is durable and confirmed: the final status covers the last
            # transaction in the files.
            evs = h.read_events(p.data_dir)
            last = max(e["source"]["commit_lsn"] for e in evs)
            cluster.wait_slot_active(name, active=False, timeout=10)
            conf = cluster.confirmed_flush(name)
            assert conf > last, "after SIGTERM confirmed_flush_lsn %s < last commit in files %s" % (
                h.lsn_format(conf), h.lsn_format(last))
            cp = p.checkpoint()
            assert cp is not None and {"lsn", "segment", "offset"} <= set(cp), cp
            p.start()
            cluster.wait_slot_active(name, timeout=30)
    finally:
        w.stop()
    rc = p.stop(timeout=10)
    assert rc == 0, p.describe()
    rc = p.run(["--end-lsn", h.lsn_format(cluster.current_lsn())], timeout=60)
    assert rc == 0, p.describe()
    segs = h.check_segment_files(p.data_dir)
    events = [e for _, evs in segs for e in evs]
    h.verify_writers(events, [w], cluster)
    cluster.drop_slot(name)
