"""bench.py's table: one row per figure, the kernels side by side, and the target verdict on the rows
that have one."""

from measure import CLK_TCK, ratio
from run_vs_lua import SUITE


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
