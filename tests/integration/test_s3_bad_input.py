"""The S3 sink's bad input: a URL that is not s3://bucket[/prefix] and missing credentials
are exit 2; a missing bucket, refused credentials and a skewed clock are exit 1 with the
reason; an unreachable endpoint is retried by run (SIGTERM still exits at once) and a FAIL
line in check."""

import pytest

import harness as h
import s3_harness as s3h


@pytest.fixture(scope="module")
def s3():
    s = s3h.S3rver().start()
    yield s
    s.stop()


def run_once(make_pgcdc, settings, env=s3h.CREDS, args=("run",), sub="p", timeout=60):
    p = make_pgcdc(settings=settings, env=env, args=list(args), sub=sub)
    rc = p.run(timeout=timeout)
    return rc, "\n".join(p.lines + p.stdout_lines), p


def test_bad_url_and_missing_credentials(make_pgcdc, s3, name):
    for i, url in enumerate(["https://cdc/x", "s3://", "s3://Bad_Bucket!/x", "s3://cdc/a//b"]):
        rc, out, _ = run_once(make_pgcdc, s3.settings(name, **{"sink.s3.url": url}), sub="u%d" % i)
        assert rc == 2, out
        assert "sink.s3.url" in out and "s3://BUCKET" in out, out
    rc, out, _ = run_once(make_pgcdc, s3.settings(name), env={}, sub="c")
    assert rc == 2, out
    assert "sink.s3.access_key_id" in out and "AWS_ACCESS_KEY_ID" in out, out
    # A secret given on the command line or in the file never shows up.
    rc, out, _ = run_once(make_pgcdc, s3.settings(name, **{
        "sink.s3.url": "nope", "sink.s3.access_key_id": "AKIDX",
        "sink.s3.secret_access_key": "hunter2secret"}), env={}, sub="s")
    assert rc == 2 and "hunter2secret" not in out, out


def test_missing_bucket(make_pgcdc, s3, name):
    rc, out, _ = run_once(make_pgcdc, s3.settings(name, **{"sink.s3.url": "s3://nosuchbkt/x"}))
    assert rc == 1, out
    assert "nosuchbkt" in out and "does not exist" in out, out
    rc, out, _ = run_once(make_pgcdc, s3.settings(name, **{"sink.s3.url": "s3://nosuchbkt/x"}),
                          args=("check",), sub="chk")
    assert rc == 1 and 'FAIL s3_bucket: S3 bucket "nosuchbkt" does not exist' in out, out


@pytest.mark.parametrize("code,words", [
    ("InvalidAccessKeyId", "refused the credentials of access key id S3RVER"),
    ("SignatureDoesNotMatch", "sink.s3.secret_access_key"),
    ("RequestTimeTooSkewed", "clock"),
])
def test_refused(make_pgcdc, s3, name, code, words):
    r = s3h.Refuser(403, code)
    try:
        rc, out, p = run_once(make_pgcdc, s3.settings(name, **{"sink.s3.endpoint": r.endpoint}))
    finally:
        r.stop()
    assert rc == 1, out
    assert words in out and code in out, out
    assert "S3RVER:" not in out  # the secret half of userpwd


def test_region_mismatch(make_pgcdc, s3, name):
    r = s3h.Refuser(400, "AuthorizationHeaderMalformed", region="eu-west-1")
    try:
        rc, out, _ = run_once(make_pgcdc, s3.settings(name, **{"sink.s3.endpoint": r.endpoint}),
                              args=("check",))
    finally:
        r.stop()
    assert rc == 1 and "it is in eu-west-1" in out and "set sink.s3.region = eu-west-1" in out, out


def test_unreachable_endpoint(make_pgcdc, s3, name):
    dead = "http://127.0.0.1:%d" % h.free_port()
    p = make_pgcdc(settings=s3.settings(name, **{"sink.s3.endpoint": dead}), env=s3h.CREDS)
    p.start()
    p.wait_log(r"S3 request failed; retrying.*127\.0\.0\.1", timeout=30)
    assert p.stop(timeout=10) in (0, 1), p.describe()
    rc, out, _ = run_once(make_pgcdc, s3.settings(name, **{"sink.s3.endpoint": dead}),
                          args=("check",), sub="chk", timeout=30)
    assert rc == 1 and "FAIL s3_bucket" in out and "sink.s3.endpoint" in out, out
