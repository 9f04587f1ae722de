"""The slot and state.dir's record of it. A lost state.dir used to make `run` drop the
existing slot, and the changes it still held, then take a new snapshot: a delete made
while pgcdc was down never reached Kafka. Now `run` exits 2 naming the ways out and leaves
the slot alone; snapshot.mode = never continues from it. `pgcdc slot drop` forgets the
record, so the next run starts over by itself."""

import os
import shutil

import pytest

import harness as h
import kafka_harness as kh


@pytest.fixture(scope="module")
def kafka():
    m = kh.MockKafka()
    yield m
    m.stop()


def _record(p):
    try:
        with open(os.path.join(p.state_dir, "slot")) as f:
            return dict(l.strip().split("=", 1) for l in f if "=" in l)
    except FileNotFoundError:
        return None


def _run_to_now(p, cluster):
    rc = p.run(["--end-lsn", h.lsn_format(cluster.current_lsn())], timeout=60)
    assert rc == 0, p.describe()


def test_lost_state_dir_keeps_the_slot_and_its_delete(cluster, make_pgcdc, kafka, name):
    prefix = "ks_" + name
    t = "t_" + name
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, v text)" % t)
    cluster.sql("INSERT INTO %s VALUES (1, 'a'), (2, 'b')" % t)
    topic = kh.topic_name(prefix, "public", t)
    kafka.create_topic(topic, 1)
    settings = kh.kafka_settings(kafka, prefix)
    settings.update({"snapshot.mode": "initial", "source.tables.include": "public." + t})

    p = make_pgcdc(settings=settings)
    _run_to_now(p, cluster)
    rec = _record(p)
    assert rec and rec["slot"] == name and rec["state"] == "streaming", rec
    sysid = cluster.scalar("SELECT system_identifier::text FROM pg_control_system()")
    assert rec["system_identifier"] == sysid, rec

    # While pgcdc is down: a delete waits in the slot, and state.dir is lost.
    cluster.sql("DELETE FROM %s WHERE id = 1" % t)
    before = cluster.slot(name)
    shutil.rmtree(p.state_dir)
    assert p.run(timeout=30) == 2, p.describe()
    err = p.error_lines()[-1]
    for way in ("restore state.dir", "snapshot.mode = never", "pgcdc slot drop"):
        assert way in err, err
    after = cluster.slot(name)
    assert after and after["confirmed_flush_lsn"] == before["confirmed_flush_lsn"], (
        "the slot and what it holds must be left alone: %r -> %r" % (before, after))

    # The way out that keeps the delete: continue from the slot.
    p = make_pgcdc(settings=dict(settings, **{"snapshot.mode": "never"}))
    _run_to_now(p, cluster)
    assert (_record(p) or {}).get("state") == "streaming", _record(p)
    msgs = kh.read_topic(kafka.bootstrap, topic)
    got = [(m.headers["pgcdc.op"], m.k, m.tombstone) for m in msgs]
    assert sorted(got[:2], key=lambda g: g[1]["id"]) == [
        ("r", {"id": 1}, False), ("r", {"id": 2}, False)], got
    assert got[2:] == [("d", {"id": 1}, False), ("d", {"id": 1}, True)], got
    cluster.drop_slot(name)


def test_slot_drop_forgets_the_record(cluster, make_pgcdc, name):
    """After `pgcdc slot drop` the next run takes a new snapshot by itself (before, it
    stopped on the record of the dropped slot until state.dir was removed by hand)."""
    t = "d_" + name
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY)" % t)
    cluster.sql("INSERT INTO %s VALUES (1)" % t)
    settings = {"snapshot.mode": "initial", "source.tables.include": "public." + t}
    p = make_pgcdc(settings=settings)
    _run_to_now(p, cluster)
    assert _record(p), "expected state.dir/slot after the first run"
    drop = make_pgcdc(settings=settings, args=["slot", "drop"])  # the same state.dir
    assert drop.run(timeout=30) == 0, drop.describe()
    assert cluster.slot(name) is None and _record(p) is None, _record(p)
    cluster.sql("INSERT INTO %s VALUES (2)" % t)
    _run_to_now(p, cluster)
    snap = [e["after"]["id"] for e in p.events() if e["op"] == "r"]
    assert sorted(snap) == [1, 1, 2], snap  # the first snapshot, then the new one
    cluster.drop_slot(name)
