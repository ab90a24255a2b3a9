"""The Jupyter debugger (debug_request on control, debug_event on iopub), driven with jupyter_client the
way JupyterLab's debugger panel drives it.

No test asserts a timing: every wait is for a message, with a generous deadline.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from conftest import KERNELSPEC_DIR, collect_iopub, get_reply, send_control

WAIT = 60.0


def murmur2(data: bytes, seed: int) -> int:
    """MurmurHash2, 32-bit (the x86 variant), as JupyterLab names cells: written here independently."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (seed ^ len(data)) & mask
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    return h ^ (h >> 15)


def test_murmur2_agrees_with_ipykernels_reference():
    compiler = pytest.importorskip("ipykernel.compiler")
    for text in ["", "a", "ab", "abc", "abcd", "for i = 1, 3 do\n  print(i)\nend", "héllo wörld ✓"]:
        for seed in [0, 1, 0xC70F6907, 0x4C756121]:
            assert murmur2(text.encode(), seed) == compiler.murmur2_x86(text, seed), (text, seed)


class Dap:
    """A DAP client over the kernel's control channel (requests) and iopub (events)."""

    def __init__(self, kc) -> None:
        self.kc = kc
        self.seq = 0
        self.events: list[dict[str, Any]] = []  # debug events read, not yet consumed
        self.iopub: list[dict[str, Any]] = []  # every other iopub message read

    def request(self, command: str, arguments: dict[str, Any] | None = None, ok: bool = True) -> dict:
        self.seq += 1
        content = {"seq": self.seq, "type": "request", "command": command, "arguments": arguments or {}}
        msg_id = send_control(self.kc, "debug_request", content)
        reply = get_reply(self.kc, msg_id, WAIT, "control")
        assert reply["msg_type"] == "debug_reply"
        response = reply["content"]
        assert response["type"] == "response" and response["command"] == command
        assert response["request_seq"] == self.seq
        if ok:
            assert response["success"], f"{command} failed: {response}"
        return response

    def body(self, command: str, arguments: dict[str, Any] | None = None) -> dict:
        return self.request(command, arguments)["body"]

    def _read(self, timeout: float) -> None:
        msg = self.kc.get_iopub_msg(timeout=timeout)
        if msg["msg_type"] == "debug_event":
            self.events.append(msg["content"])
        else:
            self.iopub.append(msg)

    def event(self, name: str, timeout: float = WAIT) -> dict:
        """The first unconsumed debug event called name (events before it are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name:
                    del self.events[: i + 1]
                    return e
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {name!r} debug event within {timeout:g} s; got {self.events!r}")
            try:
                self._read(remaining)
            except Empty:
                continue

    def stopped(self, reason: str | None = None) -> dict:
        e = self.event("stopped")
        if reason is not None:
            assert e["body"]["reason"] == reason, e
        assert e["body"]["threadId"] == 1
        return e["body"]

    def top_frame(self) -> dict:
        frames = self.body("stackTrace", {"threadId": 1})["stackFrames"]
        assert frames, "no frames while stopped"
        return frames[0]

    def scope_refs(self, frame_id: int) -> dict[str, int]:
        scopes = self.body("scopes", {"frameId": frame_id})["scopes"]
        return {s["name"]: s["variablesReference"] for s in scopes}

    def variables(self, ref: int, **paging: Any) -> dict[str, dict]:
        vs = self.body("variables", {"variablesReference": ref, **paging})["variables"]
        return {v["name"]: v for v in vs}

    def locals(self) -> dict[str, str]:
        frame = self.top_frame()
        return {k: v["value"] for k, v in self.variables(self.scope_refs(frame["id"])["Locals"]).items()}

    def start(self) -> None:
        """What JupyterLab does when its debugger is switched on."""
        self.body("debugInfo")
        self.request("initialize", {
            "clientID": "jupyterlab", "clientName": "JupyterLab", "adapterID": "llmspell",
            "pathFormat": "path", "linesStartAt1": True, "columnsStartAt1": True,
            "supportsVariableType": True, "supportsVariablePaging": True,
            "supportsRunInTerminalRequest": True, "locale": "en",
        })
        self.event("initialized")
        self.request("attach")

    def breakpoints(self, code: str, lines: list[int], **extra: Any) -> str:
        path = self.body("dumpCell", {"code": code})["sourcePath"]
        bps = [{"line": n, **extra} for n in lines]
        got = self.body("setBreakpoints", {"source": {"path": path}, "breakpoints": bps,
                                           "sourceModified": False})
        assert [b["verified"] for b in got["breakpoints"]] == [True] * len(lines)
        return path


def execute_reply(kc, msg_id: str) -> dict:
    return get_reply(kc, msg_id, WAIT)["content"]


@pytest.fixture
def dap(kernel):
    d = Dap(kernel.kc)
    d.start()
    d.request("configurationDone")
    return d


LOOP = "local total = 0\nfor i = 1, 3 do\n  total = total + i\n  local square = i * i\nend\nreturn total"


def test_the_sequence_jupyterlab_uses(kernel):
    kc = kernel.kc
    spec = json.loads((KERNELSPEC_DIR / "kernel.json").read_text())
    assert spec["metadata"]["debugger"] is True
    info = get_reply(kc, kc.kernel_info(), WAIT)["content"]
    assert "debugger" in info["supported_features"] and info["debugger"] is True

    d = Dap(kc)
    before = d.body("debugInfo")  # before initialize, as JupyterLab asks first
    assert before["isStarted"] is False and before["hashMethod"] == "Murmur2"
    for key in ["hashSeed", "tmpFilePrefix", "tmpFileSuffix", "breakpoints", "stoppedThreads",
                "richRendering", "exceptionPaths", "copyToGlobals"]:
        assert key in before, key
    d.start()

    path = d.body("dumpCell", {"code": LOOP})["sourcePath"]
    expected = before["tmpFilePrefix"] + str(murmur2(LOOP.encode(), before["hashSeed"])) + before["tmpFileSuffix"]
    assert path == expected
    assert Path(path).read_text() == LOOP
    d.body("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 3}, {"line": 4}],
                              "sourceModified": False})
    d.request("configurationDone")
    assert d.body("debugInfo")["breakpoints"] == [{"source": path, "breakpoints": [{"line": 3}, {"line": 4}]}]

    run = kc.execute(LOOP)
    d.stopped("breakpoint")
    frame = d.top_frame()
    assert frame["source"]["path"] == path and frame["line"] == 3
    refs = d.scope_refs(frame["id"])
    assert "Locals" in refs and "Globals" in refs
    values = d.locals()
    assert values["i"] == "1" and values["total"] == "0"
    # Answered while stopped, as JupyterLab asks.
    assert "variables" in d.body("inspectVariables")
    info = d.body("debugInfo")
    assert info["isStarted"] is True and info["stoppedThreads"] == [1]

    d.request("continue", {"threadId": 1})
    d.event("continued")
    d.stopped("breakpoint")
    frame = d.top_frame()
    assert frame["line"] == 4
    values = d.locals()
    assert values["i"] == "1" and values["total"] == "1"

    d.request("next", {"threadId": 1})
    d.stopped("step")
    assert d.top_frame()["line"] != 4
    assert d.body("source", {"source": {"path": path}})["content"] == LOOP

    d.request("disconnect", {"restart": False, "terminateDebuggee": False})
    reply = execute_reply(kc, run)
    assert reply["status"] == "ok", reply
    # The same cell runs through now: no stop, its value is the sum.
    again = kc.execute(LOOP)
    assert execute_reply(kc, again)["status"] == "ok"
    time.sleep(0)  # nothing to wait for: any stopped event would have come before the reply
    try:
        while True:
            d._read(0.2)
    except Empty:
        pass
    assert not [e for e in d.events if e["event"] == "stopped"]


def test_conditional_breakpoint_hit_count_and_logpoint(dap, kernel):
    kc = kernel.kc
    code = "local seen = {}\nfor i = 1, 10 do\n  seen[#seen + 1] = i\nend\nreturn #seen"
    path = dap.body("dumpCell", {"code": code})["sourcePath"]
    dap.body("setBreakpoints", {"source": {"path": path}, "breakpoints": [
        {"line": 3, "condition": "i % 4 == 0"},
    ]})
    run = kc.execute(code)
    dap.stopped("breakpoint")
    assert dap.locals()["i"] == "4"
    # Hit counts and log points replace the breakpoint while stopped.
    dap.body("setBreakpoints", {"source": {"path": path}, "breakpoints": [
        {"line": 3, "hitCondition": "3"},
    ]})
    dap.request("continue", {"threadId": 1})
    dap.stopped("breakpoint")
    assert dap.locals()["i"] == "7"
    dap.body("setBreakpoints", {"source": {"path": path}, "breakpoints": [
        {"line": 3, "logMessage": "i is {i}"},
    ]})
    dap.request("continue", {"threadId": 1})
    assert execute_reply(kc, run)["status"] == "ok"
    outputs = []
    while len(outputs) < 3:
        outputs.append(dap.event("output")["body"]["output"])
    assert outputs == ["i is 8\n", "i is 9\n", "i is 10\n"]


def test_set_variable_evaluate_and_nested_tables(dap, kernel):
    kc = kernel.kc
    code = ("local t = {name = 'x', list = {}}\nfor n = 1, 250 do t.list[n] = n end\n"
            "local answer = 1\nresult_of_cell = answer + #t.list")
    path = dap.body("dumpCell", {"code": code})["sourcePath"]
    dap.body("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 4}]})
    run = kc.execute(code)
    dap.stopped("breakpoint")
    frame = dap.top_frame()
    refs = dap.scope_refs(frame["id"])
    local_vars = dap.variables(refs["Locals"])
    t = local_vars["t"]
    assert t["variablesReference"] > 0
    inner = dap.variables(t["variablesReference"])
    lst = inner["list"]
    assert lst["indexedVariables"] == 250
    page = dap.body("variables", {"variablesReference": lst["variablesReference"], "filter": "indexed",
                                  "start": 100, "count": 5})["variables"]
    assert [v["value"] for v in page] == ["101", "102", "103", "104", "105"]
    evaluated = dap.body("evaluate", {"expression": "answer + t.list[2]", "frameId": frame["id"],
                                      "context": "repl"})
    assert evaluated["result"] == "3"
    changed = dap.body("setVariable", {"variablesReference": refs["Locals"], "name": "answer", "value": "41"})
    assert changed["value"] == "41"
    dap.request("continue", {"threadId": 1})
    assert execute_reply(kc, run)["status"] == "ok"
    # The changed local reached the program; inspectVariables and richInspectVariables see the global.
    names = {v["name"]: v for v in dap.body("inspectVariables")["variables"]}
    assert names["result_of_cell"]["value"] == "291"
    rich = dap.body("richInspectVariables", {"variableName": "result_of_cell"})
    assert rich["data"]["text/plain"] == "291"


def test_break_on_uncaught_error(dap, kernel):
    kc = kernel.kc
    dap.body("setExceptionBreakpoints", {"filters": ["uncaught"]})
    code = "local function fail(x)\n  local reason = 'bad ' .. x\n  error(reason)\nend\nfail('input')"
    path = dap.body("dumpCell", {"code": code})["sourcePath"]
    run = kc.execute(code)
    body = dap.stopped("exception")
    assert "bad input" in body.get("text", "")
    frame = dap.top_frame()
    assert frame["source"]["path"] == path and frame["line"] == 3
    assert dap.locals()["reason"] == '"bad input"'
    dap.request("continue", {"threadId": 1})
    reply = execute_reply(kc, run)
    assert reply["status"] == "error" and "bad input" in reply["evalue"]


def test_break_on_errors_caught_by_pcall_and_xpcall_only_with_the_raised_filter(dap, kernel):
    kc = kernel.kc
    filters = {f["filter"] for f in dap.body("initialize", {"adapterID": "llmspell"})["exceptionBreakpointFilters"]}
    assert {"uncaught", "raised"} <= filters
    code = ("local function fail(x)\n  local reason = 'bad ' .. x\n  error(reason, 0)\nend\n"
            "local ok, e = pcall(fail, 'input')\n"
            "local ok2, e2 = xpcall(fail, function(m) return 'handled: ' .. m end, 'again')\n"
            "seen = table.concat({tostring(ok), e, tostring(ok2), e2}, '|')")

    def seen() -> str:
        msgs = collect_iopub(kc, kc.execute("io.write(seen)"), WAIT)
        return "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream")

    path = dap.body("dumpCell", {"code": code})["sourcePath"]
    # Uncaught only: errors that pcall and xpcall catch do not stop.
    dap.body("setExceptionBreakpoints", {"filters": ["uncaught"]})
    assert execute_reply(kc, kc.execute(code))["status"] == "ok"
    assert seen() == "false|bad input|false|handled: bad again"
    # Raised: each stops where it is raised, with its locals; then pcall and xpcall return as always.
    dap.body("setExceptionBreakpoints", {"filters": ["raised"]})
    run = kc.execute(code)
    for arg in ["input", "again"]:
        body = dap.stopped("exception")
        assert f"bad {arg}" in body.get("text", ""), body
        frame = dap.top_frame()
        assert frame["source"]["path"] == path and frame["line"] == 3
        assert dap.locals()["reason"] == f'"bad {arg}"'
        dap.request("continue", {"threadId": 1})
    assert execute_reply(kc, run)["status"] == "ok"
    assert seen() == "false|bad input|false|handled: bad again"
    # Coroutines still yield across them.
    across = ("local co = coroutine.wrap(function()\n"
              "  local a, b = pcall(function() return coroutine.yield(1) + 1 end)\n"
              "  local c, d = xpcall(function() return coroutine.yield(2) * 10 end, print)\n"
              "  return tostring(a) .. b .. tostring(c) .. d\nend)\n"
              "seen = co() .. '|' .. co(5) .. '|' .. co(7)")
    assert execute_reply(kc, kc.execute(across))["status"] == "ok"
    assert seen() == "1|2|true6true70"
    dap.body("setExceptionBreakpoints", {"filters": []})


def test_breakpoint_in_a_required_module_and_step_in_and_out(dap, kernel, tmp_path):
    kc = kernel.kc
    module = tmp_path / "mathx.lua"
    module.write_text("local M = {}\nfunction M.double(x)\n  local y = x * 2\n  return y\nend\nreturn M\n")
    dap.body("setBreakpoints", {"source": {"path": str(module)}, "breakpoints": [{"line": 3}]})
    code = (f"package.path = {json.dumps(str(tmp_path) + '/?.lua')} .. ';' .. package.path\n"
            "local m = require('mathx')\nlocal a = m.double(4)\nlocal b = a + 1\nreturn b")
    run = kc.execute(code)
    dap.stopped("breakpoint")
    frame = dap.top_frame()
    assert frame["source"]["path"] == str(module.resolve()) and frame["line"] == 3
    assert dap.locals()["x"] == "4"
    dap.request("stepOut", {"threadId": 1})
    dap.stopped("step")
    frame = dap.top_frame()
    assert frame["line"] in (3, 4) and frame["source"]["path"] != str(module.resolve())
    dap.request("continue", {"threadId": 1})
    assert execute_reply(kc, run)["status"] == "ok"


def test_stepping_into_and_through_a_coroutine(dap, kernel):
    kc = kernel.kc
    code = ("local co = coroutine.create(function(a)\n  local b = a + 1\n  coroutine.yield(b)\n"
            "  return b * 10\nend)\nlocal ok, first = coroutine.resume(co, 1)\nlocal ok2, second = coroutine.resume(co)\n"
            "return first, second")
    path = dap.body("dumpCell", {"code": code})["sourcePath"]
    dap.body("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 6}]})
    run = kc.execute(code)
    dap.stopped("breakpoint")
    dap.request("stepIn", {"threadId": 1})
    dap.stopped("step")
    frame = dap.top_frame()
    assert frame["line"] == 2
    assert dap.locals()["a"] == "1"
    # The stack of a stopped coroutine goes on with the code that resumed it.
    frames = dap.body("stackTrace", {"threadId": 1})["stackFrames"]
    assert any(f.get("source", {}).get("path") == path and f["line"] == 6 for f in frames[1:])
    dap.request("next", {"threadId": 1})
    dap.stopped("step")
    assert dap.top_frame()["line"] == 3
    # Stepping over the yield leaves the coroutine: the step ends in the code that resumed it.
    dap.request("next", {"threadId": 1})
    dap.stopped("step")
    frame = dap.top_frame()
    assert frame["source"]["path"] == path and frame["line"] == 7, frame
    assert dap.locals()["first"] == "2"
    # Stepping into the resume goes back into the coroutine, after its yield.
    dap.request("stepIn", {"threadId": 1})
    dap.stopped("step")
    assert dap.top_frame()["line"] == 4
    dap.request("continue", {"threadId": 1})
    reply = execute_reply(kc, run)
    assert reply["status"] == "ok"


def test_interrupt_and_pause_while_attached(dap, kernel):
    kc = kernel.kc
    code = "local n = 0\nwhile true do\n  n = n + 1\nend"
    path = dap.body("dumpCell", {"code": code})["sourcePath"]
    run = kc.execute(code)
    # Pause stops the running loop; then an interrupt ends it while stopped.
    deadline = time.monotonic() + WAIT
    while True:
        dap.request("pause", {"threadId": 1})
        try:
            dap.event("stopped", timeout=1.0)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "pause never stopped the loop"
    frame = dap.top_frame()
    assert frame["source"]["path"] == path and frame["line"] in (1, 2, 3)
    msg_id = send_control(kc, "interrupt_request", {})
    get_reply(kc, msg_id, WAIT, "control")
    reply = execute_reply(kc, run)
    assert reply["status"] == "error" and "nterrupt" in json.dumps(reply), reply
    # With a breakpoint set the interrupt still reaches running code.
    dap.body("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 1}]})
    dap.body("setBreakpoints", {"source": {"path": path}, "breakpoints": []})
    other = dap.body("dumpCell", {"code": "x_never = 1"})["sourcePath"]
    dap.body("setBreakpoints", {"source": {"path": other}, "breakpoints": [{"line": 1}]})
    run = kc.execute(code)
    try:
        dap.event("stopped", timeout=1.0)
        raise AssertionError("stopped without a breakpoint in the running code")
    except AssertionError as e:
        if "stopped without" in str(e):
            raise
    # Interrupt until the cell has ended (an interrupt that arrives before the cell starts is stale
    # and dropped by design).
    deadline = time.monotonic() + WAIT
    while True:
        msg_id = send_control(kc, "interrupt_request", {})
        get_reply(kc, msg_id, WAIT, "control")
        try:
            reply = get_reply(kc, run, 2.0)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the interrupt never reached the loop"
    assert reply["content"]["status"] == "error"


def test_bad_debug_requests_get_error_responses(dap):
    bad = dap.request("stackTrace", {"threadId": 1}, ok=False)
    assert bad["success"] is False and bad["message"]
    unknown = dap.request("noSuchCommand", ok=False)
    assert unknown["success"] is False and "noSuchCommand" in unknown["message"]
    assert dap.request("evaluate", {"expression": "1 +", "context": "repl"}, ok=False)["success"] is False
    assert dap.body("evaluate", {"expression": "1 + 2", "context": "repl"})["result"] == "3"
    modules = dap.body("modules")
    assert "string" in [m["name"] for m in modules["modules"]] and modules["totalModules"] >= 1


# ---------------------------------------------------------------------------------------------
# The protocol conformance suite again, with a debugger attached and a breakpoint that is never hit
# (so every cell runs with the debugger's call/return hook on).
# ---------------------------------------------------------------------------------------------

import test_conformance as conformance  # noqa: E402  (a module, so its classes are not collected twice)


class LlmspellKernelTestsWithDebugger(conformance.LlmspellKernelTests):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        d = Dap(cls.kc)
        d.start()
        path = d.body("dumpCell", {"code": "never_run = true"})["sourcePath"]
        d.body("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 1}]})
        d.body("setExceptionBreakpoints", {"filters": []})
        d.request("configurationDone")
        try:
            while True:
                d._read(0.5)
        except Empty:
            pass


def test_shutdown_while_stopped_ends_the_kernel(dap, kernel):
    kc = kernel.kc
    code = "local x = 1\nx = x + 1"
    path = dap.body("dumpCell", {"code": code})["sourcePath"]
    dap.body("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 2}]})
    kc.execute(code)
    dap.stopped("breakpoint")
    msg_id = send_control(kc, "shutdown_request", {"restart": False})
    assert get_reply(kc, msg_id, WAIT, "control")["content"]["status"] == "ok"
    deadline = time.monotonic() + WAIT
    while kernel.km.is_alive():
        assert time.monotonic() < deadline, "the kernel did not exit while stopped in the debugger"
        time.sleep(0.1)


def test_a_debug_request_on_shell_gets_an_error_reply(kernel):
    kc = kernel.kc
    msg = kc.session.msg("debug_request", {"seq": 1, "type": "request", "command": "debugInfo", "arguments": {}})
    kc.shell_channel.send(msg)
    reply = get_reply(kc, msg["header"]["msg_id"], WAIT)
    assert reply["content"]["status"] == "error"


def test_removing_the_last_breakpoint_while_stopped_lets_the_cell_finish(dap, kernel):
    # What JupyterLab does when the user clicks a breakpoint away in the gutter, then Continue.
    kc = kernel.kc
    code = "local total = 0\nfor i = 1, 3 do\n  total = total + i * 10\nend\nreturn total"
    path = dap.body("dumpCell", {"code": code})["sourcePath"]
    dap.body("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 3}]})
    run = kc.execute(code)
    dap.stopped("breakpoint")
    assert dap.locals()["i"] == "1"
    dap.body("setBreakpoints", {"source": {"path": path}, "breakpoints": []})
    dap.request("continue", {"threadId": 1})
    assert execute_reply(kc, run)["status"] == "ok"


def test_runs_are_unaffected_by_a_debugger_attached_to_the_session(dap, kernel):
    # `llmspell run` through this kernel's zygote while the session has a debugger attached and a
    # breakpoint set: a run is its own process and never stops, its output and exit code are lua's.
    import subprocess

    dap.breakpoints(LOOP, [3])
    bin_ = os.environ["LLMSPELL_BIN"]
    cmd = [bin_, "--connect", kernel.connection_file, "run", "-e",
           "local t = 0 for i = 1, 3 do t = t + i end print('run total', t) os.exit(3)"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (3, "run total\t6\n"), done.stderr
    # The session still stops at its breakpoint afterwards.
    run = kernel.kc.execute(LOOP)
    dap.stopped("breakpoint")
    dap.body("setBreakpoints", {"source": {"path": dap.body("dumpCell", {"code": LOOP})["sourcePath"]},
                                "breakpoints": []})
    dap.request("continue", {"threadId": 1})
    assert execute_reply(kernel.kc, run)["status"] == "ok"
