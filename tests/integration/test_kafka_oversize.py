"""Kafka sink: a message over the size limit is never skipped.

- By default (sink.kafka.on_permanent_error = stop) the worker stops with exit 1 and one
  error line naming the table (topic), the key, the change's LSN and the size; the slot's
  confirmed LSN stays before that change, so a restart meets it again.
- With dead_letter the event goes to state.dir/dead-letter/ (with the reason, its LSNs and
  the event itself), pgcdc_dead_letters_total counts it, every other change reaches Kafka,
  the confirmed LSN passes it, and a restart goes on instead of meeting it again.
- A batch the brokers refuse is sent again, never dead-lettered wholesale.

The mock brokers do not enforce a topic's max.message.bytes, nor answer DescribeConfigs
(it waits for a controller they never name), so the limits here are the producer's
(kafka.message.max.bytes) and sink.kafka.max_message_bytes. The brokers' own refusal is
simulated by injecting MSG_SIZE_TOO_LARGE into a Produce response."""

import glob
import json
import os
import re

import pytest

import harness
import kafka_harness as kh
import ops_harness as oh

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


def _kafka_table(cluster, kafka, name, prefix, table, cols):
    """Table `table`+name (columns `cols`), its one-partition topic under the topic prefix
    `prefix`+name, a slot named `name`, and the Kafka settings: (table, topic, settings)."""
    t = table + name
    prefix += name
    topic = kh.topic_name(prefix, "public", t)
    cluster.sql("CREATE TABLE %s (%s)" % (t, cols))
    kafka.create_topic(topic, 1)
    kh.slot_create(cluster, name)
    return t, topic, kh.kafka_settings(kafka, prefix)


def test_oversized_message_stops_the_worker(cluster, make_pgcdc, kafka, name):
    t, topic, settings = _kafka_table(cluster, kafka, name, "kb_", "big_",
                                       "id int PRIMARY KEY, payload text")
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
    assert 'key {"id":4}' in msg, msg
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


def dead_letters(p):
    """The dead-letter lines under the run's state.dir, parsed."""
    out = []
    for f in sorted(glob.glob(os.path.join(p.workdir, "state", "dead-letter", "*.jsonl"))):
        with open(f) as fh:
            out += [json.loads(l) for l in fh if l.strip()]
    return out


def test_dead_letter(cluster, make_pgcdc, kafka, name):
    t, topic, settings = _kafka_table(cluster, kafka, name, "kd_", "dl_",
                                       "id int PRIMARY KEY, payload text")
    settings["sink.kafka.on_permanent_error"] = "dead_letter"
    settings["sink.kafka.max_message_bytes"] = "100000"
    ep = oh.new_metrics_endpoint()
    settings["metrics.listen"] = ep.listen

    cluster.sql("INSERT INTO %s VALUES (1, 'a'), (2, 'b'), (3, 'c')" % t)
    cluster.sql("BEGIN; INSERT INTO %s SELECT 4, string_agg(md5(g::text), '') "
                "FROM generate_series(1, 8000) g; INSERT INTO %s VALUES (6, 'same txn'); "
                "COMMIT" % (t, t))
    cluster.sql("INSERT INTO %s VALUES (5, 'e')" % t)
    (_, _), (b_commit, [b_lsn, _]), (_, _) = txn_changes(cluster, name, t)

    p = make_pgcdc(settings=settings)
    p.start()
    end = cluster.current_lsn()
    cluster.wait_confirmed(name, end, timeout=60)  # passes the refused change
    assert ep.scrape().get("pgcdc_dead_letters_total") == 1
    p.assert_alive("after a dead letter")
    assert p.stop() == 0, p.describe()

    msgs = kh.read_topic(kafka.bootstrap, topic)
    assert sorted(m.k["id"] for m in msgs) == [1, 2, 3, 5, 6], msgs
    dl = dead_letters(p)
    assert len(dl) == 1, dl
    d = dl[0]
    assert d["topic"] == topic and d["key"] == {"id": 4}, d
    assert (d["lsn"], d["commit_lsn"]) == (b_lsn, b_commit), (d, b_lsn, b_commit)
    assert d["size"] > 256000 and "sink.kafka.max_message_bytes" in d["reason"], d
    assert d["event"]["after"]["id"] == 4 and len(d["event"]["after"]["payload"]) == 256000
    assert d["event"]["source"]["lsn"] == b_lsn

    # No crash loop: a restart goes on from after it, and sends it neither to Kafka nor to
    # the dead letters again.
    cluster.sql("INSERT INTO %s VALUES (7, 'g')" % t)
    end = cluster.current_lsn()
    p2 = make_pgcdc(settings=dict(settings, **{"metrics.listen": None,
                                                "state.dir": os.path.join(p.workdir, "state")}),
                    sub="again")
    assert p2.run(["--end-lsn", harness.lsn_format(end)], timeout=60) == 0, p2.describe()
    assert sorted(m.k["id"] for m in kh.read_topic(kafka.bootstrap, topic)) == [1, 2, 3, 5, 6, 7]
    assert len(dead_letters(p)) == 1


def test_refused_batch_is_retried(cluster, make_pgcdc, kafka, name):
    t, topic, settings = _kafka_table(cluster, kafka, name, "kr_", "rej_",
                                       "id int PRIMARY KEY, v text")
    settings["sink.kafka.on_permanent_error"] = "dead_letter"
    cluster.sql("INSERT INTO %s VALUES (1, 'ok')" % t)
    end = cluster.current_lsn()
    p = make_pgcdc(settings=settings)
    assert p.run(["--end-lsn", harness.lsn_format(end)], timeout=60) == 0, p.describe()

    # The next Produce request is refused as too large, as a broker would refuse a batch
    # over the topic's max.message.bytes: sent again, delivered, never a dead letter.
    kafka.fail_requests(PRODUCE, MSG_SIZE_TOO_LARGE, 1)
    cluster.sql("INSERT INTO %s VALUES (2, 'refused once')" % t)
    end = cluster.current_lsn()
    p = make_pgcdc(settings=settings, sub="q")
    p.start()
    cluster.wait_confirmed(name, end, timeout=60)
    p.assert_alive("after a refused batch")
    assert p.stop() == 0, p.describe()
    warned = [l for l in p.lines_at("warn") if "refused a batch" in l]
    assert warned and topic in warned[0], p.describe()
    assert sorted(set(m.k["id"] for m in kh.read_topic(kafka.bootstrap, topic))) == [1, 2]
    assert dead_letters(p) == []
    assert cluster.confirmed_flush(name) >= end


def test_refused_batch_is_retried_before_end_lsn(cluster, make_pgcdc, kafka, name):
    # `run --end-lsn` must not end with exit 1 because the brokers refused a batch on the
    # way to the end: the batch is sent again, and the run ends once the end is confirmed.
    t, topic, settings = _kafka_table(cluster, kafka, name, "ke_", "rej_",
                                       "id int PRIMARY KEY, v text")
    kafka.fail_requests(PRODUCE, MSG_SIZE_TOO_LARGE, 1)
    cluster.sql("INSERT INTO %s VALUES (1, 'refused once'), (2, 'with it')" % t)
    end = cluster.current_lsn()
    p = make_pgcdc(settings=settings)
    assert p.run(["--end-lsn", harness.lsn_format(end)], timeout=60) == 0, p.describe()
    assert sorted(set(m.k["id"] for m in kh.read_topic(kafka.bootstrap, topic))) == [1, 2]
    assert cluster.confirmed_flush(name) >= end
