"""Kafka sink: kill -9 of the worker at random moments during continuous writes, again
and again. Every committed change must be in Kafka at least once; every duplicate is an
identical copy of an event at or after the slot's confirmed LSN at one of the kills (the
only changes the server sends again)."""

import os
import random
import time

import pytest

import harness
import kafka_harness as kh

KILLS = int(os.environ.get("PGCDC_IT_KAFKA_KILLS", "12"))


@pytest.fixture(scope="module")
def kafka():
    m = kh.MockKafka()
    yield m
    m.stop()


def test_kill9_during_writes(cluster, make_pgcdc, kafka, writers, name):
    seed = int(os.environ.get("PGCDC_IT_SEED", time.time_ns() % 100000))
    print("seed", seed)
    rng = random.Random(seed)
    prefix = "kk_" + name
    wp = "wk" + name[-6:]
    harness.Writer.create_tables(cluster, wp)
    for t in ("a", "b"):
        kafka.create_topic(kh.topic_name(prefix, "public", "%s_%s" % (wp, t)), 3)
    kh.slot_create(cluster, name)
    settings = kh.kafka_settings(kafka, prefix)
    # Some broker latency widens the window between produce and acknowledgement.
    kafka.cmd("rtt 1 15")
    p = make_pgcdc(settings=settings)
    p.start()
    w = harness.Writer(cluster, prefix=wp, pause=0.003, seed=seed)
    writers.append(w)
    w.start()
    w.wait_txns(50)

    # Sometimes the writer goes on a while with nobody reading.
    confirmed_at_kill = harness.kill9_loop(cluster, p, name, rng, KILLS, idle_chance=0.3)
    assert w.failure is None
    w.wait_txns(len(w.expected()) + 50)
    w.stop()
    kafka.cmd("rtt 1 0")
    end = cluster.current_lsn()
    cluster.wait_confirmed(name, end, timeout=60)
    assert p.stop(timeout=15) == 0, p.describe()

    # Confirmation only moves forward across restarts.
    assert confirmed_at_kill == sorted(confirmed_at_kill)
    events, dups = kh.verify_kafka_writers(kafka.bootstrap, prefix, [w],
                                           kill_confirmed=confirmed_at_kill, cluster=cluster)
    print("%d kills, %d txns, %d events, %d duplicate copies" % (
        KILLS, len(w.expected()), len(events), dups))
