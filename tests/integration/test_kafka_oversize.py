"""Kafka sink: a message over the size limit is never skipped. The worker stops with exit 1
and one error line naming the table (topic), the change's LSN and the size; the slot's
confirmed LSN stays before that change, so a restart meets it again.

The mock brokers do not enforce message.max.bytes, so the limit here is the producer's
(kafka.message.max.bytes, which librdkafka checks when the message is produced — the
usual way such a message is caught, as its default is below the brokers'). The brokers'
own rejection is simulated by injecting MSG_SIZE_TOO_LARGE into a Produce response."""

import re

import pytest

import harness
import kafka_harness as kh

MSG_SIZE_TOO_LARGE = 10  # Kafka protocol error code
PRODUCE = 0  # Kafka API key


@pytest.fixture(scope="module")
def kafka():
    m = kh.MockKafka()
    yield m
    m.stop()


def error_line(p):
    errs = p.error_lines()
    assert len(errs) >= 1, p.describe()
    return harness.parse_logfmt(errs[-1]).get("msg", errs[-1])


def txn_changes(cluster, slot, table):
    """[(commit_lsn, [lsn...])] of `table`'s changes still in the slot, in commit order."""
    out = []
    for commit_lsn, lsn, _a, _s, t in cluster.reference_changes(slot):
        if t != table:
            continue
        if out and out[-1][0] == commit_lsn:
            out[-1][1].append(lsn)
        else:
            out.append((commit_lsn, [lsn]))
    return out


def test_oversized_message_stops_the_worker(cluster, make_pgcdc, kafka, name):
    prefix = "kb_" + name
    t = "big_" + name
    topic = kh.topic_name(prefix, "public", t)
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, payload text)" % t)
    kafka.create_topic(topic, 1)
    kh.slot_create(cluster, name)
    settings = kh.kafka_settings(kafka, prefix)
    settings["kafka.message.max.bytes"] = "100000"

    cluster.sql("INSERT INTO %s VALUES (1, 'a'), (2, 'b'), (3, 'c')" % t)  # A: fits
    cluster.sql("INSERT INTO %s SELECT 4, string_agg(md5(g::text), '') "   # B: ~256 kB
                "FROM generate_series(1, 8000) g" % t)
    cluster.sql("INSERT INTO %s VALUES (5, 'e')" % t)  # C: after it

    p = make_pgcdc(settings=settings)
    rc = p.run(timeout=60)
    assert rc == 1, p.describe()
    msg = error_line(p)

    txns = txn_changes(cluster, name, t)
    # A may or may not have been confirmed before the stop; B and C never are.
    if len(txns) == 3:
        txns = txns[1:]
    assert len(txns) == 2, txns
    (b_commit, [b_lsn]), (c_commit, _) = txns
    assert ("public.%s" % t) in msg and topic in msg, msg
    assert harness.lsn_format(b_lsn) in msg, (harness.lsn_format(b_lsn), msg)
    size = int(re.search(r"(\d+) bytes", msg).group(1))
    assert size > 256000, msg
    assert "kafka.message.max.bytes" in msg, msg
    assert cluster.confirmed_flush(name) <= b_commit

    msgs = kh.read_topic(kafka.bootstrap, topic)
    assert sorted(m.k["id"] for m in msgs) == [1, 2, 3], msgs

    # Never skipped: a restart stops at the same change.
    p2 = make_pgcdc(settings=settings, sub="again")
    assert p2.run(timeout=60) == 1, p2.describe()
    assert harness.lsn_format(b_lsn) in error_line(p2)
    assert cluster.confirmed_flush(name) <= b_commit
    assert sorted(m.k["id"] for m in kh.read_topic(kafka.bootstrap, topic)) == [1, 2, 3]

    # Raising the limit lets it through, and everything after it.
    settings["kafka.message.max.bytes"] = "1000000"
    p3 = make_pgcdc(settings=settings, sub="raised")
    end = cluster.current_lsn()
    assert p3.run(["--end-lsn", harness.lsn_format(end)], timeout=60) == 0, p3.describe()
    ids = [m.k["id"] for m in kh.read_topic(kafka.bootstrap, topic)]
    assert sorted(set(ids)) == [1, 2, 3, 4, 5], ids


def test_rejected_by_the_brokers(cluster, make_pgcdc, kafka, name):
    prefix = "kr_" + name
    t = "rej_" + name
    topic = kh.topic_name(prefix, "public", t)
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, v text)" % t)
    kafka.create_topic(topic, 1)
    kh.slot_create(cluster, name)
    settings = kh.kafka_settings(kafka, prefix)
    cluster.sql("INSERT INTO %s VALUES (1, 'ok')" % t)
    end = cluster.current_lsn()
    p = make_pgcdc(settings=settings)
    assert p.run(["--end-lsn", harness.lsn_format(end)], timeout=60) == 0, p.describe()
    confirmed = cluster.confirmed_flush(name)

    # The next Produce request is refused as too large, as a broker would for a batch over
    # the topic's max.message.bytes.
    kafka.fail_requests(PRODUCE, MSG_SIZE_TOO_LARGE, 1)
    cluster.sql("INSERT INTO %s VALUES (2, 'refused')" % t)
    p = make_pgcdc(settings=settings, sub="q")
    assert p.run(timeout=60) == 1, p.describe()
    msg = error_line(p)
    txns = txn_changes(cluster, name, t)
    assert len(txns) == 1, txns
    (commit, [lsn]), = txns
    assert topic in msg and harness.lsn_format(lsn) in msg and "too large" in msg, msg
    assert confirmed <= cluster.confirmed_flush(name) <= commit
