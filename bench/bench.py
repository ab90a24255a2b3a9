#!/usr/bin/env python3
"""`make bench`: llmspell side by side with xeus-python, ipykernel, ILua and a stock lua, and the targets of issues 5 and 12.

usage: bench.py --bin target/release/llmspell [--quick] [--json target/bench.json]
                [--sections kernels,client,cli,scale,state,binary,run,debug] [--kernels llmspell,xeus-python,...]
                [--only run] [--lua PATH]

`--only run` (or --sections run) runs only the comparison of `llmspell run` with a stock lua (issue 12): no
Jupyter kernels and no Python packages needed. It compares with $LUA (or --lua), else Debian's lua5.4.

One run measures, section after section, on the same machine:

kernels   through stock jupyter_client 8.x, every kernel with the same client settings (its own ZeroMQ
          context, ZMQ_RECONNECT_IVL 1 ms so a kernel that binds in 5 ms is not charged libzmq's default
          100 ms retry). Ratios between kernels are only fair under the same load, and the machine's load
          drifts, so starts and round trips are interleaved across the kernels:
          start      round-robin: kernel A is launched, timed, stopped; then B; ... (after one untimed
                     start of each: the first launch in the process pays jupyter_client's one-time setup),
                     `starts` rounds, median. Timed from the launch to the first kernel_info_reply
                     (a fresh client sends kernel_info, again every 200 ms until one is answered).
                     Two launches per kernel and round, their order alternating:
                       start_ms        the steps of KernelManager.start_kernel() called one by one
                                       (pre_start_kernel, _launch_kernel, post_start_kernel) without its
                                       in_pending_state wrapper, which adds a fixed asyncio.sleep(0.01)
                                       "so tests can capture the state": 10 ms of client-side sleep
                                       charged to every kernel. The start target uses this figure.
                       start_stock_ms  the stock km.start_kernel(), that 10 ms sleep included.
                     start_after_launch_ms: the part after the launch steps returned (the kernel's
                     own); start_launch_call_ms / start_kernel_call_ms: the launch steps / start_kernel()
          then one long-lived kernel and client per kernel, all alive until the section ends:
          memory     RSS of each kernel process tree, idle (1 s after all are started), and after all
                     the work
          idle CPU   utime+stime of each kernel process tree over one shared window of doing nothing
                     (all kernels idle at once; each tree counts only its own CPU)
          execute    no-op execute_request -> execute_reply and iopub idle (p50, p99), and
          info       kernel_info round trip on shell (p50): after a warmup on each kernel, 10 rounds,
                     each running rtt_n/10 executes and then rtt_n/10 kernel_infos on each kernel in turn
          flood      per kernel in turn: a loop printing 10 000 lines -> every line and idle received;
                     whether all arrived (the client reads shell and iopub together, as a frontend does)
          and a do-nothing kernel (examples/bench_client.rs --mock-kernel, column "floor"): what
          jupyter_client and ZeroMQ cost by themselves (start, round trips, memory only). The table
          shows each kernel's execute p50 above the floor, and llmspell's above-floor p50 divided by
          xeus-python's (the kernels' own cost, the client's taken out; no target).
client    examples/bench_client.rs (llmspell's own Rust client, no Python) against a `llmspell kernel
          start --daemon` kernel: no-op execute p50/p99, kernel_info p50, executes/s and p50 with 1, 4
          and 16 concurrent clients; and ZeroMQ floors, interleaved with the kernel in rounds:
            zmq_raw_2proc_us      DEALER/ROUTER round trip to an echo server in another process, as
                                  between a client and a kernel: the floor of the "own client execute
                                  p50 <= 2 x raw ZeroMQ round trip" target (an older bench_client without
                                  it: the in-process figure, with a note)
            zmq_raw_us            the same with the echo server a thread of the client's process (it
                                  shares the client's ZeroMQ I/O thread); shown for information
            zmq_execute_shape_us  two processes, plus busy/idle on a PUB socket around the reply
cli       warm `llmspell exec 'x = 1'`, warm and cold `llmspell run hello.lua`, `lua5.4 hello.lua`
scale     `llmspell exec` printing 10k / 100k / 1M lines: time, all arrived, kernel peak RSS
state     state.set / state.get cost with 1k / 10k / 100k keys held; a cell setting 100k keys
binary    size of the stripped release binary
debug     the CPU suite as session cells with the Jupyter debugger attached, without and with one breakpoint
          that is never hit, against no debugger (CPU time of each cell; issue 14)
run       `llmspell run` against a stock lua (issue 12; see bench_run): the CPU-bound suite in bench/suite/
          by `lua`, `llmspell run` and in the session (`llmspell exec "dofile(...)"`), per item and in
          total; 4 concurrent CPU-bound runs vs 4 concurrent lua; warm `run hello.lua` vs `lua hello.lua`
          and `llmspell --version`, idle and behind a busy session cell; the zygote's and the kernel's RSS
          and PSS, idle and after 10 000 runs. Medians over interleaved rounds.

Nothing is asserted: the run prints one table (figures side by side, targets with measured ratios) and
writes everything as JSON. Kernels or tools that are missing are skipped with a note.
"""
import argparse
import contextlib
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

# kernel label -> (kernelspec name, language)
KERNELS = {
    "llmspell": ("llmspell", "lua"),
    "xeus-python": ("xpython", "python"),
    "ipykernel": ("python3", "python"),
    "ilua": ("lua", "lua"),
    # examples/bench_client.rs --mock-kernel: answers everything at once; jupyter_client's own floor
    "floor": ("llmspell-bench-floor", "lua"),
}
NOOP = {"python": "pass", "lua": "local x = 1"}


def flood_code(lang, n):
    if lang == "python":
        return f"for i in range({n}): print(i)", "".join(f"{i}\n" for i in range(n))
    return f"for i = 1, {n} do print(i) end", "".join(f"{i}\n" for i in range(1, n + 1))


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


# ----------------------------------------------------------------------------------------------------
# jupyter_client side

class CellLost(Exception):
    pass


def run_cell(kc, code, timeout=60.0, want_output=False):
    """execute_request -> execute_reply and iopub idle, reading shell and iopub together.
    Returns (seconds, stdout text, reply content). Raises CellLost(partial) if reply or idle
    do not arrive within timeout."""
    import zmq
    shell, iopub = kc.shell_channel, kc.iopub_channel
    poller = zmq.Poller()
    poller.register(shell.socket, zmq.POLLIN)
    poller.register(iopub.socket, zmq.POLLIN)
    t0 = time.perf_counter()
    msg_id = kc.execute(code, store_history=False)
    deadline = t0 + timeout
    reply, idle, out = None, False, []
    while reply is None or not idle:
        left = deadline - time.perf_counter()
        if left <= 0:
            err = CellLost(f"{'no reply' if reply is None else 'reply'}, {'idle' if idle else 'no idle'}")
            err.text = "".join(out)
            raise err
        events = dict(poller.poll(max(1, int(left * 1000))))
        if shell.socket in events:
            try:
                m = shell.get_msg(timeout=0)
                if m["parent_header"].get("msg_id") == msg_id:
                    reply = m["content"]
            except queue.Empty:
                pass
        if iopub.socket in events:
            while True:
                try:
                    m = iopub.get_msg(timeout=0)
                except queue.Empty:
                    break
                if m["parent_header"].get("msg_id") != msg_id:
                    continue
                t = m["msg_type"]
                if t == "stream":
                    if want_output and m["content"].get("name") == "stdout":
                        out.append(m["content"]["text"])
                elif t == "status" and m["content"]["execution_state"] == "idle":
                    idle = True
    return time.perf_counter() - t0, "".join(out), reply


def iopub_ready(kc, timeout=30.0):
    """Sends kernel_info until an iopub message reaches us (the subscription is live)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kc.kernel_info()
        try:
            kc.get_shell_msg(timeout=1)
        except queue.Empty:
            continue
        try:
            kc.get_iopub_msg(timeout=0.3)
            while True:  # drain
                kc.get_iopub_msg(timeout=0.05)
        except queue.Empty:
            return True
    return False


def start_kernel(name, ctx, env, timeout=60.0, log_to=None, stock=False):
    """Starts a kernel; returns (km, kc, ms to first kernel_info_reply, ms spent launching).
    The kernel's stdout and stderr go to log_to (a file object), if given.

    stock=False: the steps of KernelManager.start_kernel() called one by one (pre_start_kernel: ports,
    connection file, provisioner; _launch_kernel: Popen; post_start_kernel: control socket). In
    jupyter_client 8.x start_kernel() is these steps wrapped by in_pending_state, which then awaits
    asyncio.sleep(0.01) "so tests can capture the state" (manager.py): 10 ms of sleep in the client that
    every kernel is charged alike, whatever the kernel does. This is the figure the start target uses.
    stock=True: km.start_kernel() itself, that sleep included.

    Either way the clock then runs on: connect a client, send kernel_info until the first reply."""
    from jupyter_client.manager import KernelManager
    km = KernelManager(kernel_name=name, context=ctx)
    kw = {"stdout": log_to, "stderr": log_to} if log_to is not None else {}
    t0 = time.perf_counter()
    if stock:
        km.start_kernel(env=env, **kw)
    else:
        # What _async_start_kernel does, in its order. _attempted_start also tells shutdown_kernel's own
        # in_pending_state wrapper to make a fresh `ready` future, as after a stock start.
        km._attempted_start = True
        cmd, launch_kw = km.pre_start_kernel(env=env, **kw)
        km._launch_kernel(cmd, **launch_kw)
        km.post_start_kernel(**launch_kw)
    t_launch = time.perf_counter() - t0
    if not stock and not km.ready.done():
        km.ready.set_result(None)  # as the wrapper would (after the clock: not part of the start)
    kc = km.client(context=ctx)
    kc.start_channels(hb=False)
    kc.kernel_info()
    last = time.perf_counter()
    while True:
        try:
            m = kc.get_shell_msg(timeout=0.05)
            if m["msg_type"] == "kernel_info_reply":
                break
        except queue.Empty:
            pass
        now = time.perf_counter()
        if now - t0 > timeout:
            stop_kernel(km, kc)
            raise TimeoutError(f"{name}: no kernel_info_reply within {timeout} s")
        if now - last > 0.2:  # in case a kernel drops requests that arrive before it is ready
            kc.kernel_info()
            last = now
    return km, kc, (time.perf_counter() - t0) * 1000, t_launch * 1000


def stop_kernel(km, kc):
    try:
        kc.stop_channels()
    except Exception:
        pass
    try:
        km.shutdown_kernel(now=True)
    except Exception:
        pass


class KernelUnderTest:
    """One kernel of the comparison: its kernelspec, its own ZeroMQ context (same settings for every
    kernel), the long-lived kernel and client once started, and its results (res)."""

    def __init__(self, label, spec, lang, log_to):
        import zmq
        self.label, self.spec, self.lang, self.log_to = label, spec, lang, log_to
        # the do-nothing floor kernel has no output and no idle CPU worth measuring: start, round trips
        # and memory only
        self.minimal = label == "floor"
        self.ctx = zmq.Context()
        # The client's ZMQ_RECONNECT_IVL is 1 ms, so a kernel that binds in 5 ms is not charged libzmq's
        # default 100 ms retry.
        self.ctx.setsockopt(zmq.RECONNECT_IVL, 1)
        self.km = self.kc = None
        self.res = {"kernel": label, "kernelspec": spec}

    @property
    def ok(self):
        return "error" not in self.res

    def fail(self, where, e):
        self.res["error"] = f"{where}: {type(e).__name__}: {e}"
        log(f"  {self.label}: {where}:\n{traceback.format_exc()}")

    def stop(self):
        if self.km is not None:
            stop_kernel(self.km, self.kc)
            self.km = self.kc = None


def measure_starts(ks, cfg, env):
    """After one untimed start of each kernel, round-robin over the kernels, cfg["starts"] times: for
    each kernel, one start without start_kernel()'s sleep and one stock start (which of the two goes
    first alternates by round), each timed to the first kernel_info_reply and then stopped. Interleaved,
    so drift in the machine's load falls on every kernel alike."""
    S = {k.label: {"nosleep": [], "nosleep_call": [], "stock": [], "stock_call": []} for k in ks}
    # One untimed start of each kernel first: the first launch in this process pays jupyter_client's
    # one-time setup (provisioner entry points, imports; tens of ms), which would otherwise fall on
    # whichever kernel comes first; it also puts every kernel's files in the page cache alike.
    for k in ks:
        try:
            stop_kernel(*start_kernel(k.spec, k.ctx, env, log_to=k.log_to)[:2])
        except Exception as e:
            k.fail("warmup start", e)
        time.sleep(0.2)
    for i in range(cfg["starts"]):
        for k in ks:
            if not k.ok:
                continue
            for stock in ((False, True) if i % 2 == 0 else (True, False)):
                try:
                    km, kc, ms, call_ms = start_kernel(k.spec, k.ctx, env, log_to=k.log_to, stock=stock)
                except Exception as e:
                    k.fail("start", e)
                    break
                stop_kernel(km, kc)
                how = "stock" if stock else "nosleep"
                S[k.label][how].append(ms)
                S[k.label][how + "_call"].append(call_ms)
                time.sleep(0.2)  # let the killed kernel go before the next launch
    for k in ks:
        s, res = S[k.label], k.res
        # start_ms: launch steps without the sleep -> first kernel_info_reply (the target's figure)
        res["start_ms"] = r(med(s["nosleep"]))
        res["start_ms_all"] = [r(x) for x in s["nosleep"]]
        # jupyter_client's own share (ports, connection file, Popen, control socket); the rest is the kernel's
        res["start_launch_call_ms"] = r(med(s["nosleep_call"]))
        res["start_after_launch_ms"] = r(med([a - b for a, b in zip(s["nosleep"], s["nosleep_call"])]))
        # the same through the stock km.start_kernel() (its fixed 10 ms sleep included)
        res["start_stock_ms"] = r(med(s["stock"]))
        res["start_stock_ms_all"] = [r(x) for x in s["stock"]]
        res["start_kernel_call_ms"] = r(med(s["stock_call"]))
        res["start_stock_after_launch_ms"] = r(med([a - b for a, b in zip(s["stock"], s["stock_call"])]))


def kernel_info_once(kc):
    t = time.perf_counter()
    mid = kc.kernel_info()
    while kc.get_shell_msg(timeout=30)["parent_header"].get("msg_id") != mid:
        pass
    return (time.perf_counter() - t) * 1e6


def measure_round_trips(ks, cfg, rounds=10):
    """No-op execute and kernel_info round trips on the long-lived kernels, in rounds: a warmup on each
    kernel, then each round runs rtt_n/rounds executes and as many kernel_infos on each kernel in turn.
    Interleaved, so the ratios between kernels are taken under the same load."""
    live = [k for k in ks if k.ok]
    for k in live:
        try:
            for _ in range(cfg["warmup"]):
                run_cell(k.kc, NOOP[k.lang], timeout=30)
        except Exception as e:
            k.fail("execute warmup", e)
    per = max(1, -(-cfg["rtt_n"] // rounds))
    rtts = {k.label: [] for k in live}
    infos = {k.label: [] for k in live}
    for _ in range(rounds):
        for k in live:
            if not k.ok:
                continue
            try:
                for _ in range(per):
                    rtts[k.label].append(run_cell(k.kc, NOOP[k.lang], timeout=30)[0] * 1e6)
                for _ in range(per):
                    infos[k.label].append(kernel_info_once(k.kc))
            except Exception as e:
                k.fail("round trips", e)
    for k in live:
        k.res["execute_us_p50"] = r(pct(rtts[k.label], 0.50))
        k.res["execute_us_p99"] = r(pct(rtts[k.label], 0.99))
        k.res["execute_n"] = len(rtts[k.label])
        k.res["kernel_info_us_p50"] = r(pct(infos[k.label], 0.50))
        k.res["kernel_info_us_p99"] = r(pct(infos[k.label], 0.99))
        k.res["kernel_info_n"] = len(infos[k.label])
        k.res["round_trip_rounds"] = rounds


def measure_flood(k, cfg):
    """A cell printing 10 000 lines, cfg["flood_runs"] times: time to every line and idle, and whether
    every line arrived."""
    res = k.res
    code, expected = flood_code(k.lang, 10_000)
    times, complete, notes = [], True, []
    for _ in range(cfg["flood_runs"]):
        try:
            dt, text, reply = run_cell(k.kc, code, timeout=cfg["flood_timeout"], want_output=True)
            times.append(dt * 1000)
            if text != expected:
                notes.append(f"{text.count(chr(10))} of 10000 lines")
                complete = False
        except CellLost as e:
            complete = False
            notes.append(f"lost ({e}; {e.text.count(chr(10))} of 10000 lines in {cfg['flood_timeout']} s)")
            break  # the kernel's iopub is unreliable now: do not pile up more
    res["flood10k_ms"] = r(med(times)) if times else None
    res["flood10k_ms_all"] = [r(t) for t in times]
    res["flood10k_all_arrived"] = complete
    if notes:
        res["flood10k_notes"] = notes


def bench_jupyter_kernels(entries, cfg, env, logs):
    """entries: [(label, kernelspec, language)]. Returns {label: results}.

    1. starts, round-robin over the kernels (measure_starts);
    2. one long-lived kernel and client per kernel, all alive from here on;
    3. RSS idle of each kernel process tree; idle CPU of every tree over one shared window of doing nothing;
    4. execute and kernel_info round trips in interleaved rounds (measure_round_trips);
    5. per kernel in turn: the 10 000-line flood, then RSS after the work."""
    with contextlib.ExitStack() as stack:
        ks = [KernelUnderTest(label, spec, lang, stack.enter_context(open(logs / f"{label}.log", "w")))
              for label, spec, lang in entries]
        try:
            log("  starts (round-robin) ...")
            measure_starts(ks, cfg, env)
            for k in ks:
                if not k.ok:
                    continue
                try:
                    k.km, k.kc, _, _ = start_kernel(k.spec, k.ctx, env, log_to=k.log_to)
                    k.res["pid"] = k.km.provisioner.process.pid
                    if not iopub_ready(k.kc):
                        k.res["error"] = "iopub never became ready"
                except Exception as e:
                    k.fail("long-lived start", e)
            live = [k for k in ks if k.ok]
            time.sleep(1.0)
            for k in live:
                k.res["rss_idle_kb"] = tree_rss_kb(k.res["pid"])
                k.res["pss_idle_kb"] = tree_pss_kb(k.res["pid"])
            # Idle CPU: every tree over the same window (they are all alive and idle; each tree's own
            # utime+stime is counted, so the others do not add to it).
            idle = [k for k in live if not k.minimal]
            if idle:
                log(f"  idle CPU ({cfg['idle_s']} s) ...")
                c0 = {k.label: tree_cpu_ticks(k.res["pid"]) for k in idle}
                t0 = time.monotonic()
                time.sleep(cfg["idle_s"])
                c1 = {k.label: tree_cpu_ticks(k.res["pid"]) for k in idle}
                window = time.monotonic() - t0
                for k in idle:
                    ticks = c1[k.label] - c0[k.label]
                    k.res["idle_cpu_ms"] = r(ticks * 1000 / CLK_TCK)
                    k.res["idle_cpu_window_s"] = r(window, 2)
                    k.res["idle_cpu_ticks"] = ticks
            log("  round trips (interleaved rounds) ...")
            measure_round_trips(ks, cfg)
            for k in ks:
                if not k.ok or k.minimal:
                    continue
                log(f"  flood {k.label} ...")
                try:
                    measure_flood(k, cfg)
                except Exception as e:
                    k.fail("flood", e)
            time.sleep(0.5)
            for k in ks:
                if k.km is not None and k.ok:
                    k.res["rss_work_kb"] = tree_rss_kb(k.res["pid"])
        finally:
            for k in ks:
                k.stop()
                k.ctx.destroy(linger=0)
    for k in ks:
        log(f"  {k.label}: {k.res}")
    return {k.label: k.res for k in ks}


# ----------------------------------------------------------------------------------------------------
# CLI side

class Cli:
    def __init__(self, bin_path, home, env):
        self.bin = str(bin_path)
        self.home = Path(home)
        self.env = dict(env, LLMSPELL_HOME=str(home), LLMSPELL_IDLE_TIMEOUT="900")

    def run(self, args, stdout=subprocess.PIPE, timeout=600, cwd=None):
        """Runs llmspell ARGS; returns (seconds, rc, stdout bytes or None, rusage)."""
        return timed([self.bin] + list(args), self.env, stdout=stdout, timeout=timeout, cwd=cwd)

    def kernel_pid(self, kid="default"):
        try:
            return json.loads((self.home / "kernels" / f"{kid}.json").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def stop(self, kid=None):
        args = ["kernel", "stop"] + ([kid] if kid else ["--all"])
        subprocess.run([self.bin] + args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)


def timed(cmd, env, stdout=subprocess.PIPE, timeout=600, cwd=None):
    """Wall time of one command, with its own rusage (os.wait4). stdout: PIPE, DEVNULL or a file."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=cwd)
    out = err = b""
    if stdout is subprocess.PIPE:
        out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if err.strip():
        log(f"  [{os.path.basename(cmd[0])} stderr] {err.decode(errors='replace').strip()[:300]}")
    return dt, p.returncode, out, ru


def bench_cli(cli, lua, cfg, tmp):
    res = {}
    hello = Path(tmp) / "hello.lua"
    hello.write_text('print("hello")\n')
    n = cfg["cli_n"]

    cli.stop()
    cli.run(["exec", "x = 1"])  # start the kernel
    cli.run(["run", str(hello)])
    # Interleaved, so drift in the machine's load hits every figure alike.
    kinds = {"warm_exec": (lambda: cli.run(["exec", "x = 1"]), b""),
             "warm_run": (lambda: cli.run(["run", str(hello)]), b"hello\n")}
    if lua:
        kinds["lua_run"] = (lambda: timed([lua, str(hello)], cli.env), b"hello\n")
    samples = {k: [] for k in kinds}
    bad = {k: 0 for k in kinds}
    for _ in range(n):
        for k, (fn, want) in kinds.items():
            dt, rc, out, _ = fn()
            bad[k] += rc != 0 or out != want
            samples[k].append(dt * 1000)
    for k, ts in samples.items():
        res[k] = {"median_ms": r(med(ts), 2), "min_ms": r(min(ts), 2), "max_ms": r(max(ts), 2), "n": len(ts),
                  "failures": bad[k]}
    cold = []
    cbad = 0
    for _ in range(cfg["cold_n"]):
        cli.stop()
        dt, rc, out, _ = cli.run(["run", str(hello)])
        cbad += rc != 0 or out != b"hello\n"
        cold.append(dt * 1000)
    res["cold_run"] = {"median_ms": r(med(cold), 2), "min_ms": r(min(cold), 2), "max_ms": r(max(cold), 2),
                       "n": len(cold), "failures": cbad}
    res["lua"] = lua
    return res


def bench_scale(cli, cfg, tmp):
    """`llmspell exec` printing N lines to a file; kernel peak RSS from VmHWM (reset before each run)."""
    res = {}
    cli.run(["exec", "x = 1"])
    pid = cli.kernel_pid()
    res["kernel_rss_idle_kb"] = tree_rss_kb(pid) if pid else None
    for n in cfg["scale_lines"]:
        code = f"for i = 1, {n} do print(i) end"
        path = Path(tmp) / f"out{n}.txt"
        reset_ok = reset_peak_rss(pid) if pid else False
        with open(path, "wb") as f, RssSampler(pid, 0.01) as sampler:
            dt, rc, _, ru = cli.run(["exec", code], stdout=f)
        hwm = status_kb(pid, "VmHWM") if reset_ok else None
        data = path.read_bytes()
        expected = "".join(f"{i}\n" for i in range(1, n + 1)).encode()
        lines = data.count(b"\n")
        res[str(n)] = {
            "ms": r(dt * 1000),
            "all_arrived": data == expected and rc == 0,
            "lines": lines,
            "rc": rc,
            "kernel_peak_rss_kb": hwm if hwm else sampler.peak_kb,
            "kernel_peak_rss_source": "VmHWM" if hwm else "sampled",
            "kernel_rss_after_kb": tree_rss_kb(pid),
            "client_cpu_ms": r((ru.ru_utime + ru.ru_stime) * 1000),
        }
        path.unlink()
        log(f"  scale {n}: {res[str(n)]}")
    return res


def bench_state(bin_path, env, cfg, tmp):
    """state cost on a dedicated kernel (through jupyter_client, no CLI overhead in the figures)."""
    import zmq
    home = Path(tmp) / "state-home"
    home.mkdir()
    kenv = dict(env, LLMSPELL_HOME=str(home))
    ctx = zmq.Context()
    km, kc, _, _ = start_kernel("llmspell", ctx, kenv)
    res = {}
    M = cfg["state_ops"]
    try:
        iopub_ready(kc)

        def cell(code, reps):
            ts = []
            for _ in range(reps):
                dt, _, reply = run_cell(kc, code, timeout=600)
                if reply.get("status") != "ok":
                    raise RuntimeError(f"{code[:60]!r}: {reply.get('ename')}: {reply.get('evalue')}")
                ts.append(dt * 1e6)
            return med(ts)

        def clocked(code, reps):
            """A cell that prints CPU seconds (os.clock) of its timed part; median over reps."""
            ts = []
            for _ in range(reps):
                _, text, reply = run_cell(kc, code, timeout=600, want_output=True)
                if reply.get("status") != "ok":
                    raise RuntimeError(f"{code[:60]!r}: {reply.get('ename')}: {reply.get('evalue')}")
                ts.append(float(text.split()[-1]))
            return med(ts)

        reps = cfg["state_reps"]
        for k in cfg["state_keys"]:
            cell("state.clear()", 1)
            fill = cell(f'for i = 1, {k} do state.set("key" .. i, i) end', 1)
            m = min(M, k)
            # CPU time of m calls inside one cell (os.clock: the kernel's CPU, immune to the cell's
            # fixed costs and to preemption), less the same loop without the call.
            loop = clocked(f'local c = os.clock() for i = 1, {m} do local key = "key" .. i end print(os.clock() - c)', reps)
            setm = clocked(f'local s, c = state.set, os.clock() for i = 1, {m} do s("key" .. i, -i) end '
                           f'print(os.clock() - c)', reps)
            getm = clocked(f'local g, c = state.get, os.clock() for i = 1, {m} do g("key" .. i) end '
                           f'print(os.clock() - c)', reps)
            noop = cell("local x = 1", 5)
            set1 = cell('state.set("key1", 0)', 5)
            size = (home / "state.json").stat().st_size if (home / "state.json").exists() else None
            row = {
                "keys": k,
                "fill_cell_ms": r(fill / 1000),
                "set_us": r((setm - loop) * 1e6 / m, 3),
                "get_us": r((getm - loop) * 1e6 / m, 3),
                "one_set_cell_ms": r(set1 / 1000, 3),
                "noop_cell_ms": r(noop / 1000, 3),
                "ops_per_cell": m,
                "file_bytes": size,
            }
            res[str(k)] = row
            log(f"  state {k}: {row}")
        res["rss_after_kb"] = tree_rss_kb(km.provisioner.process.pid)
    finally:
        stop_kernel(km, kc)
        ctx.destroy(linger=0)
    return res


def build_bench_client():
    """Builds examples/bench_client.rs; returns (path or None, error or None)."""
    cargo = os.environ.get("CARGO", "cargo")
    exe = ROOT / "target" / "release" / "examples" / "bench_client"
    if shutil.which(cargo):
        b = subprocess.run([cargo, "build", "--release", "--quiet", "--example", "bench_client"], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if b.returncode != 0:
            return None, "cargo build --example bench_client failed: " + b.stderr.strip()[-500:]
    if not exe.exists():
        return None, f"{exe} missing and cargo not found"
    return exe, None


def bench_own_client(cli, cfg, exe):
    cli.stop()
    subprocess.run([cli.bin, "kernel", "start", "--daemon", "--id", "bench"], env=cli.env,
                   stdout=subprocess.DEVNULL, check=False)
    conn = cli.home / "kernels" / "bench.json"
    try:
        p = subprocess.run([str(exe), "--connection-file", str(conn), "--n", str(cfg["client_n"]),
                            "--warmup", str(cfg["client_n"] // 10), "--duration", str(cfg["client_duration"]),
                            "--raw-n", str(cfg["raw_n"]), "--clients", "1,4,16"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
        if p.returncode != 0:
            return {"error": f"bench_client exited {p.returncode}: {p.stderr.strip()[-500:]}"}
        return json.loads(p.stdout)
    finally:
        cli.stop("bench")


def binary_size(bin_path, tmp):
    res = {"path": str(bin_path), "bytes": os.path.getsize(bin_path)}
    strip = shutil.which("strip")
    if strip:
        copy = Path(tmp) / "llmspell.stripped"
        shutil.copy(bin_path, copy)
        if subprocess.run([strip, str(copy)], stderr=subprocess.DEVNULL).returncode == 0:
            res["stripped_bytes"] = os.path.getsize(copy)
    else:
        res["note"] = "strip not found: size as built"
    return res


# ----------------------------------------------------------------------------------------------------
# `llmspell run` against a stock lua (issue 12)

SUITE_DIR = ROOT / "bench" / "suite"
SUITE = ["fib", "strings", "pcall", "coroutine", "arith"]  # bench/suite/<item>.lua
CONCURRENT = 4


def lua_version(lua):
    try:
        p = subprocess.run([lua, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=10)
        return p.stdout.strip().split("  ")[0]
    except (OSError, subprocess.SubprocessError):
        return None


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


def zygote_pid(kernel_pid):
    """The kernel's `llmspell kernel runner` child (the zygote), or None."""
    for p in tree_pids(kernel_pid)[1:]:
        args = cmdline(p)
        if b"kernel" in args and b"runner" in args:
            return p
    return None


def spread(ts):
    return {"median_ms": r(med(ts), 2), "min_ms": r(min(ts), 2), "max_ms": r(max(ts), 2), "n": len(ts)}


def bench_run(cli, lua, cfg, tmp):
    """`llmspell run` against a stock lua (`lua` is $LUA or lua5.4): every figure a median over interleaved
    rounds (the machine's load drifts; whichever command goes first alternates from round to round).

    suite        bench/suite/*.lua (recursion, strings, pcall, coroutines, arithmetic), each item per round
                 by `lua ITEM`, `llmspell run ITEM` and, in the session, `llmspell exec "dofile(ITEM)"`
                 (our own CLI client; the same kernel): wall time of the whole command, output compared
    concurrent   4 `llmspell run fib.lua` started together vs 4 `lua fib.lua`: wall time until the last ends
    hello        warm `llmspell run hello.lua`, `lua hello.lua`, `llmspell --version` (the CLI's own start-up);
                 then the same while a session cell (started by `llmspell exec`) keeps the kernel busy
    memory       the zygote's RSS and PSS (/proc/PID/smaps_rollup) and the kernel's own, idle, before and
                 after `runs_n` runs of hello.lua"""
    res = {"lua": lua, "lua_version": lua_version(lua), "rounds": cfg["run_rounds"]}
    hello = Path(tmp) / "hello.lua"
    hello.write_text('print("hello")\n')
    cli.stop()
    cli.run(["exec", "x = 1"])  # start the kernel
    for _ in range(3):
        cli.run(["run", str(hello)])
    kpid = cli.kernel_pid()
    zpid = zygote_pid(kpid) if kpid else None
    res["kernel_pid"], res["zygote_pid"] = kpid, zpid

    def mem():
        z = smaps_rollup_kb(zpid) if zpid else {}
        k = smaps_rollup_kb(kpid) if kpid else {}
        return {"zygote_rss_kb": z.get("Rss"), "zygote_pss_kb": z.get("Pss"),
                "kernel_rss_kb": k.get("Rss"), "kernel_pss_kb": k.get("Pss")}

    time.sleep(1.0)
    res["memory_idle"] = mem()
    log(f"  idle memory: {res['memory_idle']}")

    # 1. the suite. Each item writes its CPU seconds (os.clock()) to stderr at its end: for lua the
    # process's, for a run the runner's since its fork; in the session the cell measures around dofile.
    # CPU time is much less disturbed than wall time by other work on the machine.
    items = {name: str(SUITE_DIR / f"{name}.lua") for name in SUITE}

    def clocked(cmd, tag):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        cpu = [float(w.split()[1]) for w in p.stderr.decode(errors="replace").splitlines() if w.startswith(tag + " ")]
        return dt, p.returncode, p.stdout, cpu[-1] if cpu else None
    cmds = {"lua": lambda p: clocked([lua, p], "cpu"),
            "run": lambda p: clocked([cli.bin, "run", p], "cpu"),
            "exec": lambda p: clocked([cli.bin, "exec", f"local c = os.clock() dofile({json.dumps(p)}) "
                                       "io.stderr:write(('session %.6f\\n'):format(os.clock() - c))"], "session")}
    samples = {k: {name: [] for name in items} for k in cmds}
    cpus = {k: {name: [] for name in items} for k in cmds}
    failures = {k: [] for k in cmds}
    want = {}
    for name, path in items.items():  # one untimed pass: expected output, page cache
        want[name] = cmds["lua"](path)[2]
        cmds["run"](path)
    for i in range(cfg["run_rounds"]):
        for name, path in items.items():
            order = list(cmds)
            order = order[i % 3:] + order[:i % 3]  # rotate who goes first
            for k in order:
                dt, rc, out, cpu = cmds[k](path)
                if rc != 0 or out != want[name] or cpu is None:
                    failures[k].append(f"{name}: rc {rc}, output {out[:80]!r}, cpu {cpu}")
                samples[k][name].append(dt * 1000)
                if cpu is not None:
                    cpus[k][name].append(cpu * 1000)
        log(f"  suite round {i + 1}: " + ", ".join(
            f"{name} {samples['run'][name][-1] / samples['lua'][name][-1]:.2f}" for name in items))
    suite = {}
    for name in items:
        s = {k: spread(samples[k][name]) for k in cmds}
        for k in cmds:
            s[k]["cpu_median_ms"] = r(med(cpus[k][name]), 1)
        for k in ("run", "exec"):
            s[f"ratio_{k}"] = r(ratio(s[k]["median_ms"], s["lua"]["median_ms"]), 3)
            s[f"cpu_ratio_{k}"] = r(ratio(s[k]["cpu_median_ms"], s["lua"]["cpu_median_ms"]), 3)
        suite[name] = s
    tot = {k: sum(suite[n][k]["median_ms"] for n in items) for k in cmds}
    ctot = {k: sum(suite[n][k]["cpu_median_ms"] or 0 for n in items) for k in cmds}
    suite["total"] = {k: {"median_ms": r(v, 1), "cpu_median_ms": r(ctot[k], 1)} for k, v in tot.items()}
    for k in ("run", "exec"):
        suite["total"][f"ratio_{k}"] = r(ratio(tot[k], tot["lua"]), 3)
        suite["total"][f"cpu_ratio_{k}"] = r(ratio(ctot[k], ctot["lua"]), 3)
    res["suite"] = suite
    res["suite_failures"] = {k: v for k, v in failures.items() if v}

    # 2. concurrent runs
    fib = items["fib"]

    def together(cmd):
        t0 = time.perf_counter()
        ps = [subprocess.Popen(cmd, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL) for _ in range(CONCURRENT)]
        outs = [p.communicate()[0] for p in ps]
        dt = time.perf_counter() - t0
        ok = all(p.returncode == 0 for p in ps) and all(o == want["fib"] for o in outs)
        return dt * 1000, ok
    conc = {"run": [], "lua": []}
    conc_bad = 0
    for i in range(cfg["conc_rounds"]):
        pair = [("lua", [lua, fib]), ("run", [cli.bin, "run", fib])]
        for k, cmd in (pair if i % 2 == 0 else pair[::-1]):
            ms, ok = together(cmd)
            conc[k].append(ms)
            conc_bad += not ok
    res["concurrent"] = {"n": CONCURRENT, "script": "fib.lua", "cpus": os.cpu_count(),
                         "run": spread(conc["run"]), "lua": spread(conc["lua"]), "failures": conc_bad}
    res["concurrent"]["ratio"] = r(ratio(res["concurrent"]["run"]["median_ms"],
                                         res["concurrent"]["lua"]["median_ms"]), 3)

    # 3. hello, idle and then behind a busy session cell
    kinds = {"run": lambda: cli.run(["run", str(hello)]), "lua": lambda: timed([lua, str(hello)], cli.env),
             "version": lambda: cli.run(["--version"])}
    phases = ("idle", "busy", "wait", "spin")
    hs = {phase: {k: [] for k in kinds} for phase in phases}
    hbad = {phase: 0 for phase in phases}
    busy_throughout = True

    def hello_rounds(phase, n):
        for i in range(n):
            order = list(kinds)
            order = order[i % 3:] + order[:i % 3]
            for k in order:
                dt, rc, out, _ = kinds[k]()
                hbad[phase] += rc != 0 or (k != "version" and out != b"hello\n")
                hs[phase][k].append(dt * 1000)
    # Idle and busy phases alternate in blocks, so the machine's drifting load falls on both alike. A busy
    # phase: a long CPU-bound cell started by `llmspell exec`, ended by Ctrl-C to its own client (which
    # interrupts only its own cell). A wait phase: a cell waiting in os.execute("sleep 2") (the kernel
    # busy, no CPU used: the kernel's share apart from the CPU the busy cell takes). A spin phase: the kernel idle, a `nice -n 19` busy loop keeps one CPU
    # awake: a run hands off between processes (client, zygote, child) and pays for waking idle CPUs,
    # which this shows apart from the kernel being busy.
    per = max(1, cfg["hello_n"] // cfg["hello_blocks"])
    busy_s = 30
    for b in range(cfg["hello_blocks"]):
        hello_rounds("idle", per)
        cell = subprocess.Popen([cli.bin, "exec", f"local t = os.time() + {busy_s} while os.time() < t do end"],
                                env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
        time.sleep(0.3)
        t0 = time.monotonic()
        hello_rounds("busy", per)
        busy_throughout &= cell.poll() is None and time.monotonic() - t0 < busy_s - 1
        cell.send_signal(2)
        try:
            cell.wait(10)
        except subprocess.TimeoutExpired:
            cell.kill()
            cell.wait()
        cell = subprocess.Popen([cli.bin, "exec", 'os.execute("sleep 2")'], env=cli.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        time.sleep(0.3)
        t0 = time.monotonic()
        hello_rounds("wait", per)
        wait_throughout = cell.poll() is None
        res["hello_wait_cell_throughout"] = res.get("hello_wait_cell_throughout", True) and wait_throughout
        cell.wait(30)
        spin = subprocess.Popen(["nice", "-n", "19", "sh", "-c", "while :; do :; done"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        time.sleep(0.2)
        try:
            hello_rounds("spin", per)
        finally:
            spin.kill()
            spin.wait()
    for phase in phases:
        res[f"hello_{phase}"] = {k: spread(v) for k, v in hs[phase].items()}
        res[f"hello_{phase}"]["failures"] = hbad[phase]
    res["hello_blocks"] = cfg["hello_blocks"]
    res["hello_busy"]["cell_busy_throughout"] = busy_throughout
    hi, hb = res["hello_idle"], res["hello_busy"]
    res["hello_ratio"] = r(ratio(hi["run"]["median_ms"], hi["lua"]["median_ms"]), 3)
    res["hello_ratio_min"] = r(ratio(hi["run"]["min_ms"], hi["lua"]["min_ms"]), 3)
    res["hello_busy_over_idle"] = r(ratio(hb["run"]["median_ms"], hi["run"]["median_ms"]), 3)
    res["lua_busy_over_idle"] = r(ratio(hb["lua"]["median_ms"], hi["lua"]["median_ms"]), 3)
    res["hello_wait_over_idle"] = r(ratio(res["hello_wait"]["run"]["median_ms"], hi["run"]["median_ms"]), 3)
    hp = res["hello_spin"]
    res["hello_spin_ratio"] = r(ratio(hp["run"]["median_ms"], hp["lua"]["median_ms"]), 3)

    # 4. memory growth over many runs (from here: the session's cells above may have grown the kernel)
    n = cfg["runs_n"]
    res["memory_before_runs"] = mem()
    t0 = time.monotonic()
    bad = 0
    for _ in range(n):
        bad += subprocess.run([cli.bin, "run", str(hello)], env=cli.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL).returncode != 0
    res["runs_n"], res["runs_failures"], res["runs_s"] = n, bad, r(time.monotonic() - t0, 1)
    time.sleep(1.0)
    res["memory_after_runs"] = mem()
    res["zygote_pid_after_runs"] = zygote_pid(kpid) if kpid else None
    log(f"  after {n} runs: {res['memory_after_runs']}")
    return res
# ----------------------------------------------------------------------------------------------------
# the table: one row per figure, the kernels side by side, and the target verdict on the rows that have one

def fmt(x, unit="", nd=1):
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def mb(kb):
    return None if kb is None else kb / 1024


def ratio(a, b):
    return None if a is None or not b else a / b



def bench_debug(cli, cfg):
    """The CPU suite in the session with the Jupyter debugger attached (issue 14): each item as a cell
    (`dofile`, timed by os.clock inside the cell), with no debugger, with one attached and no
    breakpoint, and with one breakpoint that is never hit (in a function of an earlier cell that is never
    called). Interleaved per round, so load drift touches the three alike."""
    from jupyter_client.blocking.client import BlockingKernelClient
    cli.run(["exec", "x = 1"])  # start the kernel
    kc = BlockingKernelClient(connection_file=str(cli.home / "kernels" / "default.json"))
    kc.load_connection_file()
    kc.start_channels()
    kc.wait_for_ready(timeout=30)
    seq = [0]

    def debug(command, arguments=None):
        seq[0] += 1
        msg = kc.session.msg("debug_request", {"seq": seq[0], "type": "request", "command": command,
                                               "arguments": arguments or {}})
        kc.control_channel.send(msg)
        while True:
            reply = kc.get_control_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                assert reply["content"].get("success"), reply["content"]
                return reply["content"].get("body", {})

    def cell_cpu(path):
        code = (f"local c = os.clock() dofile({json.dumps(path)}) "
                "io.stderr:write(('session %.6f\\n'):format(os.clock() - c))")
        msg_id = kc.execute(code)
        err = ""
        while True:
            m = kc.get_iopub_msg(timeout=600)
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            if m["msg_type"] == "stream" and m["content"]["name"] == "stderr":
                err += m["content"]["text"]
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
        got = [float(w.split()[1]) for w in err.splitlines() if w.startswith("session ")]
        return got[-1] * 1000 if got else None

    items = {name: str(SUITE_DIR / f"{name}.lua") for name in SUITE}
    modes = ["off", "attached", "breakpoint"]
    cpus = {m: {name: [] for name in items} for m in modes}
    for path in items.values():  # untimed: page cache, warm session
        cell_cpu(path)
    try:
        for i in range(cfg["run_rounds"]):
            for name, path in items.items():
                cpus["off"][name].append(cell_cpu(path))
                debug("initialize", {"clientID": "bench", "adapterID": "llmspell"})
                debug("attach")
                debug("configurationDone")
                cpus["attached"][name].append(cell_cpu(path))
                # A breakpoint in a function that exists (its cell ran) but is never called: the call
                # and return hooks run on every call, the line hook never.
                never = "function never_called()\n  return 1\nend"
                never_path = debug("dumpCell", {"code": never})["sourcePath"]
                kc.execute(never)
                debug("setBreakpoints", {"source": {"path": never_path}, "breakpoints": [{"line": 2}]})
                cpus["breakpoint"][name].append(cell_cpu(path))
                debug("disconnect", {"restart": False, "terminateDebuggee": False})
            log(f"  debug round {i + 1}")
    finally:
        kc.stop_channels()
    res = {"rounds": cfg["run_rounds"], "suite": {}}
    for name in items:
        meds = {m: med([c for c in cpus[m][name] if c is not None]) for m in modes}
        res["suite"][name] = {m: r(meds[m], 1) for m in modes} | {
            "ratio_attached": r(ratio(meds["attached"], meds["off"]), 3),
            "ratio_breakpoint": r(ratio(meds["breakpoint"], meds["off"]), 3)}
    tot = {m: sum(res["suite"][n][m] or 0 for n in items) for m in modes}
    res["total"] = {m: r(tot[m], 1) for m in modes} | {
        "ratio_attached": r(ratio(tot["attached"], tot["off"]), 3),
        "ratio_breakpoint": r(ratio(tot["breakpoint"], tot["off"]), 3)}
    return res


def build_report(R, order):
    """Returns (kernel columns, rows). A row: figure, {column: text}, and optionally target, ratio, holds."""
    K = R.get("kernels", {})
    cols = ["llmspell"] + [k for k in order if k in K and k != "llmspell"]
    rows = []

    def row(figure, values, target=None, ratio=None, holds=None, measured=None):
        if not isinstance(values, dict):
            values = {"llmspell": values}
        rows.append({"figure": figure, "values": values, "target": target, "ratio": ratio, "holds": holds,
                     "measured": measured})

    def kvals(key, conv=lambda x: x, unit="", nd=1):
        return {c: fmt(conv(K.get(c, {}).get(key)) if K.get(c, {}).get(key) is not None else None, unit, nd)
                for c in cols}

    L, X = K.get("llmspell", {}), K.get("xeus-python", {})

    # 1. through jupyter_client
    if K:
        rt = ratio(L.get("start_ms"), X.get("start_ms"))
        row("start → first kernel_info_reply (ms, median; launch without start_kernel()'s 10 ms sleep)",
            kvals("start_ms"), "≤ 0.1 × xeus-python (start without the sleep)", rt,
            None if rt is None else rt <= 0.1)
        row("  of which after the launch steps returned (ms)", kvals("start_after_launch_ms"))
        row("start (stock start_kernel(), incl. its fixed 10 ms sleep) (ms, median)", kvals("start_stock_ms"))
        F = K.get("floor", {})

        def above_floor(key, nd):
            return {c: fmt(K[c][key] - F[key], nd=nd) if K.get(c, {}).get(key) is not None
                    and F.get(key) is not None and c != "floor" else "" for c in cols}
        rt = ratio(L.get("execute_us_p50"), X.get("execute_us_p50"))
        row("no-op execute round trip p50 (µs)", kvals("execute_us_p50", nd=0), "≤ 0.5 × xeus-python", rt,
            None if rt is None else rt <= 0.5)
        if F.get("execute_us_p50") is not None:
            row("  p50 above the do-nothing floor (µs)", above_floor("execute_us_p50", 0))
            # The kernels' own cost compared, with jupyter_client's and ZeroMQ's share (the floor) taken
            # out of both. Informational: the target above is on the whole round trip.
            def above(c):
                v = K.get(c, {}).get("execute_us_p50")
                return None if v is None else v - F["execute_us_p50"]
            la, xa = above("llmspell"), above("xeus-python")
            if X.get("execute_us_p50"):
                # When this is above 0.5, the target above cannot be met by any kernel on this machine.
                row("  the do-nothing floor ÷ xeus-python (the best ratio any kernel can reach here)",
                    fmt(F["execute_us_p50"] / X["execute_us_p50"], nd=2))
            if la is not None and xa is not None:
                row("  llmspell's p50 above the floor ÷ xeus-python's (the kernels' own cost)",
                    fmt(la / xa, nd=2) if xa > 0 else "—")
        row("no-op execute round trip p99 (µs)", kvals("execute_us_p99", nd=0))
        row("kernel_info round trip p50 (µs)", kvals("kernel_info_us_p50", nd=0))
        refs = [(c, K[c]["flood10k_ms"]) for c in cols if c != "llmspell" and K[c].get("flood10k_all_arrived")
                and K[c].get("flood10k_ms")]
        best = min(refs, key=lambda x: x[1]) if refs else None
        complete = L.get("flood10k_all_arrived")
        if best and L.get("flood10k_ms") is not None:
            rt = L["flood10k_ms"] / best[1]
            row("10 000-line flood (ms)", kvals("flood10k_ms"),
                f"all lines, ≤ 0.5 × fastest complete ref ({best[0]})", rt, bool(complete) and rt <= 0.5)
        else:
            row("10 000-line flood (ms)", kvals("flood10k_ms"), "all lines, ≤ 0.5 × fastest complete ref", None,
                False if L and not complete else None)
        flood = kvals("flood10k_ms")
        for c in cols:
            if K.get(c, {}).get("flood10k_ms") is None and K.get(c, {}).get("flood10k_notes"):
                flood[c] = "lost"
        rows[-1]["values"] = flood
        row("10 000-line flood: every line arrived", kvals("flood10k_all_arrived"))
        rss = L.get("rss_idle_kb")
        rt = ratio(rss, X.get("rss_idle_kb"))
        row("RSS idle (MB, kernel process tree)", kvals("rss_idle_kb", mb), "≤ 8 MB and ≤ 0.2 × xeus-python", rt,
            None if rss is None else rss <= 8 * 1024 and (rt is None or rt <= 0.2))
        row("  PSS idle (MB, the same tree; shared pages counted once; llmspell's includes its zygote)",
            kvals("pss_idle_kb", mb))
        row("RSS after the work (MB)", kvals("rss_work_kb", mb))
        win = L.get("idle_cpu_window_s") or next((K.get(c, {}).get("idle_cpu_window_s") for c in cols), None)
        ticks = L.get("idle_cpu_ticks")
        row(f"idle CPU (ms of CPU in {fmt(win, ' s', 0)} idle)", kvals("idle_cpu_ms", nd=0),
            f"no measurable use (0 ticks of 1/{CLK_TCK} s)", None, None if ticks is None else ticks == 0,
            None if ticks is None else f"{ticks} ticks")

    # 2. llmspell's own client
    C = R.get("own_client")
    if C and "error" not in C:
        ex, shape = C.get("execute_us", {}), C.get("zmq_execute_shape_us", {})
        raw1, raw2 = C.get("zmq_raw_us", {}), C.get("zmq_raw_2proc_us", {})
        # The floor is the round trip between two processes, as between a client and a kernel. The
        # in-process figure (echo server as a thread) shares the client's ZeroMQ I/O thread, so it is not
        # the same path. An older bench_client has only the in-process figure: fall back to it, said so.
        if raw2.get("p50") is not None:
            floor, floor_name, measured = raw2, "raw ZeroMQ round trip between two processes", None
        else:
            floor, floor_name = raw1, "raw ZeroMQ round trip within one process"
            measured = "no two-process figure in bench_client's JSON: in-process floor"
            R.setdefault("meta", {}).setdefault("notes", []).append(
                "own client: bench_client gave no zmq_raw_2proc_us (older build?); its target uses the "
                "in-process ZeroMQ round trip as the floor")
        rt = ratio(ex.get("p50"), floor.get("p50"))
        row("own client: no-op execute p50 / p99 (µs)", f"{fmt(ex.get('p50'), nd=0)} / {fmt(ex.get('p99'), nd=0)}",
            f"p50 ≤ 2 × {floor_name}", rt, None if rt is None else rt <= 2, measured)
        row("own client: kernel_info p50 (µs)", fmt(C.get("kernel_info_us", {}).get("p50"), nd=0))
        if raw2.get("p50") is not None:
            row("  floor: raw ZeroMQ DEALER/ROUTER round trip between two processes p50 / p99 (µs)",
                f"{fmt(raw2.get('p50'), nd=0)} / {fmt(raw2.get('p99'), nd=0)}")
        row("  raw ZeroMQ round trip within one process (echo thread shares the client's I/O thread) "
            "p50 / p99 (µs)", f"{fmt(raw1.get('p50'), nd=0)} / {fmt(raw1.get('p99'), nd=0)}")
        row(f"  raw ZeroMQ{' between two processes' if raw2.get('p50') is not None else ''} + busy/idle on PUB "
            "(an execute's shape), p50 (µs)", fmt(shape.get("p50"), nd=0))
        conc = C.get("concurrent", {})
        row("own client: executes/s with 1 / 4 / 16 clients",
            " / ".join(fmt(conc.get(k, {}).get("rps"), nd=0) for k in ("1", "4", "16")))
        row("own client: execute p50 (µs) with 1 / 4 / 16 clients",
            " / ".join(fmt(conc.get(k, {}).get("latency_us", {}).get("p50"), nd=0) for k in ("1", "4", "16")))
    elif C:
        row("own client", "error (see JSON)")

    # 3. the CLI
    CL = R.get("cli", {})
    if CL:
        def cm(k):
            return CL.get(k, {}).get("median_ms")
        row("CLI: warm `llmspell exec 'x = 1'` (ms, median)", fmt(cm("warm_exec"), nd=2))
        rt = ratio(cm("warm_run"), cm("lua_run"))
        row("CLI: warm `llmspell run hello.lua` (ms)", fmt(cm("warm_run"), nd=2), "≤ 3 × `lua5.4 hello.lua`", rt,
            None if rt is None else rt <= 3)
        row("CLI: cold `llmspell run hello.lua`, spawns the kernel (ms)", fmt(cm("cold_run"), nd=2), "≤ 30 ms",
            ratio(cm("cold_run"), 30), None if cm("cold_run") is None else cm("cold_run") <= 30)
        row("  reference: `lua5.4 hello.lua` (ms)", fmt(cm("lua_run"), nd=2))

    # 4. scale
    S = R.get("scale", {})
    base = S.get("10000", {}).get("kernel_peak_rss_kb")
    for n in ("10000", "100000", "1000000"):
        if n not in S:
            continue
        s = S[n]
        text = f"{fmt(s['ms'])} / {fmt(s['all_arrived'])} / {fmt(mb(s['kernel_peak_rss_kb']))}"
        label = f"`llmspell exec` printing {int(n):,} lines: ms / all / kernel peak RSS MB"
        if n == "1000000":
            peak = s.get("kernel_peak_rss_kb")
            bounded = peak is not None and base is not None and peak <= 2 * base
            row(label, text, "all lines; peak RSS ≤ 2 × at 10 000 lines", ratio(peak, base),
                bool(s.get("all_arrived")) and bounded)
        else:
            row(label, text)
    ST = R.get("state", {})
    keys = [k for k in ("1000", "10000", "100000") if k in ST]
    if keys:
        lab = " / ".join(f"{int(k) // 1000}k" for k in keys)
        row(f"state.set µs per call, store holding {lab} keys", " / ".join(fmt(ST[k]["set_us"], nd=2) for k in keys))
        row(f"state.get µs per call, store holding {lab} keys", " / ".join(fmt(ST[k]["get_us"], nd=2) for k in keys))
        row(f"cell with one state.set (ms), {lab} keys (no-op cell: "
            f"{fmt(ST[keys[0]]['noop_cell_ms'], nd=2)})", " / ".join(fmt(ST[k]["one_set_cell_ms"], nd=2) for k in keys))
        if "100000" in ST:
            row("cell setting 100 000 keys (ms)", fmt(ST["100000"]["fill_cell_ms"]))

    # 5. `llmspell run` against a stock lua (issue 12)
    RN = R.get("run", {})
    if RN.get("suite"):
        su, lv = RN["suite"], RN.get("lua_version") or RN.get("lua")
        n = RN.get("rounds")

        def cpu_note(s):
            c = s.get("cpu_ratio_run")
            return None if c is None else f"CPU time {c:.2f}"

        def trio(s):
            return (f"run {fmt(s['run']['median_ms'], nd=0)} / lua {fmt(s['lua']['median_ms'], nd=0)}"
                    f" / exec {fmt(s['exec']['median_ms'], nd=0)}")
        for name in SUITE:
            if name not in su:
                continue
            s = su[name]
            rt = s["ratio_run"]
            row(f"run: {name}.lua, ms (median of {n})", trio(s), f"≤ 1.15 × {lv}", rt,
                None if rt is None else rt <= 1.15, cpu_note(s))
        t = su["total"]
        row("run: suite total, ms (sum of the medians)", trio(t), f"≤ 1.05 × {lv}", t["ratio_run"],
            None if t["ratio_run"] is None else t["ratio_run"] <= 1.05, cpu_note(t))
        row("  in the session (`llmspell exec \"dofile(ITEM)\"`) ÷ lua, wall (CPU): "
            + ", ".join(f"{name} {fmt(su[name]['ratio_exec'], nd=2)} ({fmt(su[name].get('cpu_ratio_exec'), nd=2)})"
                        for name in SUITE if name in su),
            f"{fmt(t['ratio_exec'], nd=3)} ({fmt(t.get('cpu_ratio_exec'), nd=3)}) total")
    C4 = RN.get("concurrent")
    if C4:
        rt = C4["ratio"]
        row(f"run: {C4['n']} concurrent `run fib.lua` on {C4['cpus']} CPUs, ms (until the last ends)",
            f"run {fmt(C4['run']['median_ms'], nd=0)} / lua {fmt(C4['lua']['median_ms'], nd=0)}",
            f"≤ 1.2 × {C4['n']} concurrent lua", rt, None if rt is None else rt <= 1.2)
    HI, HB = RN.get("hello_idle"), RN.get("hello_busy")

    def mm(s):
        return f"{fmt(s['median_ms'], nd=2)} (min {fmt(s['min_ms'], nd=2)})"
    if HI:
        rt = RN.get("hello_ratio")
        row("run: warm `llmspell run hello.lua`, ms", mm(HI["run"]), "≤ 2 × `lua hello.lua`",
            rt, None if rt is None else rt <= 2,
            None if RN.get("hello_ratio_min") is None else f"min ÷ min {RN['hello_ratio_min']:.2f}")
        row("  reference: `lua hello.lua` / `llmspell --version` (the CLI's own start-up), ms",
            f"{mm(HI['lua'])} / {mm(HI['version'])}")
    if HB:
        rt, lb = RN.get("hello_busy_over_idle"), RN.get("lua_busy_over_idle")
        busy_ok = HB.get("cell_busy_throughout")
        # The busy cell takes one CPU: lua's own busy ÷ idle is the machine's share of any slowdown.
        adj = ratio(rt, lb)
        row("run: warm `run hello.lua` while a session cell is busy, ms", mm(HB["run"]),
            "≤ 1.1 × while idle, after the machine's share", adj,
            None if adj is None or not busy_ok else adj <= 1.1,
            f"busy ÷ idle: run {fmt(rt, nd=2)}, lua {fmt(lb, nd=2)}" + ("" if busy_ok else "; cell ended early"))
    HW = RN.get("hello_wait")
    if HW:
        row("  while a session cell waits in `os.execute(\"sleep 2\")` (busy kernel, no CPU), ms",
            f"{mm(HW['run'])}; ÷ idle {fmt(RN.get('hello_wait_over_idle'), nd=2)}"
            + ("" if RN.get("hello_wait_cell_throughout") else " (cell ended early)"))
    HP = RN.get("hello_spin")
    if HP:
        row("  kernel idle, one CPU kept awake by a `nice -n 19` loop: run / lua / --version, ms",
            f"{mm(HP['run'])} / {mm(HP['lua'])} / {mm(HP['version'])}; run ÷ lua {fmt(RN.get('hello_spin_ratio'), nd=2)}")
    MI, MB, MA = RN.get("memory_idle"), RN.get("memory_before_runs"), RN.get("memory_after_runs")
    if MI:
        row("run: idle zygote RSS / PSS (MB, smaps_rollup)",
            f"{fmt(mb(MI['zygote_rss_kb']), nd=2)} / {fmt(mb(MI['zygote_pss_kb']), nd=2)}")
        row("  the kernel itself, RSS / PSS (MB): idle" + (" / after the suite in the session" if MB else ""),
            f"{fmt(mb(MI['kernel_rss_kb']), nd=2)} / {fmt(mb(MI['kernel_pss_kb']), nd=2)}"
            + (f"; {fmt(mb(MB['kernel_rss_kb']), nd=2)} / {fmt(mb(MB['kernel_pss_kb']), nd=2)}" if MB else ""))
    if MB and MA:
        def grow(k):
            return None if MA.get(k) is None or MB.get(k) is None else (MA[k] - MB[k]) / 1024
        same = RN.get("zygote_pid_after_runs") == RN.get("zygote_pid")
        row(f"  growth over {RN['runs_n']:,} runs: zygote RSS / PSS, kernel RSS (MB)",
            f"{fmt(grow('zygote_rss_kb'), nd=2)} / {fmt(grow('zygote_pss_kb'), nd=2)} / "
            f"{fmt(grow('kernel_rss_kb'), nd=2)}" + ("" if same else " (zygote replaced!)")
            + (f", {RN['runs_failures']} failed" if RN.get("runs_failures") else ""))

    G = R.get("gateway", {})
    if G.get("llmspell") or G.get("ipykernel"):
        GL, GI = G.get("llmspell", {}).get("rtt_us_p50"), G.get("ipykernel", {}).get("rtt_us_p50")
        row("no-op execute round trip through Kernel Gateway p50 (µs; one Python websocket client for both)",
            f"{fmt(GL, nd=0)} (ipykernel {fmt(GI, nd=0)}; ratio {fmt(ratio(GL, GI), nd=2)})")
    if G.get("cli_exec_ms_p50") is not None:
        row("  `llmspell --remote URL exec`, whole command, kernel started (ms, median)", fmt(G["cli_exec_ms_p50"]))
    # 6. the session's CPU suite with the debugger attached (issue 14)
    DB = R.get("debug", {})
    if DB.get("total"):
        t = DB["total"]
        row(f"debug: CPU suite in the session, debugger attached, no breakpoint ÷ none (CPU ms, medians of {DB['rounds']})",
            f"{fmt(t['attached'], nd=0)} / {fmt(t['off'], nd=0)}", "≤ 1.05 × no debugger", t["ratio_attached"],
            None if t["ratio_attached"] is None else t["ratio_attached"] <= 1.05,
            ", ".join(f"{n} {fmt(DB['suite'][n]['ratio_attached'], nd=2)}" for n in SUITE if n in DB["suite"]))
        row("debug: the same with one breakpoint never hit (in a function of a cell that ran) ÷ none (CPU ms): "
            + ", ".join(f"{n} {fmt(DB['suite'][n]['ratio_breakpoint'], nd=2)}" for n in SUITE if n in DB["suite"]),
            f"{fmt(t['breakpoint'], nd=0)} / {fmt(t['off'], nd=0)} = {fmt(t['ratio_breakpoint'], nd=2)} ×")

    B = R.get("binary", {})
    if B:
        size = B.get("stripped_bytes", B.get("bytes"))
        row("release binary, stripped (MB)", fmt(size / 1e6, nd=2), "≤ 5 MB", size / 5e6, size <= 5e6)
    return cols, rows


def print_table(cols, rows):
    header = ["figure"] + cols + ["target", "ratio", "holds"]
    table = [header]
    for rw in rows:
        cells = [rw["figure"]] + [rw["values"].get(c, "") for c in cols]
        if rw["target"]:
            verdict = {True: "yes", False: "NO", None: "?"}[rw["holds"]]
            if rw.get("measured"):
                verdict += f" ({rw['measured']})"
            cells += [rw["target"], "—" if rw["ratio"] is None else f"{rw['ratio']:.3g}", verdict]
        else:
            cells += ["", "", ""]
        table.append(cells)
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    right = set(range(1, len(cols) + 1)) | {len(header) - 2}

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    print(line(table[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for t in table[1:]:
        print(line(t))
# ----------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "llmspell"))
    ap.add_argument("--quick", action="store_true", help="fewer samples (about 2 minutes)")
    ap.add_argument("--json", default=str(ROOT / "target" / "bench.json"))
    ap.add_argument("--sections", default="kernels,client,cli,scale,state,binary,run,gateway,debug")
    ap.add_argument("--only", metavar="SECTIONS", help="the same as --sections (e.g. --only run: `llmspell run` "
                    "against a stock lua, no Jupyter kernels, no Python packages needed)")
    ap.add_argument("--lua", default=os.environ.get("LUA"),
                    help="the stock lua the run section compares with (default: $LUA, else lua5.4)")
    ap.add_argument("--kernels", default="llmspell,xeus-python,ipykernel,ilua,floor",
                    help="floor: a do-nothing kernel (examples/bench_client.rs --mock-kernel), jupyter_client's floor")
    a = ap.parse_args()
    sections = set((a.only or a.sections).split(","))
    quick = a.quick
    cfg = {
        "starts": 3 if quick else 7,
        "warmup": 20 if quick else 50,
        "rtt_n": 150 if quick else 500,
        "flood_runs": 3 if quick else 5,
        "flood_timeout": 10.0,
        "idle_s": 3.0 if quick else 10.0,
        "cli_n": 8 if quick else 20,
        "cold_n": 4 if quick else 10,
        "scale_lines": [10_000, 100_000, 1_000_000],
        "state_keys": [1_000, 10_000, 100_000],
        "state_ops": 2_000 if quick else 10_000,
        "state_reps": 2 if quick else 3,
        "client_n": 500 if quick else 2000,
        "client_duration": 1.0 if quick else 2.0,
        "raw_n": 5000 if quick else 20000,
        "run_rounds": 3 if quick else 7,
        "conc_rounds": 3 if quick else 5,
        "hello_n": 12 if quick else 40,
        "hello_blocks": 2 if quick else 5,
        "runs_n": 1000 if quick else 10000,
    }
    bin_path = Path(a.bin).resolve()
    if not bin_path.exists():
        print(f"bench: {bin_path} does not exist (make build)", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="llmspell-bench-")
    home = Path(tmp) / "home"
    home.mkdir(mode=0o700)
    prefix = Path(tmp) / "prefix"
    # The llmspell kernelspec in a private prefix; every kernel inherits a private LLMSPELL_HOME.
    env = dict(os.environ)
    env["LLMSPELL_HOME"] = str(home)
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(prefix / "share" / "jupyter"), env.get("JUPYTER_PATH")]))
    env["JUPYTER_RUNTIME_DIR"] = str(Path(tmp) / "runtime")
    env["IPYTHONDIR"] = str(Path(tmp) / "ipython")
    env["LLMSPELL_LOG"] = "warn"
    logs = ROOT / "target" / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    os.environ.update({k: env[k] for k in ("LLMSPELL_HOME", "JUPYTER_PATH", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR")})
    lua = shutil.which("lua5.4")
    if lua and not env.get("LUA_INTERPRETER") and not shutil.which("lua"):
        env["LUA_INTERPRETER"] = lua  # ILua runs `lua` unless told otherwise
    R = {"meta": {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_start": os.getloadavg(),
        "host": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(), "quick": quick, "bin": str(bin_path), "config": cfg,
        "lua5.4": lua, "notes": [],
    }}
    ref_lua = shutil.which(a.lua) if a.lua else lua
    R["meta"]["run_lua"] = ref_lua
    if sections & {"kernels", "state", "debug"}:
        try:
            import jupyter_client
            R["meta"]["jupyter_client"] = jupyter_client.__version__
        except ImportError:
            print("bench: jupyter_client is not installed (make venv)", file=sys.stderr)
            return 2
    notes = R["meta"]["notes"]
    cli = Cli(bin_path, home, env)
    order = [k for k in a.kernels.split(",") if k in KERNELS]
    client_exe, client_err = (None, "not asked for")
    if sections & {"kernels", "client"}:
        log("building examples/bench_client.rs ...")
        client_exe, client_err = build_bench_client()
        if client_err:
            notes.append(client_err)
    try:
        if "kernels" in sections:
            if client_exe:
                spec_dir = prefix / "share" / "jupyter" / "kernels" / KERNELS["floor"][0]
                spec_dir.mkdir(parents=True, exist_ok=True)
                (spec_dir / "kernel.json").write_text(json.dumps({
                    "argv": [str(client_exe), "--mock-kernel", "{connection_file}"],
                    "display_name": "do-nothing kernel (bench floor)", "language": "lua"}))
            inst = subprocess.run([str(bin_path), "kernel", "install", "--prefix", str(prefix)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if inst.returncode != 0:
                notes.append("llmspell kernel install failed: " + inst.stderr.strip())
            from jupyter_client.kernelspec import KernelSpecManager
            specs = KernelSpecManager().find_kernel_specs()
            runnable = []
            for label in order:
                spec, lang = KERNELS[label]
                if spec not in specs:
                    if label != "floor":
                        notes.append(f"{label}: kernelspec {spec!r} not installed (pip install -r bench/requirements.txt); skipped")
                    continue
                if label == "ilua" and "ilua" not in " ".join(KernelSpecManager().get_kernel_spec(spec).argv):
                    notes.append(f"ilua: kernelspec {spec!r} is not ILua's; skipped")
                    continue
                if label == "ilua" and not shutil.which(env.get("LUA_INTERPRETER", "lua")):
                    notes.append("ilua: no `lua` interpreter (apt-get install lua5.4); skipped")
                    continue
                runnable.append((label, spec, lang))
            log(f"kernels {', '.join(e[0] for e in runnable)} ...")
            R["kernels"] = bench_jupyter_kernels(runnable, cfg, env, logs)
        def section(name, fn):
            """Runs one section; a failure is noted and the next section still runs."""
            if name not in sections:
                return
            log(f"{name} ...")
            try:
                R[{"client": "own_client"}.get(name, name)] = fn()
            except Exception as e:
                notes.append(f"{name}: aborted: {type(e).__name__}: {e}")
                log(traceback.format_exc())

        if "cli" in sections and not lua:
            notes.append("lua5.4 not installed: no `lua5.4 hello.lua` baseline (apt-get install lua5.4)")
        section("client", lambda: bench_own_client(cli, cfg, client_exe) if client_exe else {"error": client_err})
        section("cli", lambda: bench_cli(cli, lua, cfg, tmp))
        section("scale", lambda: bench_scale(cli, cfg, tmp))
        section("state", lambda: bench_state(bin_path, env, cfg, tmp))
        section("binary", lambda: binary_size(bin_path, tmp))

        def gateway():
            from gateway import bench_gateway  # bench/gateway.py
            subprocess.run([str(bin_path), "kernel", "install", "--prefix", str(prefix)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return bench_gateway(bin_path, env, cfg, tmp, log)
        section("gateway", gateway)
        section("debug", lambda: bench_debug(cli, cfg))
        if "run" in sections and not ref_lua:
            notes.append(f"run: no stock lua ({a.lua or 'lua5.4'}): section skipped (apt-get install lua5.4, or $LUA)")
        elif "run" in sections:
            section("run", lambda: bench_run(cli, ref_lua, cfg, tmp))
            RN = R.get("run", {})
            for k, v in RN.get("suite_failures", {}).items():
                notes.append(f"run: suite by {k}: {len(v)} runs failed or printed something else: {v[0]}")
            for k in ("hello_idle", "hello_busy", "concurrent"):
                if RN.get(k, {}).get("failures"):
                    notes.append(f"run: {k}: {RN[k]['failures']} commands failed")
    except Exception as e:
        notes.append(f"aborted: {type(e).__name__}: {e}")
        log(traceback.format_exc())
    finally:
        try:
            cli.stop()
        except Exception:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    R["meta"]["seconds"] = round(time.monotonic() - t_start, 1)
    R["meta"]["loadavg_end"] = os.getloadavg()
    cols, rows = build_report(R, order)
    R["targets"] = [{k: rw[k] for k in ("figure", "target", "ratio", "holds", "measured")} | {"llmspell": rw["values"].get("llmspell")}
                    for rw in rows if rw["target"]]
    R["table"] = {"columns": ["figure"] + cols + ["target", "ratio", "holds"], "rows": rows}
    print()
    jc = R["meta"].get("jupyter_client")
    print(f"llmspell bench — {R['meta']['when']}, {os.cpu_count()} CPUs"
          + (f", jupyter_client {jc}" if jc else "")
          + f", sections {','.join(sorted(sections))}, {'quick' if quick else 'full'} run in {R['meta']['seconds']} s")
    cpus = os.cpu_count() or 1
    # The run itself keeps about one CPU busy: judge the end by a higher bar than the start.
    if R["meta"]["loadavg_start"][0] > 0.5 * cpus or R["meta"]["loadavg_end"][0] > cpus:
        print(f"warning: load average {R['meta']['loadavg_start'][0]:.2f} at start, "
              f"{R['meta']['loadavg_end'][0]:.2f} at end: other work shares the CPUs, figures are noisy")
    RN = R.get("run", {})
    if RN:
        print(f"run: compared with {RN.get('lua_version')} ({RN.get('lua')}); every figure is a median over "
              f"interleaved rounds ({RN.get('rounds')} for the suite, {cfg['conc_rounds']} concurrent, "
              f"{cfg['hello_n']} hello, idle and busy in {cfg['hello_blocks']} alternating blocks), wall time of whole commands; exec = the suite in the session through "
              f"`llmspell exec`")
    print_table(cols, rows)
    if "floor" in cols:
        print("floor = a kernel that answers every request at once (examples/bench_client.rs --mock-kernel):"
              " jupyter_client's and ZeroMQ's own cost")
    held = [t for t in R["targets"] if t["holds"]]
    print(f"targets holding: {len(held)} of {len(R['targets'])}"
          + (f"; missed: {', '.join(t['figure'].split(' (')[0] for t in R['targets'] if t['holds'] is False)}"
             if any(t["holds"] is False for t in R["targets"]) else ""))
    for k, v in R.get("kernels", {}).items():
        for extra in ("error", "flood10k_notes"):
            if v.get(extra):
                print(f"note: {k}: {extra}: {v[extra]}")
    for n in notes:
        print(f"note: {n}")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(R, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
