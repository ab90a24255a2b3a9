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
lsp       `llmspell lsp` with a 5,000-line file open (initialize, first diagnostics, completion p50/p95, an
          edit then a completion, RSS), beside EmmyLua's emmylua_ls (lsp_servers.py)
debug     the CPU suite as session cells with the Jupyter debugger attached, without and with one breakpoint
          that is never hit, against no debugger (CPU time of each cell; issue 14)
longevity memory over a kernel's life, llmspell beside ipykernel (issue 24; see longevity.py): RSS growth
          over 20 000 small cells, after 100 cells returning 5 MB and a GC, and with an iopub subscriber
          that never reads while 150 MB is printed
run       `llmspell run` against a stock lua (issue 12; see bench_run): the CPU-bound suite in bench/suite/
          by `lua`, `llmspell run` and in the session (`llmspell exec "dofile(...)"`), per item and in
          total; 4 concurrent CPU-bound runs vs 4 concurrent lua; warm `run hello.lua` vs `lua hello.lua`
          and `llmspell --version`, idle and behind a busy session cell; the zygote's and the kernel's RSS
          and PSS, idle and after 10 000 runs. Medians over interleaved rounds.

Nothing is asserted: the run prints one table (figures side by side, targets with measured ratios) and
writes everything as JSON. Kernels or tools that are missing are skipped with a note.

The sections live beside this file: jupyter_kernels.py (kernels), llmspell_cli.py (client, cli, scale,
state, binary), run_vs_lua.py (run), gateway.py (gateway), debugger_cost.py (debug), longevity.py
(longevity); measure.py takes
the figures, report.py prints the table.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

from measure import ROOT, log
from jupyter_kernels import KERNELS, bench_jupyter_kernels
from llmspell_cli import (
    Cli,
    bench_cli,
    bench_own_client,
    bench_scale,
    bench_state,
    binary_size,
    build_bench_client,
)
from run_vs_lua import bench_run
from debugger_cost import bench_debug
from longevity import bench_longevity
from lsp_servers import bench_lsp
from report import build_report, print_table
from portable import bench_portable, print_portable


# ----------------------------------------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "llmspell"))
    ap.add_argument("--quick", action="store_true", help="fewer samples (about 2 minutes)")
    ap.add_argument("--json", default=str(ROOT / "target" / "bench.json"))
    ap.add_argument("--sections", default="kernels,client,cli,scale,state,binary,run,gateway,debug,longevity,lsp")
    ap.add_argument("--only", metavar="SECTIONS", help="the same as --sections (e.g. --only run: `llmspell run` "
                    "against a stock lua, no Jupyter kernels, no Python packages needed)")
    ap.add_argument("--portable-bin", help="the portable build (cargo feature portable): adds the section "
                    "`portable`, the two platform backends side by side")
    ap.add_argument("--lua", default=os.environ.get("LUA"),
                    help="the stock lua the run section compares with (default: $LUA, else lua5.4)")
    ap.add_argument("--kernels", default="llmspell,xeus-python,ipykernel,ilua,floor",
                    help="floor: a do-nothing kernel (examples/bench_client.rs --mock-kernel), jupyter_client's floor")
    return ap.parse_args()


def config(quick):
    """How many samples each section takes."""
    return {
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
        "longevity_cells": 2_000 if quick else 20_000,
    }


def private_env(tmp):
    """The environment every kernel and command runs in: a private LLMSPELL_HOME, Jupyter paths in `tmp`
    (the llmspell kernelspec goes to a private prefix). Also set in this process, for jupyter_client."""
    home = Path(tmp) / "home"
    home.mkdir(mode=0o700)
    prefix = Path(tmp) / "prefix"
    env = dict(os.environ)
    env["LLMSPELL_HOME"] = str(home)
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(prefix / "share" / "jupyter"), env.get("JUPYTER_PATH")]))
    env["JUPYTER_RUNTIME_DIR"] = str(Path(tmp) / "runtime")
    env["IPYTHONDIR"] = str(Path(tmp) / "ipython")
    env["LLMSPELL_LOG"] = "warn"
    os.environ.update({k: env[k] for k in ("LLMSPELL_HOME", "JUPYTER_PATH", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR")})
    lua = shutil.which("lua5.4")
    if lua and not env.get("LUA_INTERPRETER") and not shutil.which("lua"):
        env["LUA_INTERPRETER"] = lua  # ILua runs `lua` unless told otherwise
    return env, home, prefix


def runnable_kernels(order, bin_path, prefix, env, client_exe, notes):
    """Installs the llmspell and floor kernelspecs into `prefix`; returns (label, spec, language) of each
    kernel in `order` that can run here, noting why the others cannot."""
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
    return runnable


def run_sections(R, sections, cfg, where, cli, lua, ref_lua, lua_arg):
    """Runs the asked sections into R; a failure is noted and the next section still runs. `where` holds
    the binary, the environment, the kernelspec prefix, the scratch directory and the kernels' order."""
    bin_path, env, prefix, tmp = where.bin_path, where.env, where.prefix, where.tmp
    notes = R["meta"]["notes"]
    client_exe, client_err = (None, "not asked for")
    if sections & {"kernels", "client"}:
        log("building examples/bench_client.rs ...")
        client_exe, client_err = build_bench_client()
        if client_err:
            notes.append(client_err)
    if "kernels" in sections:
        runnable = runnable_kernels(where.order, bin_path, prefix, env, client_exe, notes)
        log(f"kernels {', '.join(e[0] for e in runnable)} ...")
        R["kernels"] = bench_jupyter_kernels(runnable, cfg, env, ROOT / "target" / "bench-logs")

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

    def longevity():
        subprocess.run([str(bin_path), "kernel", "install", "--prefix", str(prefix)], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from jupyter_client.kernelspec import KernelSpecManager
        specs = KernelSpecManager().find_kernel_specs()
        pairs = [(label, KERNELS[label][0]) for label in ("llmspell", "ipykernel") if KERNELS[label][0] in specs]
        return bench_longevity(pairs, cfg["longevity_cells"])
    section("longevity", longevity)
    section("lsp", lambda: bench_lsp(bin_path, {**cfg, "quick": R["meta"]["quick"]}, tmp))
    if where.portable_bin:
        section("portable", lambda: bench_portable(bin_path, where.portable_bin, cfg, tmp))
    if "run" in sections and not ref_lua:
        notes.append(f"run: no stock lua ({lua_arg or 'lua5.4'}): section skipped (apt-get install lua5.4, or $LUA)")
    elif "run" in sections:
        section("run", lambda: bench_run(cli, ref_lua, cfg, tmp))
        RN = R.get("run", {})
        for k, v in RN.get("suite_failures", {}).items():
            notes.append(f"run: suite by {k}: {len(v)} runs failed or printed something else: {v[0]}")
        for k in ("hello_idle", "hello_busy", "concurrent"):
            if RN.get(k, {}).get("failures"):
                notes.append(f"run: {k}: {RN[k]['failures']} commands failed")


def print_summary(R, cols, rows, sections, cfg):
    """The table, with a heading line, load warnings and the notes."""
    quick = R["meta"]["quick"]
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
    if R.get("portable"):
        print_portable(R["portable"])
    for n in R["meta"]["notes"]:
        print(f"note: {n}")


def main():
    a = parse_args()
    sections = set((a.only or a.sections).split(","))
    quick = a.quick
    cfg = config(quick)
    bin_path = Path(a.bin).resolve()
    if not bin_path.exists():
        print(f"bench: {bin_path} does not exist (make build)", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="llmspell-bench-")
    env, home, prefix = private_env(tmp)
    (ROOT / "target" / "bench-logs").mkdir(parents=True, exist_ok=True)
    lua = shutil.which("lua5.4")
    order = [k for k in a.kernels.split(",") if k in KERNELS]
    R = {"meta": {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_start": os.getloadavg(),
        "host": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(), "quick": quick, "bin": str(bin_path), "config": cfg,
        "lua5.4": lua, "notes": [],
    }}
    ref_lua = shutil.which(a.lua) if a.lua else lua
    R["meta"]["run_lua"] = ref_lua
    if sections & {"kernels", "state", "debug", "longevity"}:
        try:
            import jupyter_client
            R["meta"]["jupyter_client"] = jupyter_client.__version__
        except ImportError:
            print("bench: jupyter_client is not installed (make venv)", file=sys.stderr)
            return 2
    notes = R["meta"]["notes"]
    cli = Cli(bin_path, home, env)
    if a.portable_bin:
        sections.add("portable")
    where = types.SimpleNamespace(bin_path=bin_path, env=env, prefix=prefix, tmp=tmp, order=order,
                                  portable_bin=Path(a.portable_bin).resolve() if a.portable_bin else None)
    try:
        run_sections(R, sections, cfg, where, cli, lua, ref_lua, a.lua)
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
    print_summary(R, cols, rows, sections, cfg)
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(R, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
