#!/usr/bin/env python3
"""Print the events of a pgcdc file-sink directory as they arrive (like `tail -F`, but
following segment rotation: `N-LSN.jsonl.open` becomes `N-LSN.jsonl` and `N+1-...` starts).

    scripts/follow_segments.py [--full] [--log FILE] [--pid PID] DIR

One line per event: op, schema.table, the row (after, or before for deletes), commit LSN.
--full prints the whole JSON event instead. --log also follows a pgcdc log file, prefixing
its lines with [pgcdc]. --pid stops following once that process has exited.
"""

import argparse
import json
import os
import sys
import time


def lsn_format(v):
    return "%X/%X" % (v >> 32, v & 0xFFFFFFFF)


def describe(line, full):
    if full:
        return line
    try:
        e = json.loads(line)
        s = e["source"]
        row = e["after"] if e["after"] is not None else e["before"]
        row = json.dumps(row, separators=(",", ":"), ensure_ascii=False) if row is not None else ""
        if len(row) > 160:
            row = row[:157] + "..."
        return "%s %s.%s %s  (commit %s, txid %s)" % (
            e["op"], s["schema"], s["table"], row, lsn_format(s["commit_lsn"]), s["txId"])
    except (ValueError, KeyError, TypeError):
        return line


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--log")
    ap.add_argument("--pid", type=int)
    a = ap.parse_args()

    offsets = {}  # segment stem "N-LSN" -> bytes consumed
    partial = {}
    log_off = 0
    while True:
        progressed = False
        try:
            names = sorted(n for n in os.listdir(a.dir)
                           if n.endswith((".jsonl", ".jsonl.open", ".jsonl.part")))
        except FileNotFoundError:
            names = []
        for n in names:
            if n.endswith(".jsonl.part"):
                break  # a transaction not yet committed: what follows waits for it
            stem = n.split(".jsonl")[0]
            try:
                with open(os.path.join(a.dir, n), "rb") as f:
                    f.seek(offsets.get(stem, 0))
                    data = f.read()
            except FileNotFoundError:
                continue  # renamed under us: next round
            if not data:
                continue
            offsets[stem] = offsets.get(stem, 0) + len(data)
            data = partial.pop(stem, b"") + data
            lines = data.split(b"\n")
            if lines[-1]:
                partial[stem] = lines[-1]
            for line in lines[:-1]:
                print(describe(line.decode("utf-8", "replace"), a.full), flush=True)
            progressed = True
        if a.log:
            try:
                with open(a.log, "rb") as f:
                    f.seek(log_off)
                    data = f.read()
                cut = data.rfind(b"\n") + 1
                for line in data[:cut].decode("utf-8", "replace").splitlines():
                    print("[pgcdc] " + line, flush=True)
                log_off += cut
                progressed = progressed or cut > 0
            except FileNotFoundError:
                pass
        if a.pid and not alive(a.pid) and not progressed:
            return 0
        if not progressed:
            time.sleep(0.2)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
    except BrokenPipeError:
        sys.exit(0)
