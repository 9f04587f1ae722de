"""The file sink's disk fills up while the database keeps writing.

pgcdc must neither die nor confirm anything that did not reach the disk: the slot's
confirmed_flush_lsn stalls while the disk is full, and a kill -9 at that moment loses
nothing (if the confirmed LSN had passed a change that never reached the files, the
server would not send it again). Once space is freed the stream catches up, and the
segments hold every committed change exactly once, in commit order."""

import os
import subprocess
import time

import pytest

import harness as h


def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", path],
                       capture_output=True, text=True)
    return r.returncode == 0, r.stderr.strip()


def _resize(path, size):
    subprocess.run(["mount", "-o", "remount,size=%s" % size, path], check=True)


def test_disk_full_then_freed(cluster, make_pgcdc, name, writers, workdir):
    mnt = os.path.join(workdir, "small-disk")
    ok, why = _mount_tmpfs(mnt, "1m")
    if not ok:
        pytest.skip("cannot mount a small tmpfs to fill (needs root): %s" % why)
    try:
        h.Writer.create_tables(cluster, name)
        p = make_pgcdc(settings={"sink.file.dir": os.path.join(mnt, "data")})
        p.start()
        cluster.wait_slot_active(name, timeout=30)
        w = h.Writer(cluster, prefix=name, pause=0.001)
        writers.append(w)
        w.start()

        h.wait_until(lambda: any("No space left on device" in line for line in p.lines), 120,
                     what="pgcdc to hit the full disk")
        p.assert_alive("with its disk full")
        # It keeps retrying; the confirmed LSN holds still while the database moves on.
        time.sleep(1.0)
        c_full = cluster.confirmed_flush(name)
        lsn_full = cluster.current_lsn()
        for _ in range(10):
            time.sleep(0.2)
            p.assert_alive("with its disk full")
            assert cluster.confirmed_flush(name) == c_full, \
                "confirmed_flush_lsn moved while nothing could be written"
        assert cluster.current_lsn() > lsn_full, "the writer should keep committing"
        assert not p.error_lines(), "a full disk is retried, not fatal:\n" + p.describe()

        # The worst moment to crash: anything confirmed but not on disk would be gone.
        p.kill9()
        cluster.wait_slot_active(name, active=False, timeout=30)
        _resize(mnt, "256m")
        p.start()
        w.wait_txns(len(w.committed) + 50)
    finally:
        for wr in writers:
            wr.stop()
        end = cluster.current_lsn()
    rc = p.run(["--end-lsn", h.lsn_format(end)], timeout=120) if not p.alive() else None
    if rc is None:
        cluster.wait_confirmed(name, end, timeout=120)
        assert p.stop(timeout=12) == 0, p.describe()
    else:
        assert rc == 0, p.describe()
    try:
        segs = h.check_segment_files(p.data_dir, strict=True)
        events = [e for _, evs in segs for e in evs]
        txns = h.verify_writers(events, writers, cluster)
        print("txns=%d events=%d confirmed while full=%s" % (len(txns), len(events),
                                                              h.lsn_format(c_full)))
    finally:
        cluster.drop_slot(name)
        subprocess.run(["umount", "-l", mnt], check=False)
