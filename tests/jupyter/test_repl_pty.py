"""``llmspell repl`` on a real terminal (a pty): Tab completion shows its candidates."""

from __future__ import annotations

import os
import pty
import select
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
