"""`llmspell dap`: a small scripted DAP client (Content-Length frames over the adapter's stdio) debugs a
script that requires a module. Every wait is for a message, with a generous deadline."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import LLMSPELL_BIN
from test_repl_pty import read_until

WAIT = 60.0


class DapClient:
    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen([LLMSPELL_BIN, "dap"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=cwd)
        self.seq = 0
        self.messages: queue.Queue = queue.Queue()
        self.pending: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    self.messages.put(None)
                    return
                line = line.strip()
                if not line:
                    break
                if line.startswith(b"Content-Length:"):
                    length = int(line.split(b":")[1])
            self.messages.put(json.loads(out.read(length)))

    def __enter__(self) -> DapClient:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _write(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def send(self, command: str, arguments: dict[str, Any] | None = None) -> int:
        self.seq += 1
        self._write({"seq": self.seq, "type": "request", "command": command, "arguments": arguments or {}})
        return self.seq

    def respond(self, request: dict[str, Any], success: bool, **fields: Any) -> None:
        """Answers one of the adapter's own requests (runInTerminal), as an editor does."""
        self.seq += 1
        self._write({"seq": self.seq, "type": "response", "request_seq": request["seq"],
                     "command": request["command"], "success": success, **fields})

    def _next(self, pred, what: str) -> dict[str, Any]:
        for i, m in enumerate(self.pending):
            if pred(m):
                return self.pending.pop(i)
        deadline = time.monotonic() + WAIT
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {what} within {WAIT} s; pending {self.pending!r}"
            try:
                m = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            assert m is not None, f"the adapter closed its output waiting for {what}: {self.proc.stderr.read()!r}"
            if pred(m):
                return m
            self.pending.append(m)

    def request(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        seq = self.send(command, arguments)
        r = self._next(lambda m: m["type"] == "response" and m["request_seq"] == seq, f"{command} response")
        assert r["success"], r
        return r.get("body", {})

    def event(self, name: str) -> dict[str, Any]:
        return self._next(lambda m: m["type"] == "event" and m["event"] == name, f"{name} event")["body"]

    def outputs(self) -> str:
        return "".join(m["body"]["output"] for m in self.pending
                       if m["type"] == "event" and m["event"] == "output")

    def top(self) -> dict[str, Any]:
        return self.request("stackTrace", {"threadId": 1})["stackFrames"][0]

    def locals(self) -> dict[str, str]:
        scopes = self.request("scopes", {"frameId": self.top()["id"]})["scopes"]
        ref = next(s["variablesReference"] for s in scopes if s["name"] == "Locals")
        return {v["name"]: v["value"] for v in self.request("variables", {"variablesReference": ref})["variables"]}


@pytest.fixture
def project(tmp_path):
    (tmp_path / "greet.lua").write_text(
        "local M = {}\nfunction M.hello(name)\n  local text = 'hello ' .. name\n  return text\nend\nreturn M\n")
    (tmp_path / "main.lua").write_text(
        "local greet = require('greet')\nlocal who = arg[1] or 'nobody'\nprint(greet.hello(who))\n"
        "os.execute('echo from a child')\nprint(os.getenv('DAP_TEST'))\nos.exit(3)\n")
    return tmp_path


def test_a_script_and_its_module_under_a_dap_client(project):
    with DapClient(project) as c:
        caps = c.request("initialize", {"adapterID": "llmspell", "linesStartAt1": True, "pathFormat": "path"})
        assert caps["supportsConfigurationDoneRequest"]
        c.event("initialized")
        main, module = project / "main.lua", project / "greet.lua"
        c.request("launch", {"program": str(main), "args": ["world"], "cwd": str(project),
                             "env": {"DAP_TEST": "from env", "LUA_PATH": str(project / "?.lua") + ";;"},
                             "stopOnEntry": True})
        c.request("setBreakpoints", {"source": {"path": str(main)}, "breakpoints": [{"line": 3}]})
        c.request("setBreakpoints", {"source": {"path": str(module)}, "breakpoints": [{"line": 4}]})
        c.request("configurationDone")
        assert c.event("stopped")["reason"] == "entry"
        assert c.top()["line"] == 1
        c.request("continue", {"threadId": 1})
        assert c.event("stopped")["reason"] == "breakpoint"
        frame = c.top()
        assert frame["source"]["path"] == str(main.resolve()) and frame["line"] == 3
        assert c.locals()["who"] == '"world"'
        c.request("continue", {"threadId": 1})
        assert c.event("stopped")["reason"] == "breakpoint"
        frame = c.top()
        assert frame["source"]["path"] == str(module.resolve()) and frame["line"] == 4
        assert c.request("evaluate", {"expression": "text:upper()", "frameId": frame["id"],
                                      "context": "repl"})["result"] == '"HELLO WORLD"'
        c.request("stepOut", {"threadId": 1})
        assert c.event("stopped")["reason"] == "step"
        assert c.top()["source"]["path"] == str(main.resolve())
        c.request("continue", {"threadId": 1})
        assert c.event("exited")["exitCode"] == 3
        c.event("terminated")
        text = c.outputs()
        assert "hello world\n" in text and "from a child\n" in text and "from env\n" in text
        c.request("disconnect")
        assert c.proc.wait(timeout=WAIT) == 0


def test_launch_without_a_program_is_an_error_response(tmp_path):
    with DapClient(tmp_path) as c:
        c.request("initialize", {"adapterID": "llmspell"})
        seq = c.send("launch", {})
        r = c._next(lambda m: m["type"] == "response" and m["request_seq"] == seq, "launch response")
        assert r["success"] is False and "program" in r["message"]
        c.request("disconnect")
        assert c.proc.wait(timeout=WAIT) == 0


def test_errors_caught_by_pcall_stop_only_with_the_raised_filter(tmp_path):
    script = tmp_path / "caught.lua"
    script.write_text("local function check(n)\n  if n > 2 then error('too big: ' .. n, 0) end\n  return n\nend\n"
                      "local ok, why = pcall(check, 5)\nprint(ok, why)\n")
    for filters, stops in [(["uncaught"], False), (["raised"], True)]:
        with DapClient(tmp_path) as c:
            caps = c.request("initialize", {"adapterID": "llmspell"})
            assert "raised" in [f["filter"] for f in caps["exceptionBreakpointFilters"]]
            c.request("launch", {"program": str(script)})
            c.request("setExceptionBreakpoints", {"filters": filters})
            c.request("configurationDone")
            if stops:
                body = c.event("stopped")
                assert body["reason"] == "exception" and "too big: 5" in body.get("text", ""), body
                assert c.top()["line"] == 2 and c.locals()["n"] == "5"
                c.request("continue", {"threadId": 1})
            assert c.event("exited")["exitCode"] == 0
            assert "false\ttoo big: 5\n" in c.outputs()
            assert not any(m["type"] == "event" and m["event"] == "stopped" for m in c.pending)
            c.request("disconnect")
            assert c.proc.wait(timeout=WAIT) == 0


def _own_terminal() -> None:
    """In the child, as a terminal emulator does: a session of its own whose terminal is the pty."""
    import fcntl
    import termios

    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_a_script_launched_in_the_integrated_terminal_reads_and_writes_it(tmp_path):
    import pty

    script = tmp_path / "ask.lua"
    script.write_text("io.write('Name? ') io.stdout:flush()\nlocal name = io.read()\nprint('hi ' .. name)\n"
                      "os.execute('echo child sees the terminal')\nprint('looping') while true do end\n")
    with DapClient(tmp_path) as c:
        c.request("initialize", {"adapterID": "llmspell", "supportsRunInTerminalRequest": True})
        c.request("launch", {"program": str(script), "console": "integratedTerminal"})
        c.request("configurationDone")
        ask = c._next(lambda m: m["type"] == "request" and m["command"] == "runInTerminal", "runInTerminal")
        assert ask["arguments"]["kind"] == "integrated"
        # What an editor does: run the command in a terminal of its own, and answer with its pid.
        leader, follower = pty.openpty()
        try:
            term = subprocess.Popen(ask["arguments"]["args"], cwd=ask["arguments"]["cwd"], stdin=follower,
                                    stdout=follower, stderr=follower, preexec_fn=_own_terminal)
            os.close(follower)
            c.respond(ask, True, body={"processId": term.pid})
            seen = read_until(leader, "Name? ", WAIT)
            os.write(leader, b"Ana\n")
            seen += read_until(leader, "looping", WAIT)
            os.write(leader, b"\x03")  # Ctrl-C in the terminal interrupts the script
            assert c.event("exited")["exitCode"] == 1
            assert term.wait(timeout=WAIT) == 0, "the terminal's command ends with the script"
            seen += read_until(leader, "Interrupted", 10)
        finally:
            os.close(leader)
        assert "hi Ana" in seen and "child sees the terminal" in seen and "Interrupted" in seen, seen
        assert "hi Ana" not in c.outputs(), "the output went to the terminal, not the debug console"
        c.request("disconnect")
        assert c.proc.wait(timeout=WAIT) == 0


def test_in_the_debug_console_the_script_and_its_children_read_no_stdin(tmp_path):
    script = tmp_path / "read.lua"
    script.write_text("print(io.read())\nos.execute('cat; echo cat done')\n")
    with DapClient(tmp_path) as c:
        c.request("initialize", {"adapterID": "llmspell"})
        c.request("launch", {"program": str(script)})
        c.request("configurationDone")
        assert c.event("exited")["exitCode"] == 0
        assert "nil\n" in c.outputs() and "cat done\n" in c.outputs()
        c.request("disconnect")  # the DAP stream was not read by `cat`: this is still understood
        assert c.proc.wait(timeout=WAIT) == 0


def test_a_terminal_the_client_cannot_open_falls_back_to_the_debug_console(tmp_path):
    script = tmp_path / "hello.lua"
    script.write_text("print('hello', io.read())\n")
    with DapClient(tmp_path) as c:
        c.request("initialize", {"adapterID": "llmspell", "supportsRunInTerminalRequest": True})
        c.request("launch", {"program": str(script), "console": "integratedTerminal"})
        c.request("configurationDone")
        ask = c._next(lambda m: m["type"] == "request" and m["command"] == "runInTerminal", "runInTerminal")
        c.respond(ask, False, message="no terminal here")
        assert c.event("exited")["exitCode"] == 0
        text = c.outputs()
        # The refusal is taken at its word (not waited out): the message says so.
        assert "could not run the terminal command; using the debug console" in text, text
        assert "hello\tnil\n" in text, text
        c.request("disconnect")
        assert c.proc.wait(timeout=WAIT) == 0
