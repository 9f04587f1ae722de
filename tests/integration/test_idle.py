"""Included tables idle, others busy: the slot's confirmed LSN still advances, so the server
does not retain WAL for the slot without end."""

import time

import harness as h

INTERVAL_MS = 200
# "Within a few status intervals": allow 15 of them.
DEADLINE_S = 15 * INTERVAL_MS / 1000.0


def test_confirmed_lsn_advances_when_included_tables_idle(cluster, make_pgcdc, name):
    cluster.sql("CREATE TABLE only_this (id int PRIMARY KEY, v text);"
                "CREATE TABLE not_this (id int PRIMARY KEY, v text)")
    p = make_pgcdc(opts={"status.interval_ms": str(INTERVAL_MS),
                         "source.tables.include": "public.only_this"})
    p.start()
    cluster.wait_slot_active(name, timeout=30)
    start = cluster.confirmed_flush(name)
    marks = []
    for rnd in range(3):
        for i in range(20):
            cluster.sql("INSERT INTO not_this VALUES (%s, 'x')", (rnd * 100 + i,))
        target = cluster.current_lsn()
        t = time.monotonic()
        cluster.wait_confirmed(name, target, timeout=DEADLINE_S)
        marks.append(time.monotonic() - t)
        p.assert_alive()
    print("confirmed caught up after %s s" % ["%.2f" % m for m in marks])
    assert cluster.confirmed_flush(name) > start
    # Nothing of the excluded table reached the sink.
    assert [e for e in p.events(tolerate_partial=True)
            if e["source"]["table"] == "not_this"] == []

    # No writes at all for a while: the position stays caught up (keepalives).
    time.sleep(1.0)
    cluster.wait_confirmed(name, cluster.current_lsn(), timeout=DEADLINE_S + 10)

    # The included table still streams.
    cluster.sql("INSERT INTO only_this VALUES (1, 'yes')")
    target = cluster.current_lsn()
    cluster.wait_confirmed(name, target, timeout=DEADLINE_S)
    rc = p.stop(timeout=10)
    assert rc == 0, p.describe()
    evs = h.read_events(p.data_dir)
    assert [(e["source"]["table"], e["op"], e["after"]) for e in evs] == [
        ("only_this", "c", {"id": 1, "v": "yes"})]
    assert not p.error_lines(), p.describe()
    cluster.drop_slot(name)
