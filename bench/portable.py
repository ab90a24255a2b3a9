"""bench.py section `portable`: the portable build (cargo feature `portable`, the POSIX platform backend
that macOS and the BSDs compile) next to the default one (the Linux backend), through the command line:
idle RSS of the kernel with its zygote, start (a cold `llmspell exec`), round trip (a warm `exec`),
warm run (`llmspell run hello.lua`), and interrupt latency (SIGINT to `llmspell run` of a script
looping on os.execute, until the client has exited)."""

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from measure import log, med, r, tree_rss_kb
from llmspell_cli import Cli


def interrupt_ms(cli, script):
    """SIGINT to a `llmspell run` once its script is looping; milliseconds until the client exits."""
    p = subprocess.Popen([cli.bin, "run", str(script)], env=cli.env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.readline()  # the script prints once it is in its loop
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None
    return (time.perf_counter() - t0) * 1000


def one_build(bin_path, cfg, tmp):
    home = Path(tempfile.mkdtemp(prefix="home-", dir=tmp))
    cli = Cli(bin_path, home, dict(os.environ, LLMSPELL_LOG="warn"))
    hello = Path(tmp) / "hello.lua"
    hello.write_text('print("hello")\n')
    loop = Path(tmp) / "loop.lua"
    loop.write_text('print("looping") io.stdout:flush() while true do os.execute("true") end\n')
    res = {}
    try:
        starts = []
        for _ in range(cfg["cold_n"]):
            cli.stop()
            starts.append(cli.run(["exec", "1"])[0] * 1000)
        res["start_ms"] = r(med(starts))
        time.sleep(cfg["idle_s"] / 2)
        pid = cli.kernel_pid()
        res["idle_rss_mb"] = r(tree_rss_kb(pid) / 1024) if pid else None
        res["round_trip_ms"] = r(med([cli.run(["exec", "x = 1"])[0] * 1000 for _ in range(cfg["cli_n"])]), 2)
        res["warm_run_ms"] = r(med([cli.run(["run", str(hello)])[0] * 1000 for _ in range(cfg["cli_n"])]), 2)
        lat = [interrupt_ms(cli, loop) for _ in range(max(3, cfg["cold_n"] // 2))]
        res["interrupt_ms"] = r(med([x for x in lat if x is not None])) if any(x is not None for x in lat) else None
        res["interrupts_lost"] = sum(1 for x in lat if x is None)
    finally:
        cli.stop()
    return res


def bench_portable(default_bin, portable_bin, cfg, tmp):
    out = {}
    for label, b in (("default", default_bin), ("portable", portable_bin)):
        if not Path(b).exists():
            out[label] = {"error": f"{b} does not exist"}
            continue
        log(f"  {label}: {b}")
        out[label] = one_build(b, cfg, tmp)
    return out


def print_portable(res):
    keys = ["idle_rss_mb", "start_ms", "round_trip_ms", "warm_run_ms", "interrupt_ms", "interrupts_lost"]
    print()
    print("platform backends (make bench: default = Linux backend, portable = POSIX backend)")
    print(f"  {'figure':<18}{'default':>12}{'portable':>12}")
    for k in keys:
        print(f"  {k:<18}{str(res.get('default', {}).get(k, '-')):>12}{str(res.get('portable', {}).get(k, '-')):>12}")
    for label in ("default", "portable"):
        if res.get(label, {}).get("error"):
            print(f"note: portable section: {label}: {res[label]['error']}")
