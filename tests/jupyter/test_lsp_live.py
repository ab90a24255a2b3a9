"""The live session in the language server: the kernel's `llmspell_snapshot_request` (on control,
answered while a cell runs) and `llmspell lsp` completing, hovering and not warning about the names a
session defined, from a kernel it found (never started) — also one started after the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import LLMSPELL_BIN, execute, execute_ok, get_reply, send_control, send_shell
from lsp_client import LspClient


def snapshot(kc, since=None) -> dict:
    reply = get_reply(kc, send_control(kc, "llmspell_snapshot_request", {"since": since}), channel="control")
    assert reply["header"]["msg_type"] == "llmspell_snapshot_reply"
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]


def snapshot_until(kc, check, since=None, timeout: float = 30.0) -> dict:
    """Asks until the snapshot satisfies `check`: the first ask of an editor (or one right after a
    cell) may get the previous snapshot while the Lua thread takes the next one."""
    deadline = time.monotonic() + timeout
    while True:
        got = snapshot(kc, since)
        if check(got):
            return got
        assert time.monotonic() < deadline, f"the snapshot never became what was expected: {got}"
        time.sleep(0.1)


def test_snapshot_holds_the_sessions_globals_and_state_keys(kernel):
    kc = kernel.kc
    execute_ok(kc, 'cfg = {port = 8080, name = "svc", nested = {deep = {deeper = 1}}}\n'
                   'function greet(who, ...) return who end\nstate.set("mykey", 1)')
    got = snapshot_until(kc, lambda g: "cfg" in g.get("snapshot", {}).get("globals", {}))
    snap = got["snapshot"]
    assert snap["generation"] == got["generation"] >= 1
    cfg = snap["globals"]["cfg"]
    assert cfg["type_name"] == "table"
    assert (cfg["fields"]["port"]["type_name"], cfg["fields"]["port"]["summary"]) == ("number", "8080")
    assert cfg["fields"]["name"]["summary"] == '"svc"'
    assert "deep" in cfg["fields"]["nested"]["fields"]
    assert not cfg["fields"]["nested"]["fields"]["deep"].get("fields"), "depth is bounded at 2"
    assert snap["globals"]["greet"]["params"] == ["who", "..."]
    assert "mykey" in snap["state_keys"]
    for builtin in ("print", "string", "state", "help"):
        assert builtin not in snap["globals"], builtin
    # Nothing changed: not sent again.
    again = snapshot(kc, since=got["generation"])
    assert again == {"status": "ok", "generation": got["generation"], "unchanged": True}
    # A cell that changes nothing keeps the generation; one that does makes a new one.
    execute_ok(kc, "local unused = 1")
    time.sleep(0.5)
    assert snapshot(kc, since=got["generation"]).get("unchanged") is True
    execute_ok(kc, "cfg.port = 9090")
    newer = snapshot_until(kc, lambda g: not g.get("unchanged"), since=got["generation"])
    assert newer["generation"] > got["generation"]
    assert newer["snapshot"]["globals"]["cfg"]["fields"]["port"]["summary"] == "9090"


def test_snapshot_answers_while_a_cell_runs_and_makes_no_status_noise(kernel):
    kc = kernel.kc
    execute_ok(kc, "before = 1")
    busy = send_shell(kc, "execute_request", {"code": "while true do end", "stop_on_error": False})
    time.sleep(0.5)
    got = snapshot_until(kc, lambda g: "before" in g["snapshot"]["globals"])
    # Interrupt and let the cell end.
    get_reply(kc, send_control(kc, "interrupt_request"), channel="control")
    assert get_reply(kc, busy)["content"]["status"] == "error"
    assert execute(kc, "after = 2").status == "ok"
    snapshot_until(kc, lambda g: "after" in g["snapshot"]["globals"])


def test_snapshot_is_bounded(kernel):
    kc = kernel.kc
    execute_ok(kc, "for i = 1, 2000 do _G['g' .. i] = {} end\n"
                   "big = {}\nfor i = 1, 5000 do big['k' .. i] = string.rep('x', 1000) end")
    snap = snapshot_until(kc, lambda g: "big" in g["snapshot"]["globals"] or g["snapshot"]["truncated"])["snapshot"]
    assert snap["truncated"] is True
    assert len(snap["globals"]) <= 300
    assert len(json.dumps(snap)) <= 300 << 10


# ---------------------------------------------------------------------------------------------
# The language server following a kernel.
# ---------------------------------------------------------------------------------------------


def llmspell(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([LLMSPELL_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "LLMSPELL_HOME": str(home)})


def eventually(what, timeout: float = 60.0, why: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out: {why}"
        time.sleep(0.2)


@pytest.mark.timeout(240)
def test_the_editor_sees_the_sessions_names_from_a_kernel_started_later(id_kernels, tmp_path):
    home, kid = id_kernels.home, "lsplive"
    root = tmp_path / "ws"
    root.mkdir()
    text = 'print(cfg.port)\nlocal v = state.get("")\n'
    with LspClient(("--kernel", kid), env={"LLMSPELL_HOME": str(home)}) as c:
        c.initialize(root)
        u = c.open(root / "use.lua", text)
        before = c.diagnostics_of(u)
        assert any("cfg" in d["message"] for d in before), f"no kernel: cfg is undefined {before}"
        assert "port" not in c.labels(u, 0, 10)
        time.sleep(1)
        assert not (home / "kernels" / f"{kid}.json").exists(), "the server started a kernel"
        # A kernel started after the server, and a session that defines cfg.
        id_kernels.start(kid)
        r = llmspell(home, "--kernel", kid, "exec", 'cfg = {port = 8080}; state.set("mykey", 1)')
        assert r.returncode == 0, r.stderr
        # Diagnostics are published again when the snapshot changes: cfg is no longer undefined.
        eventually(lambda: u in c.diagnostics and not any("cfg" in d["message"] for d in c.diagnostics[u]),
                   why="cfg no longer undefined once the session has it")
        eventually(lambda: "port" in c.labels(u, 0, 10), why="cfg.port from the live session")
        hover = c.at("hover", u, 0, 7)
        assert hover and "table" in hover["contents"]["value"], hover
        assert "mykey" in c.labels(u, 1, 21)
        # A cell that runs for minutes: completion still answers, from what the session last knew.
        busy = subprocess.Popen([LLMSPELL_BIN, "--kernel", kid, "exec", "while true do end"],
                                env={**os.environ, "LLMSPELL_HOME": str(home)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.5)
            assert "port" in c.labels(u, 0, 10)
            assert "port" in c.labels(u, 0, 10)
        finally:
            llmspell(home, "kernel", "interrupt", kid)
            busy.wait(60)
        c.call("shutdown")
        c.notify("exit")
        assert c.proc.wait(30) == 0
