"""bench.py sections `client`, `cli`, `scale`, `state` and `binary`: figures through the llmspell
command line and its own Rust client (examples/bench_client.rs)."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from measure import ROOT, RssSampler, log, med, r, reset_peak_rss, status_kb, tree_rss_kb
from jupyter_kernels import iopub_ready, run_cell, start_kernel, stop_kernel


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
