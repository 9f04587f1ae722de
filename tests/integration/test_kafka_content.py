"""Kafka sink: what lands in Kafka. Per-table topics, primary-key keys (the identity index's
under REPLICA IDENTITY USING INDEX), headers, tombstones,
a key change as delete + tombstone + create, a table without a key, an unusual schema,
sink.kafka.tombstones=false, and a bad kafka.* key."""

import pytest

import harness
import kafka_harness as kh


@pytest.fixture(scope="module")
def kafka():
    m = kh.MockKafka()
    yield m
    m.stop()


def test_topics_keys_headers_tombstones(cluster, make_pgcdc, kafka, name):
    prefix = "kc_" + name
    users, nokey, other = "users_" + name, "nokey_" + name, "other_" + name
    cluster.sql("CREATE SCHEMA IF NOT EXISTS s2")
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, name text)" % users)
    cluster.sql("CREATE TABLE %s (a int, b text)" % nokey)
    cluster.sql("ALTER TABLE %s REPLICA IDENTITY FULL" % nokey)
    cluster.sql("CREATE TABLE s2.%s (k1 int, k2 text, v int, PRIMARY KEY (k1, k2))" % other)
    t_users = kh.topic_name(prefix, "public", users)
    t_nokey = kh.topic_name(prefix, "public", nokey)
    t_other = kh.topic_name(prefix, "s2", other)
    # One partition each, so the order within a topic is the order of the stream.
    for t in (t_users, t_nokey, t_other):
        kafka.create_topic(t, 1)

    settings = kh.kafka_settings(kafka, prefix)
    kh.slot_create(cluster, name)

    cluster.sql("INSERT INTO %s VALUES (1, 'one'), (2, 'two')" % users)
    cluster.sql("UPDATE %s SET name = 'uno' WHERE id = 1" % users)
    cluster.sql("UPDATE %s SET id = 3 WHERE id = 2" % users)  # key change
    cluster.sql("DELETE FROM %s WHERE id = 1" % users)
    cluster.sql("INSERT INTO %s VALUES (10, 'x')" % nokey)
    cluster.sql("DELETE FROM %s WHERE a = 10" % nokey)
    cluster.sql("INSERT INTO s2.%s VALUES (1, 'a', 5)" % other)
    cluster.sql("DELETE FROM s2.%s" % other)
    end = cluster.current_lsn()

    p = make_pgcdc(settings=settings)
    rc = p.run(["--end-lsn", harness.lsn_format(end)], timeout=60)
    assert rc == 0, p.describe()

    msgs = kh.read_topic(kafka.bootstrap, t_users)
    for m in msgs:
        kh.check_headers(m)
    got = [(m.headers["pgcdc.op"], m.k, m.tombstone) for m in msgs]
    assert got == [
        ("c", {"id": 1}, False),
        ("c", {"id": 2}, False),
        ("u", {"id": 1}, False),
        ("d", {"id": 2}, False),  # the key change: delete of the old key ...
        ("d", {"id": 2}, True),   # ... its tombstone ...
        ("c", {"id": 3}, False),  # ... and a create of the new one
        ("d", {"id": 1}, False),
        ("d", {"id": 1}, True),
    ], "\n".join(map(repr, msgs))
    by_op = [m.v for m in msgs]
    assert by_op[0]["after"] == {"id": 1, "name": "one"} and by_op[0]["before"] is None
    assert by_op[2]["after"]["name"] == "uno"
    assert by_op[3]["before"]["id"] == 2 and by_op[3]["after"] is None
    assert by_op[5]["before"] is None and by_op[5]["after"]["id"] == 3
    # The two halves of the key change are one change: same LSNs, same transaction.
    assert msgs[3].headers["pgcdc.lsn"] == msgs[5].headers["pgcdc.lsn"]
    assert msgs[3].headers["pgcdc.commit_lsn"] == msgs[5].headers["pgcdc.commit_lsn"]
    # Tombstones carry their delete's headers.
    assert msgs[4].headers == msgs[3].headers
    assert msgs[7].headers == msgs[6].headers
    for m in msgs:
        if m.v is not None:
            assert m.v["source"]["table"] == users and m.v["source"]["schema"] == "public"
            assert m.v["source"]["name"] == prefix

    # No primary key: null key, and no tombstone after its delete.
    msgs = kh.read_topic(kafka.bootstrap, t_nokey)
    for m in msgs:
        kh.check_headers(m)
    assert [(m.headers["pgcdc.op"], m.key, m.tombstone) for m in msgs] == [
        ("c", None, False), ("d", None, False)], msgs

    # Composite key, schema other than public.
    msgs = kh.read_topic(kafka.bootstrap, t_other)
    for m in msgs:
        kh.check_headers(m)
    assert [(m.headers["pgcdc.op"], m.k, m.tombstone) for m in msgs] == [
        ("c", {"k1": 1, "k2": "a"}, False), ("d", {"k1": 1, "k2": "a"}, False),
        ("d", {"k1": 1, "k2": "a"}, True)], msgs

    # Everything acknowledged was confirmed, up to the end LSN.
    assert cluster.confirmed_flush(name) >= end


def test_replica_identity_using_index_keys(cluster, make_pgcdc, kafka, name):
    """REPLICA IDENTITY USING INDEX on a unique index other than the primary key: deletes
    carry only that index's columns, so the key is that index's columns on every
    operation, snapshot rows included. (Keyed by the primary key, every delete and its
    tombstone landed on {"id": null}.)"""
    prefix = "ki_" + name
    t = "ui_" + name
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, email text NOT NULL, v int)" % t)
    cluster.sql("CREATE UNIQUE INDEX %s_email ON %s (email)" % (t, t))
    cluster.sql("ALTER TABLE %s REPLICA IDENTITY USING INDEX %s_email" % (t, t))
    cluster.sql("INSERT INTO %s VALUES (1, 'a@x', 1), (2, 'b@x', 2)" % t)
    topic = kh.topic_name(prefix, "public", t)
    kafka.create_topic(topic, 1)
    settings = kh.kafka_settings(kafka, prefix)
    settings.update({"snapshot.mode": "initial", "source.tables.include": "public." + t})
    p = make_pgcdc(settings=settings)
    p.start()
    cluster.wait_slot_active(name)
    cluster.sql("INSERT INTO %s VALUES (3, 'c@x', 3)" % t)
    cluster.sql("UPDATE %s SET v = 30 WHERE id = 3" % t)
    cluster.sql("UPDATE %s SET email = 'd@x' WHERE id = 3" % t)  # the key changes
    cluster.sql("DELETE FROM %s WHERE id = 1" % t)
    cluster.sql("UPDATE %s SET id = 20 WHERE id = 2" % t)  # the primary key only
    cluster.wait_confirmed(name, cluster.current_lsn())
    assert p.stop(timeout=15) == 0, p.describe()

    msgs = kh.read_topic(kafka.bootstrap, topic)
    got = [(m.headers["pgcdc.op"], m.k, m.tombstone) for m in msgs]
    a, b, c, d = ({"email": e} for e in ("a@x", "b@x", "c@x", "d@x"))
    assert sorted(got[:2], key=lambda g: g[1]["email"]) == [("r", a, False), ("r", b, False)], got
    assert got[2:] == [
        ("c", c, False), ("u", c, False),
        ("d", c, False), ("d", c, True), ("c", d, False),
        ("d", a, False), ("d", a, True),
        ("u", b, False),
    ], "\n".join(map(repr, msgs))
    assert msgs[7].v["before"] == {"email": "a@x"}, msgs[7].v
    cluster.drop_slot(name)


def test_no_tombstones_and_default_partitions(cluster, make_pgcdc, kafka, name):
    prefix = "kn_" + name
    t = "t_" + name
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, v int)" % t)
    settings = kh.kafka_settings(kafka, prefix)
    settings["sink.kafka.tombstones"] = "false"
    kh.slot_create(cluster, name)
    cluster.sql("INSERT INTO %s SELECT g, g FROM generate_series(1, 50) g" % t)
    cluster.sql("DELETE FROM %s WHERE id <= 25" % t)
    end = cluster.current_lsn()
    p = make_pgcdc(settings=settings)
    assert p.run(["--end-lsn", harness.lsn_format(end)], timeout=60) == 0, p.describe()
    topic = kh.topic_name(prefix, "public", t)
    msgs = kh.read_topic(kafka.bootstrap, topic)
    assert not [m for m in msgs if m.tombstone]
    assert sorted((m.headers["pgcdc.op"], m.k["id"]) for m in msgs) == sorted(
        [("c", i) for i in range(1, 51)] + [("d", i) for i in range(1, 26)])
    # Auto-created topic (4 partitions on the mock): each key on one partition only.
    parts = {}
    for m in msgs:
        parts.setdefault(m.k["id"], set()).add(m.partition)
    assert all(len(s) == 1 for s in parts.values())
    assert len({m.partition for m in msgs}) > 1, "keys should spread over partitions"


def test_bad_kafka_key_is_a_config_error(cluster, make_pgcdc, kafka, name):
    settings = kh.kafka_settings(kafka, "kx")
    settings["kafka.no.such.property"] = "1"
    p = make_pgcdc(settings=settings)
    rc = p.run(timeout=30)
    assert rc == 2, p.describe()
    assert "kafka.no.such.property" in p.stderr(), p.describe()

    # A bad value of a secret key is named, its value never shown.
    settings = kh.kafka_settings(kafka, "kx")
    settings["kafka.sasl.mechanism"] = "PLAIN"
    settings["kafka.security.protocol"] = "sasl_plaintext"
    settings["kafka.ssl.key.password"] = "s3cr3t-Value"
    settings["kafka.enable.idempotence"] = "maybe"
    p = make_pgcdc(settings=settings, sub="q")
    rc = p.run(timeout=30)
    assert rc == 2, p.describe()
    assert "kafka.enable.idempotence" in p.stderr()
    assert "s3cr3t-Value" not in p.stderr() + p.stdout()

    # Idempotence needs acks=all: librdkafka's own check, reported as configuration.
    settings = kh.kafka_settings(kafka, "kx")
    settings["kafka.acks"] = "1"
    p = make_pgcdc(settings=settings, sub="r")
    rc = p.run(timeout=30)
    assert rc == 2, p.describe()
    assert "acks" in p.stderr()


def test_weaker_delivery_is_refused(cluster, make_pgcdc, kafka, name):
    """Settings that give up at-least-once or per-key order: exit 2 with the reason, even
    where librdkafka alone accepts them, unless sink.kafka.allow_weaker_delivery."""
    kh.slot_create(cluster, name)
    settings = kh.kafka_settings(kafka, "kw")
    settings["kafka.enable.idempotence"] = "false"
    settings["kafka.acks"] = "1"
    settings["kafka.message.timeout.ms"] = "30000"
    p = make_pgcdc(settings=settings)
    assert p.run(timeout=30) == 2, p.describe()
    err = p.error_lines()
    assert len(err) == 1, p.describe()
    for needle in ("kafka.acks=1", "kafka.message.timeout.ms=30000",
                   "kafka.enable.idempotence=false with 1000000 requests in flight",
                   "sink.kafka.allow_weaker_delivery = true"):
        assert needle in err[0], (needle, err[0])

    settings["sink.kafka.allow_weaker_delivery"] = "true"
    end = cluster.current_lsn()
    p = make_pgcdc(settings=settings, sub="allowed")
    assert p.run(["--end-lsn", harness.lsn_format(end)], timeout=30) == 0, p.describe()
    assert any("weaker delivery accepted" in l for l in p.lines_at("warn")), p.describe()


def test_missing_bootstrap_servers(cluster, make_pgcdc, name):
    p = make_pgcdc(settings={"sink.type": "kafka"})
    rc = p.run(timeout=30)
    assert rc == 2, p.describe()
    assert "kafka.bootstrap.servers" in p.stderr()
