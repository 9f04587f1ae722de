"""HTTP sink (sink.type = http) against a Python receiver on 127.0.0.1.

- Faults at random (500, 429 with Retry-After, hanging past the timeout, connection resets)
  while pgcdc is kill -9'd at random moments: every committed change arrives at least once,
  first arrivals in commit order, and deduplicated on (commit_lsn, lsn) they equal what the
  writer committed; every request's signature checks out.
- HTTPS with a self-signed certificate: works with sink.http.ca_file, fails (exit 1, the
  reason and the ca_file fix) without it; `check` says the same.
- 413 halves the batch; a single event refused with 413 is permanent. Other refusals stop
  with exit 1 (status and start of the body), or go to the dead letters with dead_letter.
- SIGTERM while the receiver keeps failing: exit within 10 s, nothing confirmed past what
  was delivered.
- Bad settings are exit 2.
"""

import glob
import json
import os
import random
import time

import urllib.request

import pytest

import harness
import http_harness as hh

KILLS = int(os.environ.get("PGCDC_IT_HTTP_KILLS", "5"))


def scrape(port):
    """The /metrics text as {series: value}."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as f:
        text = f.read().decode()
    return {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
            if l and not l.startswith("#")}


def slot_create(cluster, slot):
    cluster.sql("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (slot,),
                dbname=cluster.dbname)


@pytest.fixture
def receivers():
    made = []
    yield made
    for r in made:
        r.stop()


def test_faults_and_kill9(cluster, make_pgcdc, writers, receivers, name):
    seed = int(os.environ.get("PGCDC_IT_SEED", time.time_ns() % 100000))
    print("seed", seed)
    rng = random.Random(seed)
    r = hh.Receiver(secret="s3cr3t-" + name, fault_rate=0.3, seed=seed, hang_s=1.2)
    receivers.append(r)
    wp = "wh" + name[-6:]
    harness.Writer.create_tables(cluster, wp)
    slot_create(cluster, name)
    p = make_pgcdc(settings=hh.http_settings(r, **{
        "sink.http.timeout_ms": "800", "sink.http.batch_max_events": "50",
        "sink.http.header.Authorization": "Bearer tok-" + name}),
        env={"PGCDC_SINK_HTTP_SIGNING_SECRET": "s3cr3t-" + name})
    p.start()
    w = harness.Writer(cluster, prefix=wp, pause=0.003, seed=seed)
    writers.append(w)
    w.start()
    w.wait_txns(50)
    confirmed_at_kill = harness.kill9_loop(cluster, p, name, rng, KILLS, pause=(0.3, 1.5))
    w.wait_txns(len(w.expected()) + 30)
    w.stop()
    assert w.failure is None
    cluster.wait_confirmed(name, cluster.current_lsn(), timeout=60)
    assert p.stop(timeout=15) == 0, p.describe()

    assert confirmed_at_kill == sorted(confirmed_at_kill)
    assert r.bad_signatures == [], r.bad_signatures[:3]
    assert sum(r.faults.values()) > 0, r.faults
    events = r.events()
    firsts = hh.first_copies(events)
    # First arrivals in commit order, each transaction whole; equal to what was committed.
    harness.verify_writers(firsts, [w], cluster=cluster)
    # A copy arrives again only from the slot's confirmed position at a kill (or a retry
    # of the same batch): never a change from before what was confirmed.
    assert all(h.get("Authorization") == "Bearer tok-" + name for h in r.headers_seen)
    keys = [k for k, _, _ in r.batches]
    assert all(k and k.count("-") == 2 for k in keys), keys[:3]
    print("%d kills, %d requests, faults %r, %d events (%d first copies)" % (
        KILLS, r.requests, r.faults, len(events), len(firsts)))


def test_https_self_signed(cluster, make_pgcdc, workdir, receivers, name):
    cert, key = hh.make_cert(workdir)
    r = hh.Receiver(certfile=cert, keyfile=key)
    receivers.append(r)
    slot_create(cluster, name)
    t = "tls_" + name
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, v text)" % t)
    cluster.sql("INSERT INTO %s VALUES (1, 'a'), (2, 'b')" % t)

    # Without ca_file: the system store does not know the certificate.
    p = make_pgcdc(settings=hh.http_settings(r), sub="noca")
    assert p.run(timeout=30) == 1, p.describe()
    err = p.error_lines()[-1]
    assert "certificate" in err and "sink.http.ca_file" in err, err
    chk = make_pgcdc(settings=hh.http_settings(r), sub="chk", args=["check"])
    assert chk.run(timeout=30) == 1
    fail = [l for l in chk.stdout_lines if l.startswith("FAIL http")]
    assert fail and "sink.http.ca_file" in fail[0], chk.stdout_lines
    assert r.events() == []

    port = harness.free_port()
    p = make_pgcdc(settings=hh.http_settings(r, **{"sink.http.ca_file": cert,
                                                   "metrics.listen": "127.0.0.1:%d" % port}),
                   sub="ca")
    p.start()
    harness.wait_until(lambda: len(r.events()) >= 2, 30, what="events over https")
    # The receiver holds the events before pgcdc has read its answer and counted it.
    harness.wait_until(lambda: scrape(port)["pgcdc_http_batch_seconds_count"] >= 1, 30,
                       what="the delivered batch counted")
    m = scrape(port)
    assert m['pgcdc_http_requests_total{class="2xx"}'] >= 1, m
    assert m["pgcdc_http_batch_seconds_count"] >= 1, m
    assert m['pgcdc_http_batch_seconds_bucket{le="+Inf"}'] == m["pgcdc_http_batch_seconds_count"]
    assert p.stop() == 0
    got = [(e["op"], e["after"]["id"]) for e in r.events() if e["source"]["table"] == t]
    assert got == [("c", 1), ("c", 2)], got
    chk = make_pgcdc(settings=hh.http_settings(r, **{"sink.http.ca_file": cert}), sub="chk2",
                     args=["check"])
    chk.run(timeout=30)
    assert any(l.startswith("PASS http") for l in chk.stdout_lines), chk.stdout_lines
    assert "HEAD" in r.methods


def test_413_halves_then_single_event_is_permanent(cluster, make_pgcdc, receivers, name):
    r = hh.Receiver(max_body=3000)
    receivers.append(r)
    slot_create(cluster, name)
    t = "big_" + name
    cluster.sql("CREATE TABLE %s (id int PRIMARY KEY, v text)" % t)
    # One transaction of 40 small rows (~400 bytes each): one batch, too large, halved.
    cluster.sql("INSERT INTO %s SELECT g, repeat('x', 100) FROM generate_series(1, 40) g" % t)
    cluster.sql("INSERT INTO %s VALUES (1000, repeat('y', 5000))" % t)
    p = make_pgcdc(settings=hh.http_settings(r, **{"sink.http.linger_ms": "200"}))
    assert p.run(timeout=30) == 1, p.describe()
    ids = [e["after"]["id"] for e in r.events() if e["source"]["table"] == t]
    assert ids == list(range(1, 41)), ids
    assert r.too_large >= 2
    err = p.error_lines()[-1]
    assert "413" in err and "single event" in err, err
    # dead_letter: the refused event is kept on disk and the stream goes on past it.
    r.max_body = 3000
    cluster.sql("INSERT INTO %s VALUES (2000, 'after')" % t)
    p2 = make_pgcdc(settings=hh.http_settings(r, **{
        "sink.http.on_permanent_error": "dead_letter"}), sub="dl")
    p2.start()
    harness.wait_until(lambda: any(e["after"]["id"] == 2000 for e in r.events()
                                   if e["source"]["table"] == t), 30, what="event after the DLQ")
    assert p2.stop() == 0
    dl = glob.glob(os.path.join(p2.state_dir, "dead-letter", "*.jsonl"))
    lines = [json.loads(l) for f in dl for l in open(f)]
    assert [l["event"]["after"]["id"] for l in lines] == [1000], lines
    assert "413" in lines[0]["reason"]


def test_refusal_stops_with_status_and_body(cluster, make_pgcdc, receivers, name):
    r = hh.Receiver(status=422)
    receivers.append(r)
    slot_create(cluster, name)
    cluster.sql("CREATE TABLE r_%s (id int PRIMARY KEY)" % name)
    before = cluster.current_lsn()
    cluster.sql("INSERT INTO r_%s VALUES (1)" % name)
    p = make_pgcdc(settings=hh.http_settings(r))
    assert p.run(timeout=30) == 1, p.describe()
    err = p.error_lines()[-1]
    assert "HTTP 422" in err and "refused by the test receiver" in err, err
    assert cluster.confirmed_flush(name) <= before  # not past the refused change


def test_sigterm_during_retries(cluster, make_pgcdc, receivers, name):
    r = hh.Receiver(status=503)
    receivers.append(r)
    slot_create(cluster, name)
    cluster.sql("CREATE TABLE s_%s (id int PRIMARY KEY)" % name)
    port = harness.free_port()
    p = make_pgcdc(settings=hh.http_settings(r, **{"metrics.listen": "127.0.0.1:%d" % port}))
    p.start()
    before = cluster.current_lsn()
    cluster.sql("INSERT INTO s_%s VALUES (1)" % name)
    harness.wait_until(lambda: r.requests >= 3, 30, what="retries")
    # The receiver counts a request before pgcdc has read its answer and counted it.
    harness.wait_until(lambda: scrape(port)["pgcdc_http_retries_total"] >= 3, 30,
                       what="the retries counted")
    m = scrape(port)
    assert m['pgcdc_http_requests_total{class="5xx"}'] >= 3, m
    assert m["pgcdc_http_retries_total"] >= 3, m
    assert m['pgcdc_http_requests_total{class="2xx"}'] == 0, m
    t0 = time.monotonic()
    rc = p.stop(timeout=12)
    assert time.monotonic() - t0 < 10, p.describe()
    assert rc == 0, p.describe()
    assert cluster.confirmed_flush(name) <= before  # the undelivered insert is not confirmed


@pytest.mark.parametrize("key,value,what", [
    ("sink.http.url", "ftp://example.com/x", "http:// or https://"),
    ("sink.http.header.X Bad", "1", "HTTP token"),
    ("sink.http.header.Content-Type", "text/plain", "sets this header itself"),
])
def test_bad_settings_exit_2(make_pgcdc, key, value, what):
    s = {"sink.type": "http", "sink.http.url": "http://127.0.0.1:9/x", key: value}
    p = make_pgcdc(settings=s)
    assert p.run(timeout=30) == 2, p.describe()
    assert what in p.stderr(), p.stderr()


def test_secrets_stay_out_of_logs(make_pgcdc, name):
    # A header value and the signing secret given on the command line never reach stderr,
    # even when the run fails on them.
    p = make_pgcdc(settings={"sink.type": "http"}, opts={
        "sink.http.url": "ftp://x/", "sink.http.signing_secret": "TOPSECRET1",
        "sink.http.header.Authorization": "Bearer TOPSECRET2"})
    assert p.run(timeout=30) == 2
    assert "TOPSECRET" not in p.stderr()
