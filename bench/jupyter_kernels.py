"""bench.py section `kernels`: llmspell, xeus-python, ipykernel, ILua and a do-nothing kernel through
stock jupyter_client 8.x: start, memory, idle CPU, execute and kernel_info round trips, a 10 000 line
flood (see bench.py's usage text for how each figure is taken)."""

import contextlib
import queue
import time
import traceback

from measure import CLK_TCK, log, med, pct, r, tree_cpu_ticks, tree_pss_kb, tree_rss_kb


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
