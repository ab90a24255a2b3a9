"""``jupyter console --existing <connection file> --simple-prompt`` with stdin piped.

How jupyter_console 6.x behaves here (read from its source, jupyter_console/ptshell.py):

* ``--simple-prompt`` replaces prompt_toolkit with plain ``input()``: one line is one cell (no
  multi-line cells, no is_complete round trip), prompts are ``In [N]: `` / ``Out[N]: ``.
* ``exit`` is not handled by the console itself: it is sent to the kernel as code. The console stops
  on EOF of stdin; with ``JupyterConsoleApp.confirm_exit=False`` it does not ask first. With
  ``--existing`` it leaves the kernel running ("keeping kernel alive").
* Only output whose parent_header.session is the console's own session is printed, so these tests
  also show that the kernel echoes the request header correctly.
* ``input_request`` is answered with ``input()`` from the same piped stdin, so a line following an
  ``io.read()`` cell is the answer to it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import execute_ok

CONSOLE_TIMEOUT = 90


def jupyter_console_cmd() -> list[str]:
    jupyter = Path(sys.executable).parent / "jupyter"
    if jupyter.exists():
        return [str(jupyter), "console"]
    return [sys.executable, "-m", "jupyter_console"]


def run_console(conn_file: Path, lines: list[str]) -> subprocess.CompletedProcess:
    cmd = jupyter_console_cmd() + [
        "--existing",
        str(conn_file),
        "--simple-prompt",
        "--JupyterConsoleApp.confirm_exit=False",
        "--ZMQTerminalInteractiveShell.kernel_timeout=30",
    ]
    env = dict(os.environ, TERM="dumb", NO_COLOR="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate("\n".join(lines) + "\n", timeout=CONSOLE_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(
            f"jupyter console did not finish within {CONSOLE_TIMEOUT} s\n"
            f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
        ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def assert_console_ok(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, f"console exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"


def test_console_runs_piped_code(id_kernel):
    res = run_console(
        id_kernel.conn_file,
        ["x = 41", "x + 1", 'print("hello from " .. "the console")', 'error("console " .. "boom")', "x * 2"],
    )
    assert_console_ok(res)
    out = res.stdout
    assert re.search(r"Out\[\d+\]: 42\b", out), out
    assert "hello from the console" in out, out
    # jupyter console prints error tracebacks on its stderr
    assert "console boom" in res.stderr, f"the error was not shown\nstdout:\n{out}\nstderr:\n{res.stderr}"
    assert re.search(r"Out\[\d+\]: 82\b", out), f"the cell after the error did not run:\n{out}"
    assert id_kernel.alive(), "the kernel did not survive the console leaving"


def test_console_sees_globals_of_other_clients(id_kernel):
    kc = id_kernel.client()
    execute_ok(kc, 'from_other = "set " .. "elsewhere"')
    res = run_console(id_kernel.conn_file, ["from_other", "from_console = 6 * 7"])
    assert_console_ok(res)
    assert '"set elsewhere"' in res.stdout, res.stdout
    assert execute_ok(kc, "from_console").result_text == "42"


def test_console_answers_io_read(id_kernel):
    res = run_console(id_kernel.conn_file, ["name = io.read()", "Ada", "name"])
    assert_console_ok(res)
    assert re.search(r'Out\[\d+\]: "Ada"', res.stdout), res.stdout


def test_exit_leaves_the_console_and_keeps_the_shared_kernel(id_kernel):
    # Lines after `exit` would run if the console stayed; the kernel serves others afterwards.
    res = run_console(id_kernel.conn_file, ["before_exit = 1", "exit", "after_exit = 1"])
    assert_console_ok(res)
    kc = id_kernel.client()
    assert execute_ok(kc, "tostring(before_exit) .. ' ' .. tostring(after_exit)").result_text == '"1 nil"'
    assert id_kernel.alive(), "exit in the console stopped the shared kernel"
    # A user's own `exit` is theirs.
    assert execute_ok(kc, "exit = 5 return exit").result_text == "5"
