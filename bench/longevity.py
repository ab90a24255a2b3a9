"""longevity: does a kernel's memory grow with what it has run? (issue 24) llmspell beside ipykernel.

Three scenarios, each on a fresh kernel through stock jupyter_client, RSS of the kernel's process tree
read from /proc:

small     N small cells (20 000; --quick 2 000), each changing a global, iopub read by the client: RSS
          growth from after a 200-cell warm-up to the end (target for llmspell: <= 2 MB over 20 000)
results   100 cells each returning a 5 MB string, then a full GC: RSS above the idle baseline
          (target <= 32 MB)
stalled   an iopub subscriber that connects and never reads (its ZeroMQ takes one message and then
          nothing, like a suspended front end) while 30 cells each print 5 MB (150 MB); the reading
          client checks it got every byte. Peak RSS above the baseline while printing (target <= 64 MB),
          and RSS once the stalled subscriber has left and one more cell ran (target within 32 MB)

Alone: python bench/longevity.py [--kernels llmspell,python3] [--small 20000] (with the llmspell
kernelspec installed where jupyter_client finds it).
"""

from __future__ import annotations

import argparse
import json
import time

import zmq

from measure import RssSampler, log, tree_rss_kb

CODE = {
    # kernel language -> (small cell, big result, gc, big print, warm-up)
    "lua": ("x = {i}", "return string.rep('y', 5e6)", "collectgarbage(); collectgarbage()",
            "io.write(string.rep('z', 5e6))", "x = 0"),
    "python": ("x = {i}", "'y' * 5_000_000", "import gc; gc.collect()",
               "import sys; sys.stdout.write('z' * 5_000_000)", "x = 0"),
}
BIG = 5_000_000


def run_cell(kc, code: str, timeout: float = 120.0) -> dict:
    """Executes code, reads its iopub through idle; returns the bytes of stream text, the
    execute_result's text length and the reply status."""
    msg_id = kc.execute(code, allow_stdin=False)
    got = {"stream": 0, "result": 0}
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream":
            got["stream"] += len(msg["content"]["text"])
        elif kind == "execute_result":
            got["result"] += len(msg["content"]["data"].get("text/plain", ""))
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
    got["status"] = reply["content"]["status"]
    return got


class Kernel:
    """A fresh kernel of the kernelspec `name` and a started blocking client."""

    def __init__(self, name: str):
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name=name)
        self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        info = self.kc.kernel_info(reply=True, timeout=30)
        self.language = info["content"]["language_info"]["name"]
        self.code = CODE["lua" if self.language == "lua" else "python"]
        self.pid = self.km.provisioner.process.pid

    def rss(self) -> int:
        return tree_rss_kb(self.pid)

    def settle(self):
        """Lets the kernel finish what follows a reply (freeing, trimming) before a reading."""
        time.sleep(0.3)

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def small_cells(name: str, cells: int) -> dict:
    k = Kernel(name)
    try:
        small = k.code[0]
        for i in range(200):
            run_cell(k.kc, small.format(i=i))
        k.settle()
        before = k.rss()
        for i in range(cells):
            run_cell(k.kc, small.format(i=i))
        k.settle()
        after = k.rss()
        return {"cells": cells, "rss_before_kb": before, "rss_after_kb": after, "growth_kb": after - before}
    finally:
        k.close()


def big_results(name: str, cells: int = 100) -> dict:
    k = Kernel(name)
    try:
        _, result, gc, _, warm = k.code
        run_cell(k.kc, warm)
        k.settle()
        baseline = k.rss()
        with RssSampler(k.pid, interval=0.02) as peak:
            for _ in range(cells):
                got = run_cell(k.kc, result)
                assert got["result"] >= BIG, got
        run_cell(k.kc, gc)
        k.settle()
        after = k.rss()
        return {"cells": cells, "baseline_kb": baseline, "peak_kb": peak.peak_kb, "after_gc_kb": after,
                "above_baseline_kb": after - baseline}
    finally:
        k.close()


def stalled_subscriber(name: str, cells: int = 30) -> dict:
    k = Kernel(name)
    ctx = zmq.Context()
    try:
        _, _, _, big_print, warm = k.code
        run_cell(k.kc, warm)
        k.settle()
        baseline = k.rss()
        info = k.km.get_connection_info()
        stalled = ctx.socket(zmq.SUB)
        # Like a suspended client: its ZeroMQ takes in one message and then reads nothing more, so
        # the kernel's socket buffers fill and what follows waits in the kernel.
        stalled.setsockopt(zmq.RCVHWM, 1)
        stalled.setsockopt(zmq.RCVBUF, 4096)
        stalled.setsockopt(zmq.SUBSCRIBE, b"")
        stalled.connect(f"{info['transport']}://{info['ip']}:{info['iopub_port']}")
        time.sleep(0.5)  # the subscription reaches the kernel; nothing is ever read
        received = 0
        with RssSampler(k.pid, interval=0.02) as peak:
            for _ in range(cells):
                received += run_cell(k.kc, big_print, timeout=300)["stream"]
        stalled.close(linger=0)
        time.sleep(0.5)
        run_cell(k.kc, warm)
        k.settle()
        after = k.rss()
        return {"printed": cells * BIG, "received": received, "baseline_kb": baseline,
                "peak_kb": peak.peak_kb, "peak_above_kb": peak.peak_kb - baseline,
                "after_leave_kb": after, "after_above_kb": after - baseline}
    finally:
        k.close()
        ctx.destroy(linger=0)


def bench_longevity(kernels: list[tuple[str, str]], cells: int) -> dict:
    """{label: {small, results, stalled}} for each (label, kernelspec name); a scenario that fails is
    noted in its place and the others still run."""
    out = {}
    for label, spec in kernels:
        out[label] = {}
        for what, fn in (("small", lambda: small_cells(spec, cells)), ("results", lambda: big_results(spec)),
                         ("stalled", lambda: stalled_subscriber(spec))):
            log(f"longevity: {label} {what} ...")
            try:
                out[label][what] = fn()
            except Exception as e:
                out[label][what] = {"error": f"{type(e).__name__}: {e}"}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", default="llmspell,python3")
    ap.add_argument("--small", type=int, default=20000)
    ap.add_argument("--only", default="small,results,stalled")
    a = ap.parse_args()
    for name in a.kernels.split(","):
        for what in a.only.split(","):
            fn = {"small": lambda n: small_cells(n, a.small), "results": big_results,
                  "stalled": stalled_subscriber}[what]
            print(name, what, json.dumps(fn(name)), flush=True)


if __name__ == "__main__":
    main()
