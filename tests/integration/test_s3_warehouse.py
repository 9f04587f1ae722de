"""docs/warehouse.md's DuckDB example, run by DuckDB (@duckdb/node-api) on one table's
objects as the S3 sink stored them: it infers the columns without casts and rebuilds the
table."""

import os
import re
import subprocess

import harness as h
import s3_harness as s3h

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "warehouse.md")


def doc_query():
    text = open(DOC).read()
    m = re.search(r"<!-- duckdb-example -->\s*```sql\n(.*?)```", text, re.S)
    assert m, "docs/warehouse.md has no duckdb-example block"
    return m.group(1)


def test_duckdb_rebuilds_table(cluster, make_pgcdc, name, workdir):
    s3 = s3h.S3rver().start()
    try:
        cluster.sql("CREATE TABLE orders_%s (id bigint PRIMARY KEY, qty int, price numeric(12,2),"
                    " note text, paid boolean, at timestamptz)" % name)
        t = "orders_%s" % name
        p = make_pgcdc(settings=s3.settings(name, **{"sink.s3.flush_ms": "200"}), env=s3h.CREDS)
        p.start()
        cluster.wait_slot_active(name, timeout=30)
        for i in range(1, 41):
            cluster.sql("INSERT INTO %s VALUES (%%s, %%s, %%s, %%s, %%s, now())" % t,
                        (i, i * 2, "%d.25" % i, "n%d" % i, i % 2 == 0))
        cluster.sql("UPDATE %s SET qty = qty + 100, note = 'upd' WHERE id %% 4 = 0" % t)
        cluster.sql("DELETE FROM %s WHERE id %% 5 = 0" % t)
        cluster.sql("INSERT INTO %s VALUES (5, 1, '9.99', 'back', true, now())" % t)
        end = h.lsn_format(cluster.current_lsn())
        assert p.stop() == 0, p.describe()
        assert p.run(["--end-lsn", end], timeout=60) == 0, p.describe()
        dest = os.path.join(workdir, "objects")
        s3.download(name, "public." + t, dest)
        assert os.listdir(dest), "no object for the table"
        sql = doc_query().replace("s3://my-bucket/cdc/public.orders/*.jsonl.gz",
                                  os.path.join(dest, "*.jsonl.gz"))
        out = subprocess.run(["node", os.path.join(s3h.S3_DIR, "duckdb_query.mjs")], input=sql,
                             capture_output=True, text=True, cwd=s3h.S3_DIR, timeout=120)
        assert out.returncode == 0, out.stderr
        import json
        got = json.loads(out.stdout)
        want = cluster.sql("SELECT id, qty, price::text, note, paid FROM %s ORDER BY id" % t)
        assert [(int(r["id"]), int(r["qty"]), r["price"], r["note"], r["paid"]) for r in got] == \
            [tuple(r) for r in want]
    finally:
        s3.stop()
