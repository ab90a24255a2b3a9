"""A kernel that lives for weeks keeps its memory bounded (issue 24), through jupyter_client.

Memory is read from /proc (VmRSS of the kernel's process tree): deterministic enough to assert on
short runs; `make bench` (longevity) runs the long ones side by side with ipykernel. Also the
history that moved to disk: it survives a restart under new session numbers, and a damaged or
unwritable history file never stops the kernel.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
import zmq

from conftest import KERNEL_NAME, execute_ok, run_request

MB = 1024  # kB


def rss_kb(pid: int) -> int:
    """VmRSS of pid and its descendants (the kernel's zygote counts too), in kB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except (OSError, StopIteration):
            pass
    return total


class PeakRss:
    """The highest RSS seen while the block runs (sampled every 20 ms; a missed peak only makes
    an assertion on it more lenient)."""

    def __init__(self, pid: int):
        self.pid, self.peak_kb = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class Kernel:
    """A kernel from the kernelspec, with our own home, connection file and stderr file."""

    def __init__(self, tmp: Path, home: Path | None = None, name: str = "kernel-memory",
                 size_limit_of: Path | None = None):
        from jupyter_client.manager import KernelManager

        self.home = home or tmp / "home"
        self.stderr_path = tmp / f"{name}.stderr"
        self.km = KernelManager(kernel_name=KERNEL_NAME)
        self.km.connection_file = str(tmp / f"{name}.json")
        self._stderr = open(self.stderr_path, "ab")
        self.size_limit_of = size_limit_of
        self.start()

    def start(self):
        env = dict(os.environ, LLMSPELL_HOME=str(self.home))
        size = self.size_limit_of.stat().st_size if self.size_limit_of else None

        def limit_file_size():  # in the kernel's process only: no file may grow past that size
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

        extra = {"preexec_fn": limit_file_size} if size else {}
        self.km.start_kernel(env=env, stderr=self._stderr, **extra)
        self.connect()

    def connect(self):
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def restart(self):
        self.kc.stop_channels()
        self.km.restart_kernel(now=False)
        self.connect()

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def settled_rss(self) -> int:
        time.sleep(0.3)  # what follows a reply (freeing, giving memory back) is done
        return rss_kb(self.pid)

    def history(self, **kw):
        kw.setdefault("output", False)
        kw.setdefault("raw", True)
        res = run_request(self.kc, self.kc.history(**kw))
        assert res.content["status"] == "ok", res.content
        return res.content["history"]

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        self._stderr.close()


@pytest.fixture
def open_kernels():
    kernels: list[Kernel] = []
    yield kernels
    for k in kernels:
        try:
            k.close()
        except Exception:
            pass


def start(open_kernels, tmp_path, **kw) -> Kernel:
    k = Kernel(tmp_path, **kw)
    open_kernels.append(k)
    return k


def history_file(k: Kernel) -> Path:
    return k.home / "kernel-history" / (Path(k.km.connection_file).stem + ".jsonl")


# ------------------------------------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_cells_and_their_results_are_not_kept_in_memory(open_kernels, tmp_path):
    # 600 cells of 10 kB of code returning 10 kB each: 12 MB that a history holding every cell's
    # code and result in memory would keep. The window in memory is bounded in cells and bytes.
    k = start(open_kernels, tmp_path)
    cell = "-- " + "c" * 10_000 + "\nx = {i}; return string.rep('r', 10000)"
    for i in range(100):
        execute_ok(k.kc, cell.format(i=i))
    before = k.settled_rss()
    for i in range(600):
        execute_ok(k.kc, cell.format(i=i))
    after = k.settled_rss()
    assert after - before <= 4 * MB, f"RSS grew {before} -> {after} kB over 600 cells"
    # ...while the whole history is still there, on disk.
    assert len(k.history(hist_access_type="tail", n=10_000)) == 700


@pytest.mark.timeout(300)
def test_large_results_leave_nothing_behind_once_collected(open_kernels, tmp_path):
    k = start(open_kernels, tmp_path)
    execute_ok(k.kc, "x = 0")
    baseline = k.settled_rss()
    for _ in range(20):
        res = execute_ok(k.kc, "return string.rep('y', 5e6)")
        assert len(res.result_text) >= 5_000_000
    execute_ok(k.kc, "collectgarbage(); collectgarbage()")
    after = k.settled_rss()
    assert after - baseline <= 32 * MB, f"after 20 x 5 MB results and a GC: {baseline} -> {after} kB"


@pytest.mark.timeout(600)
def test_a_stalled_subscriber_costs_bounded_memory_and_readers_get_every_byte(open_kernels, tmp_path):
    k = start(open_kernels, tmp_path)
    execute_ok(k.kc, "x = 0")
    baseline = k.settled_rss()
    info = k.km.get_connection_info()
    ctx = zmq.Context()
    stalled = ctx.socket(zmq.SUB)
    # Like a suspended front end: its ZeroMQ takes one message in and then reads nothing more.
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 4096)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
    try:
        time.sleep(0.5)  # its subscription reaches the kernel
        cells = 20  # 100 MB printed: a queue that grows with output would hold most of it
        with PeakRss(k.pid) as peak:
            for i in range(cells):
                letter = chr(ord("a") + i)
                res = execute_ok(k.kc, f"io.write(string.rep('{letter}', 5e6))", timeout=120)
                text = res.stdout
                assert len(text) == 5_000_000 and text.count(letter) == 5_000_000, (i, len(text))
        assert peak.peak_kb - baseline <= 64 * MB, f"peak {peak.peak_kb} kB, baseline {baseline} kB"
    finally:
        stalled.close(linger=0)
        ctx.term()
    time.sleep(0.5)
    execute_ok(k.kc, "x = 1")
    after = k.settled_rss()
    assert after - baseline <= 32 * MB, f"after the subscriber left: {baseline} -> {after} kB"
    assert "set aside" in k.stderr()


# ------------------------------------------------------------------------------------------------
# History on disk
# ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_history_survives_a_restart_under_a_new_session_number(open_kernels, tmp_path):
    repl_history = tmp_path / "home" / "history"  # the REPL's line-editing file, left as it is
    repl_history.parent.mkdir()
    repl_history.write_text("print('from the repl')\n")
    k = start(open_kernels, tmp_path)
    execute_ok(k.kc, "first = 1")
    execute_ok(k.kc, "first + 1")
    old = k.history(hist_access_type="tail", n=2)
    k.restart()
    execute_ok(k.kc, "second = 2")
    tail = k.history(hist_access_type="tail", n=3)
    assert [e[2] for e in tail] == ["first = 1", "first + 1", "second = 2"]
    assert tail[:2] == old
    assert tail[2][0] == old[0][0] + 1 and tail[2][1] == 1, tail  # line numbers restart at 1
    assert [e[2] for e in k.history(hist_access_type="range", session=-1, start=1)] == ["first = 1", "first + 1"]
    assert [e[2] for e in k.history(hist_access_type="range", session=0, start=1)] == ["second = 2"]
    assert [e[2] for e in k.history(hist_access_type="search", pattern="first*")] == ["first = 1", "first + 1"]
    # One JSON line per cell on disk, named for the kernel's connection file.
    lines = history_file(k).read_text().splitlines()
    assert [json.loads(line)["input"] for line in lines] == ["first = 1", "first + 1", "second = 2"]
    assert repl_history.read_text() == "print('from the repl')\n"


@pytest.mark.timeout(180)
def test_a_damaged_history_file_is_skipped_once_and_history_goes_on(open_kernels, tmp_path):
    path = tmp_path / "home" / "kernel-history" / "kernel-memory.jsonl"
    path.parent.mkdir(parents=True)
    good = json.dumps({"session": 3, "line": 7, "input": "kept = true"})
    path.write_text(f"{good}\n\x00garbage\xff\n{{\"session\": 3, \"li")  # and a torn last line
    k = start(open_kernels, tmp_path)
    execute_ok(k.kc, "after = 1")
    assert k.history(hist_access_type="tail", n=5) == [[3, 7, "kept = true"], [4, 1, "after = 1"]]
    warnings = [line for line in k.stderr().splitlines() if "unreadable line" in line]
    assert len(warnings) == 1 and "2 unreadable" in warnings[0], k.stderr()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["home is a file", "file size limit"])
def test_an_unwritable_history_never_stops_the_kernel(open_kernels, tmp_path, how):
    home = tmp_path / "home"
    if how == "home is a file":  # a read-only home (the kernel runs as root here: modes do not stop it)
        home.write_text("not a directory")
        old, limit = [], None
    else:  # the file cannot grow (EFBIG, as a full disk's ENOSPC): the first append fails
        old = [f"old{i}" for i in range(1, 101)]  # 5 kB: room for the kernel's stderr lines
        limit = home / "kernel-history" / "kernel-memory.jsonl"
        limit.parent.mkdir(parents=True)
        limit.write_text("".join(json.dumps({"session": 1, "line": i, "input": c}) + "\n"
                                 for i, c in enumerate(old, 1)))
    k = start(open_kernels, tmp_path, home=home, size_limit_of=limit)
    for i in range(3):
        execute_ok(k.kc, f"y = {i}")
    tail = k.history(hist_access_type="tail", n=200)
    assert [e[2] for e in tail] == old + ["y = 0", "y = 1", "y = 2"]
    assert [e[2] for e in k.history(hist_access_type="search", pattern="y = 1")] == ["y = 1"]
    warnings = [line for line in k.stderr().splitlines() if "history:" in line]
    assert len(warnings) == 1, k.stderr()
    assert execute_ok(k.kc, "return 40 + 2").result_text == "42"


@pytest.mark.timeout(180)
def test_jupyter_console_up_arrow_recalls_a_cell_from_before_the_restart(open_kernels, tmp_path):
    import pty
    import subprocess

    from test_console import jupyter_console_cmd
    from test_repl_pty import read_until

    k = start(open_kernels, tmp_path)
    execute_ok(k.kc, "print('up' .. 'arrow')")
    k.restart()
    leader, follower = pty.openpty()
    env = dict(os.environ, TERM="xterm", COLUMNS="100", LINES="30")
    proc = subprocess.Popen(jupyter_console_cmd() + ["--existing", k.km.connection_file],
                            stdin=follower, stdout=follower, stderr=follower, env=env, start_new_session=True)
    os.close(follower)
    try:
        assert "In [" in read_until(leader, "In [", timeout=60)
        os.write(leader, b"\x1b[A")  # Up: the console's history comes from the kernel's history_request
        recalled = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", read_until(leader, "'arrow'", timeout=20))
        assert "print('up' .. 'arrow')" in recalled, recalled
        os.write(leader, b"\r")
        seen = read_until(leader, "uparrow", timeout=30)
        assert "uparrow" in seen, seen[-2000:]
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(leader)
