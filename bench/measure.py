"""How figures are taken, for every section of bench.py: process trees and their memory and CPU
from /proc, percentiles and medians, the progress log."""

import os
import statistics
import sys
import threading
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------
# /proc helpers

def tree_pids(pid):
    """pid and all its descendants (children of every thread)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                try:
                    with open(f"/proc/{p}/task/{tid}/children") as f:
                        todo += [int(c) for c in f.read().split()]
                except OSError:
                    pass
        except OSError:
            pass
    return out


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(pid):
    return sum(status_kb(p, "VmRSS") for p in tree_pids(pid))


def tree_pss_kb(pid):
    """PSS of a process tree (/proc/PID/smaps_rollup): pages shared between its processes (llmspell's
    kernel and its zygote map the same binary) counted once, not once per process as in RSS."""
    return sum(smaps_rollup_kb(p).get("Pss", 0) for p in tree_pids(pid))


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    except (OSError, IndexError, ValueError):
        return 0


def tree_cpu_ticks(pid):
    return sum(cpu_ticks(p) for p in tree_pids(pid))


def reset_peak_rss(pid):
    """Resets VmHWM (Linux: write 5 to clear_refs); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples a process tree's RSS every few ms in a thread; .peak_kb when stopped."""

    def __init__(self, pid, interval=0.005):
        self.pid, self.interval, self.peak_kb = pid, interval, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, tree_rss_kb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_kb = max(self.peak_kb, tree_rss_kb(self.pid))


# ----------------------------------------------------------------------------------------------------
# statistics

def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    i = min(len(xs), max(1, int(-(-len(xs) * p // 1)))) - 1  # nearest rank
    return xs[i]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def r(x, nd=1):
    return None if x is None else round(x, nd)


def smaps_rollup_kb(pid):
    """{"Rss": kB, "Pss": kB, ...} of one process from /proc/PID/smaps_rollup ({} if unreadable)."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[-1] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def ratio(a, b):
    return None if a is None or not b else a / b
