"""bench.py section `run`: `llmspell run` against a stock lua (issue 12)."""

import json
import os
import subprocess
import time
from pathlib import Path

from measure import ROOT, cmdline, log, med, r, ratio, smaps_rollup_kb, tree_pids
from llmspell_cli import timed


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
