#!/usr/bin/env python3
"""The latency floor of a durable file sink on this disk, right now (run by bench.py
beside pgcdc in the latency mode).

    bench_disk_floor.py FILE SECONDS RATE

A minimal group-commit writer: events "arrive" at RATE per second; the writer appends
every event that has arrived (200 bytes each) to FILE and fdatasyncs, in a loop. An
event's latency is the end of the fdatasync that covered it minus its arrival time: no
decoding, no network, no checkpoint. Prints one JSON object: p50, p99 and max in ms, the
number of fdatasyncs and the time spent in ones over 100 ms.
"""

import json
import os
import statistics
import sys
import time


def main():
    path, secs, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    step = 1.0 / rate
    t0 = time.monotonic()
    n_events = int(secs * rate)
    lat, syncs, slow_s = [], 0, 0.0
    k = 0  # events covered so far
    try:
        while k < n_events:
            now = time.monotonic()
            upto = min(n_events, int((now - t0) / step) + 1)  # arrived by now
            if upto <= k:
                time.sleep(t0 + k * step - now)
                continue
            os.write(fd, b"x" * (200 * (upto - k)))
            s = time.monotonic()
            os.fdatasync(fd)
            done = time.monotonic()
            syncs += 1
            if done - s > 0.1:
                slow_s += done - s
            lat.extend((done - (t0 + i * step)) * 1000.0 for i in range(k, upto))
            k = upto
    finally:
        os.close(fd)
        os.unlink(path)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    print(json.dumps({"events": len(lat), "p50": q[49], "p99": q[98], "max": max(lat),
                      "syncs": syncs, "slow_sync_s": slow_s}))


if __name__ == "__main__":
    main()
