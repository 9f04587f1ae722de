"""A rotation of the file sink fails: closing, renaming (.jsonl.open -> .jsonl) or the
directory fsync after it returns EIO (tests/fixtures/faultfs.c, by LD_PRELOAD), while
writes go on with small segments. The events of that segment were confirmed already, so
the checkpoint must keep naming it until the rotation is retried and succeeds: pgcdc
keeps going, never leaves a second open segment behind, and after a kill -9 (the last
case while the failure still lasts) and a restart without the fault the files hold every
committed change exactly once, in commit order."""

import os

import pytest

import harness as h

# (case, PGCDC_FAULT_OPS, _SUFFIX, _SKIP, _COUNT, _AFTER, what pgcdc reports)
CASES = [
    ("rename", "rename", ".jsonl.open", 0, 3, 0, "cannot rename segment"),
    # The rename happened, yet reported an error: the retry finds it done.
    ("rename_done", "rename", ".jsonl.open", 0, 3, 1, "cannot rename segment"),
    ("close", "close", ".jsonl.open", 0, 3, 0, "cannot close segment"),
    # The directory fsyncs: at start-up, after the first segment's creation, then the
    # rotation's, after the rename.
    ("dir_fsync", "fsync", "/p/data", 2, 3, 0, "cannot fsync"),
    # It keeps failing; killed while the rotation is unfinished.
    ("rename_stuck", "rename", ".jsonl.open", 0, 10 ** 9, 0, "cannot rename segment"),
]


def _shim():
    path = os.environ.get("PGCDC_FAULTFS") or os.path.join(
        os.environ.get("PGCDC_BUILD_DIR", os.path.join(h.REPO, "build")), "tests",
        "libpgcdc_faultfs.so")
    if not os.path.exists(path):
        pytest.fail("no fault-injection shim at %s: build the pgcdc_faultfs target" % path)
    return path


@pytest.mark.parametrize("case,ops,suffix,skip,count,after,message", CASES,
                         ids=[c[0] for c in CASES])
def test_failed_rotation_keeps_confirmed_events(cluster, make_pgcdc, name, writers, case, ops,
                                                suffix, skip, count, after, message):
    h.Writer.create_tables(cluster, name)
    fault = {
        "LD_PRELOAD": _shim(),
        "PGCDC_FAULT_OPS": ops,
        "PGCDC_FAULT_SUFFIX": suffix,
        "PGCDC_FAULT_SKIP": str(skip),
        "PGCDC_FAULT_COUNT": str(count),
        "PGCDC_FAULT_AFTER": str(after),
        # An ASan build wants its runtime first; the shim comes before it.
        "ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"),
    }
    p = make_pgcdc(opts={"sink.file.segment_bytes": "4096"}, env=fault)
    p.start()
    cluster.wait_slot_active(name, timeout=30)
    w = h.Writer(cluster, prefix=name, pause=0.002)
    writers.append(w)
    w.start()
    try:
        failures = lambda: sum(1 for line in p.lines if line.startswith("faultfs: failing"))
        h.wait_until(lambda: failures() >= 3 or not p.alive(), 60, what="three injected failures")
        p.assert_alive("after failed rotations")
        assert any(message in line for line in p.lines if "stream interrupted" in line), \
            "pgcdc did not report %r:\n%s" % (message, p.describe())
        if count < 10 ** 9:
            # The fault is over: rotations go on in the same process, one open segment.
            closed = len([s for s in h.list_segments(p.data_dir) if not s.open])
            h.wait_until(lambda: len([s for s in h.list_segments(p.data_dir)
                                      if not s.open]) >= closed + 2 or not p.alive(), 60,
                         what="rotations after the fault")
            p.assert_alive("after the fault passed")
        assert not p.error_lines(), "a failed rotation is retried, not fatal:\n" + p.describe()
        assert p.kill9() == -9, p.describe()
        h.check_segment_files(p.data_dir, strict=False)  # one open segment, no stale one
        cluster.wait_slot_active(name, active=False, timeout=30)
        del p.extra_env["LD_PRELOAD"], p.extra_env["PGCDC_FAULT_OPS"]
        p.start()
        w.wait_txns(len(w.committed) + 20)
    finally:
        w.stop()
    end = cluster.current_lsn()
    cluster.wait_confirmed(name, end, timeout=60)
    assert p.stop(timeout=12) == 0, p.describe()
    segs = h.check_segment_files(p.data_dir, strict=True)
    events = [e for _, evs in segs for e in evs]
    txns = h.verify_writers(events, [w], cluster)
    print("%s: txns=%d events=%d segments=%d" % (case, len(txns), len(events), len(segs)))
    cluster.drop_slot(name)
