"""``llmspell repl`` on a real terminal (a pty): Tab completion shows its candidates."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time


def read_until(fd: int, want: str, timeout: float = 60.0) -> str:
    """Reads the terminal until ``want`` shows (or the deadline passes); returns all it read."""
    seen = b""
    deadline = time.monotonic() + timeout
    while want.encode() not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen.decode(errors="replace")


def test_tab_lists_candidates_without_metamethods_and_completes_from_the_code_typed(tmp_path):
    env = dict(os.environ, LLMSPELL_HOME=str(tmp_path / "home"), TERM="xterm")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [os.environ["LLMSPELL_BIN"], "repl"], stdin=follower, stdout=follower, stderr=follower,
        env=env, start_new_session=True,
    )
    os.close(follower)
    try:
        assert "In [" in read_until(leader, "In ["), "no prompt"
        os.write(leader, b"io.stdout:\t\t")
        # The list may come in pieces: read until its last entry (column order) has arrived.
        shown = read_until(leader, "io.stdout:write")
        shown += read_until(leader, "io.stdout:setvbuf", timeout=10)
        assert "io.stdout:flush" in shown and "io.stdout:write" in shown, shown
        assert "__index" not in shown, shown
        os.write(leader, b"\x15")  # Ctrl-U: clear the line
        os.write(leader, b"local greeting = 'hi'; greeting:upp\t")
        assert "greeting:upper" in read_until(leader, "greeting:upper"), "no completion from the line"
        os.write(leader, b"\x15exit\r")
        proc.wait(timeout=60)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
        subprocess.run([os.environ["LLMSPELL_BIN"], "kernel", "stop", "--all"], env=env, capture_output=True)


def test_the_first_prompt_follows_the_shared_kernels_count(tmp_path):
    env = dict(os.environ, LLMSPELL_HOME=str(tmp_path / "home"), TERM="xterm")
    bin_ = os.environ["LLMSPELL_BIN"]
    for code in ["a = 1", "b = 2"]:
        subprocess.run([bin_, "exec", code], env=env, check=True, capture_output=True, timeout=120)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([bin_, "repl"], stdin=follower, stdout=follower, stderr=follower, env=env,
                            start_new_session=True)
    os.close(follower)
    try:
        shown = read_until(leader, "In [")
        shown += read_until(leader, "]: ", timeout=10)
        assert "In [3]: " in shown, shown
        os.write(leader, b"a + b\r")
        assert "Out[3]: 3" in read_until(leader, "Out[3]: 3"), "the result's number differs from the prompt's"
        os.write(leader, b"exit\r")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
        subprocess.run([bin_, "kernel", "stop", "--all"], env=env, capture_output=True)


def _repl(tmp_path):
    env = dict(os.environ, LLMSPELL_HOME=str(tmp_path / "home"), TERM="xterm")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([os.environ["LLMSPELL_BIN"], "repl"], stdin=follower, stdout=follower,
                            stderr=follower, env=env, start_new_session=True)
    os.close(follower)
    return env, leader, proc


def _close(env, leader, proc):
    if proc.poll() is None:
        proc.kill()
    os.close(leader)
    subprocess.run([os.environ["LLMSPELL_BIN"], "kernel", "stop", "--all"], env=env, capture_output=True)


def _screen(raw: str) -> list[str]:
    """What a terminal shows after `raw`: its lines, right-trimmed."""
    import pyte

    screen = pyte.Screen(100, 40)
    stream = pyte.Stream(screen)
    stream.feed(raw.replace("\n", "\r\n") if "\r\n" not in raw else raw)
    return [line.rstrip() for line in screen.display]


def test_a_prompt_written_before_io_read_stays_on_the_screen(tmp_path):
    env, leader, proc = _repl(tmp_path)
    try:
        seen = read_until(leader, "]: ")
        os.write(leader, b'io.write("Name: ") local n = io.read() print("hello " .. n)\r')
        seen += read_until(leader, "Name: ")
        time.sleep(0.5)  # let the line editor draw its prompt before typing (as a person would)
        os.write(leader, b"Bob\r")
        seen += read_until(leader, "hello Bob")
        seen += read_until(leader, "]: ", timeout=10)
        lines = _screen(seen)
        assert "Name: Bob" in lines, lines
        os.write(leader, b"exit\r")
        proc.wait(timeout=60)
    finally:
        _close(env, leader, proc)


def test_ctrl_d_at_io_read_is_end_of_input_not_an_interrupt(tmp_path):
    env, leader, proc = _repl(tmp_path)
    try:
        read_until(leader, "]: ")
        os.write(leader, b'x = io.read() print("read:" .. tostring(x) .. ":" .. "done")\r')
        time.sleep(1.0)  # the input prompt is empty: give the request time to arrive
        os.write(leader, b"\x04")
        seen = read_until(leader, ":done")
        assert "read:nil:done" in seen, seen
        assert "nterrupt" not in seen, seen
        os.write(leader, b"exit\r")
        proc.wait(timeout=60)
        assert proc.returncode == 0
    finally:
        _close(env, leader, proc)


def test_after_the_kernel_is_stopped_elsewhere_the_repl_offers_a_new_one(tmp_path):
    env, leader, proc = _repl(tmp_path)
    try:
        read_until(leader, "]: ")
        os.write(leader, b"kept = 1\r")
        read_until(leader, "]: ")
        stop = subprocess.run([os.environ["LLMSPELL_BIN"], "kernel", "stop"], env=env, capture_output=True,
                              text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr
        os.write(leader, b'print("first after stop")\r')
        assert "[Y/n]" in read_until(leader, "[Y/n]"), "no offer of a new kernel"
        os.write(leader, b"\r")
        read_until(leader, "]: ")
        os.write(leader, b'print("kept is " .. tostring(kept) .. " now")\r')
        seen = read_until(leader, "nil now")
        assert "kept is nil now" in seen, "the new kernel has a new session: " + seen
        os.write(leader, b"exit\r")
        proc.wait(timeout=60)
        assert proc.returncode == 0, seen
        status = subprocess.run([os.environ["LLMSPELL_BIN"], "kernel", "status"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0, "the new kernel is running"
    finally:
        _close(env, leader, proc)


def _interactive_lua(argv: list[str], env: dict) -> list[str]:
    """Runs a lua-style interactive loop in a pty: a line, then Up (history) and Enter, then a line
    edited with Left and Backspace, then Ctrl-D. Returns the screen."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env,
                            start_new_session=True)
    os.close(follower)
    try:
        seen = read_until(leader, "> ")
        os.write(leader, b"print(6*7)\r")
        seen += read_until(leader, "42")
        seen += read_until(leader, "> ", timeout=10)
        time.sleep(0.5)  # as a person would: the editor has drawn its prompt
        os.write(leader, b"\x1b[A\r")  # Up: the last line again
        seen += read_until(leader, "42", timeout=10)
        seen += read_until(leader, "> ", timeout=10)
        time.sleep(0.5)
        os.write(leader, b"print('ab9c')\x1b[D\x1b[D\x1b[D\x7f\r")  # Left x3, Backspace: print('abc')
        seen += read_until(leader, "abc\r\n", timeout=10)
        seen += read_until(leader, "> ", timeout=10)
        time.sleep(0.5)
        os.write(leader, b"\x04")
        seen += read_until(leader, "\n", timeout=10)
        assert proc.wait(timeout=60) == 0
        return _screen(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


def test_run_i_on_a_terminal_edits_lines_and_keeps_history_as_lua_does(tmp_path):
    env = dict(os.environ, LLMSPELL_HOME=str(tmp_path / "home"), TERM="xterm")
    ours = _interactive_lua([os.environ["LLMSPELL_BIN"], "run", "-i"], env)
    try:
        assert ours.count("42") == 2, ours
        assert "abc" in ours, ours
        lua = shutil.which("lua5.4")
        if lua:  # the stock interpreter (built with readline) on the same keys shows the same lines
            theirs = _interactive_lua([lua, "-i"], env)
            assert [x for x in ours if x and not x.startswith("Lua")] == \
                [x for x in theirs if x and not x.startswith("Lua")], (ours, theirs)
    finally:
        subprocess.run([os.environ["LLMSPELL_BIN"], "kernel", "stop", "--all"], env=env, capture_output=True)
