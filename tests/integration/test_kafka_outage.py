"""Kafka sink under a broker outage: every broker down while the database keeps writing.

The worker must neither die nor confirm what the brokers have not acknowledged: the slot's
confirmed_flush_lsn stalls for the whole outage, then catches up once the brokers are back
and everything arrives. A second outage ends with kill -9 of the worker: if the confirmed
LSN had passed anything still queued in librdkafka, that change would be lost for good
(the server would not send it again). A third ends with SIGTERM: exit 0 within 10 s, the
final status at what was acknowledged. The final check finds every committed change.
Through the first outage /healthz reads "stalled" (503) while the worker is connected to
PostgreSQL, once nothing moved for metrics.stall_ms, and 200 again after it."""

import re
import time

import pytest

import harness
import kafka_harness as kh
import ops_harness as oh


@pytest.fixture(scope="module")
def kafka():
    m = kh.MockKafka()
    yield m
    m.stop()


def sample_confirmed(cluster, slot, seconds, p):
    """confirmed_flush_lsn every 0.2 s for `seconds`; the worker must stay up."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(cluster.confirmed_flush(slot))
        p.assert_alive("during the broker outage")
        time.sleep(0.2)
    return out


def _reconnects(p):
    """The confirmed LSN of each reconnect pgcdc logged ("stream interrupted; retrying"):
    the server resends from there, so what Kafka already held past it comes again, as
    after a kill (docs: Kafka is at-least-once)."""
    out = []
    for line in p.lines:
        m = re.search(r"stream interrupted; retrying.*confirmed=(\S+)", line)
        if m:
            out.append(harness.lsn_parse(m.group(1).strip('"')))
    return out


def test_broker_outage(cluster, make_pgcdc, kafka, writers, name):
    prefix = "kout_" + name
    wp = "wo" + name[-6:]
    harness.Writer.create_tables(cluster, wp)
    kh.slot_create(cluster, name)
    settings = kh.kafka_settings(kafka, prefix)
    settings["kafka.reconnect.backoff.max.ms"] = "500"
    # A tiny local queue: every outage below reaches back-pressure (write returns AGAIN
    # and the worker stops reading from PostgreSQL) within a fraction of a second.
    settings["kafka.queue.buffering.max.messages"] = "50"
    ep = oh.new_metrics_endpoint()
    settings["metrics.listen"] = ep.listen
    settings["metrics.stall_ms"] = "2000"
    p = make_pgcdc(settings=settings)
    p.start()
    ep.wait_health(200, 30, proc=p)
    w = harness.Writer(cluster, prefix=wp, pause=0.004)
    writers.append(w)
    w.start()
    w.wait_txns(100)
    cluster.wait_confirmed(name, cluster.current_lsn(), timeout=30)

    # Outage 1: the worker stays up; confirmation stops.
    kafka.down()
    time.sleep(1.5)  # deliveries acknowledged just before the outage are reported by now
    c_down = cluster.confirmed_flush(name)
    n_before = len(w.expected())
    samples = sample_confirmed(cluster, name, 5, p)
    assert len(w.expected()) > n_before + 50, "the writer should keep committing"
    assert cluster.current_lsn() > c_down
    assert set(samples) == {c_down}, "confirmed_flush_lsn moved while every broker was down: " + \
        ", ".join(harness.lsn_format(s) for s in sorted(set(samples)))
    status, body, _ = oh.http_get(ep.base + "/healthz")
    assert (status, body.strip()) == (503, "stalled"), (status, body)
    assert ep.scrape().get("pgcdc_connected") == 1
    kafka.up()
    target = cluster.current_lsn()
    cluster.wait_confirmed(name, target, timeout=60)
    ep.wait_health(200, 30, proc=p)
    p.assert_alive("after the brokers came back")

    # Outage 2, ended by kill -9: only what was acknowledged may have been confirmed.
    resends = _reconnects(p)
    kafka.down()
    time.sleep(2)
    p.kill9()
    cluster.wait_slot_active(name, active=False, timeout=30)
    c_kill = cluster.confirmed_flush(name)
    assert c_kill < cluster.current_lsn()
    resends += _reconnects(p)
    kafka.up()
    p.start()
    w.wait_txns(len(w.expected()) + 100)
    cluster.wait_confirmed(name, cluster.current_lsn(), timeout=60)

    # Outage 3, ended by SIGTERM while the worker is held in back-pressure: still a clean
    # stop (exit 0 within 10 s) whose final status confirms only what the brokers
    # acknowledged before they went away.
    kafka.down()
    time.sleep(2)
    c_term = cluster.confirmed_flush(name)
    t0 = time.monotonic()
    rc = p.stop(timeout=12)
    took = time.monotonic() - t0
    assert rc == 0, p.describe()
    assert took < 10, "SIGTERM took %.1f s with the brokers down" % took
    assert cluster.confirmed_flush(name) == c_term, "the final status passed unacknowledged changes"
    assert c_term < cluster.current_lsn()
    resends += _reconnects(p)
    kafka.up()
    p.start()
    w.wait_txns(len(w.expected()) + 100)
    w.stop()
    end = cluster.current_lsn()
    cluster.wait_confirmed(name, end, timeout=60)
    assert p.stop(timeout=15) == 0, p.describe()
    resends += _reconnects(p)

    # SIGTERM with the brokers down drops what librdkafka still held (kafka_close), some
    # of it possibly appended by a broker whose answer was lost: the restart sends it
    # again from c_term, like after the kill.
    events, dups = kh.verify_kafka_writers(kafka.bootstrap, prefix, [w],
                                           kill_confirmed=[c_kill, c_term] + resends,
                                           cluster=cluster)
    print("events %d, duplicate copies %d, confirmed at kill %s, reconnects %d" % (
        len(events), dups, harness.lsn_format(c_kill), len(resends)))
