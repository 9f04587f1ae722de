"""Kafka sink: per-key order. Many updates to the same rows, spread over a 6-partition
topic: every key stays on one partition, and its events appear there in commit order,
each exactly once (no crash here, so no duplicates either)."""

import random

import pytest

import harness
import kafka_harness as kh


@pytest.fixture(scope="module")
def kafka():
    m = kh.MockKafka()
    yield m
    m.stop()


def test_per_key_order_across_partitions(cluster, make_pgcdc, kafka, name):
    prefix = "ko_" + name
    t = "t_" + name
    topic = kh.topic_name(prefix, "public", t)
    nrows, rounds = 40, 60
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, n int NOT NULL)" % t)
    kafka.create_topic(topic, 6)
    settings = kh.kafka_settings(kafka, prefix)
    # Small batches and a little broker latency: many requests in flight at once.
    settings["kafka.linger.ms"] = "1"
    settings["kafka.batch.num.messages"] = "20"
    kafka.cmd("rtt 2 20")
    kh.slot_create(cluster, name)

    rng = random.Random(7)
    expected = {i: [] for i in range(nrows)}
    conn = cluster.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO %s SELECT g, 0 FROM generate_series(0, %d) g" % (
                t, nrows - 1))
            conn.commit()
            for i in range(nrows):
                expected[i].append(("c", 0))
            for r in range(1, rounds + 1):
                # Several rows per transaction, some rows twice in one transaction.
                for _ in range(rng.randint(1, 8)):
                    i = rng.randrange(nrows)
                    n = len(expected[i])
                    cur.execute("UPDATE %s SET n = %%s WHERE id = %%s" % t, (n, i))
                    expected[i].append(("u", n))
                conn.commit()
            for i in range(0, nrows, 3):
                cur.execute("DELETE FROM %s WHERE id = %%s" % t, (i,))
                expected[i].append(("d", None))
                expected[i].append(("tombstone", None))
            conn.commit()
    finally:
        conn.close()
    kafka.cmd("rtt 2 0")
    end = cluster.current_lsn()

    p = make_pgcdc(settings=settings)
    assert p.run(["--end-lsn", harness.lsn_format(end)], timeout=120) == 0, p.describe()

    msgs = kh.read_topic(kafka.bootstrap, topic)
    per_key = {}
    parts = {}
    for m in msgs:  # (partition, offset) order
        kh.check_headers(m)
        i = m.k["id"]
        parts.setdefault(i, set()).add(m.partition)
        if m.tombstone:
            per_key.setdefault(i, []).append((("tombstone", None), m.ident))
        else:
            after = m.v["after"]
            per_key.setdefault(i, []).append(((m.v["op"], after["n"] if after else None),
                                              m.ident))
    assert {i for i, s in parts.items() if len(s) != 1} == set(), "a key on two partitions"
    assert len({next(iter(s)) for s in parts.values()}) >= 4, "keys should spread out"
    for i in range(nrows):
        got = per_key.get(i, [])
        assert [g for g, _ in got] == expected[i], "key %d out of order or incomplete" % i
        # Commit order: (commit_lsn, lsn) never goes backwards along a key's partition.
        idents = [(c, l) for _, (c, l, _o, _t) in got]
        assert idents == sorted(idents), "key %d: LSNs out of order: %r" % (i, idents)
