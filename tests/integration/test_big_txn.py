"""One transaction of 1,000,000 updates streams through in bounded memory."""

import json
import os
import time

import harness as h

ROWS = int(os.environ.get("PGCDC_IT_BIG_ROWS", "1000000"))
RSS_LIMIT_KB = 64 * 1024


def test_million_row_update_bounded_memory(cluster, make_pgcdc, name):
    t = name + "_narrow"
    t0 = time.monotonic()
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, v int NOT NULL);"
                "INSERT INTO %s SELECT g, 0 FROM generate_series(1, %d) g" % (t, t, ROWS))
    p = make_pgcdc(opts={"source.tables.include": "public." + t})
    rc = p.run(["--end-lsn", h.lsn_format(cluster.current_lsn())], timeout=30)  # creates the slot
    assert rc == 0, p.describe()
    cluster.sql("UPDATE %s SET v = v + 1" % t)
    end = cluster.current_lsn()
    t1 = time.monotonic()
    rc = p.run(["--end-lsn", h.lsn_format(end)], timeout=600)
    t2 = time.monotonic()
    assert rc == 0, p.describe()
    peak = p.hwm_kb
    print("rows=%d setup=%.1fs stream=%.1fs peak_rss(VmHWM)=%d kB" % (ROWS, t1 - t0, t2 - t1, peak))
    assert peak > 0, "could not measure the worker's memory"
    assert peak < RSS_LIMIT_KB, "peak RSS %d kB over %d kB" % (peak, RSS_LIMIT_KB)

    # Every update is there, once, in one transaction, in LSN order. (json.loads per line,
    # streaming: building 1M Event objects would dominate the test's time.)
    seen = bytearray(ROWS + 1)
    n = 0
    commit = None
    prev_lsn = -1
    for seg in h.list_segments(p.data_dir):
        with open(seg.path, "rb") as f:
            for line in f:
                assert line.endswith(b"\n"), "partial line in %s" % seg.name
                e = json.loads(line)
                s = e["source"]
                assert e["op"] == "u" and s["table"] == t, line[:300]
                if commit is None:
                    commit = s["commit_lsn"]
                assert s["commit_lsn"] == commit, "updates split over transactions"
                assert s["lsn"] > prev_lsn, "lsn not increasing"
                prev_lsn = s["lsn"]
                a = e["after"]
                i = a["id"]
                assert a["v"] == 1 and e["before"] == {"id": i} and not seen[i], line[:300]
                seen[i] = 1
                n += 1
    assert n == ROWS, "%d update events, want %d" % (n, ROWS)
    assert cluster.confirmed_flush(name) > commit
    print("verify=%.1fs" % (time.monotonic() - t2))
    cluster.drop_slot(name)
