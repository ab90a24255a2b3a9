"""`llmspell lsp` as editors see it: the LSP lifecycle, bad input, Lua's own syntax errors, documents
never opened, hostile documents, and the static features with no kernel anywhere.

The live session's names are in test_lsp_live.py, Neovim in test_lsp_nvim.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from lsp_client import LspClient, uri


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "ws").mkdir()
    return tmp_path / "ws"


@pytest.fixture
def server(root: Path):
    with LspClient() as c:
        c.initialize(root)
        yield c


def test_initialize_advertises_the_features_and_utf16_by_default(root):
    with LspClient() as c:
        caps = c.initialize(root)["capabilities"]
        assert caps["positionEncoding"] == "utf-16"
        assert caps["textDocumentSync"]["change"] == 2  # incremental
        assert set(caps["completionProvider"]["triggerCharacters"]) == {".", ":", '"', "'"}
        assert caps["signatureHelpProvider"]["triggerCharacters"] == ["(", ","]
        for p in ("hoverProvider", "definitionProvider", "referencesProvider", "renameProvider",
                  "documentSymbolProvider", "workspaceSymbolProvider"):
            assert caps[p], p
    with LspClient() as c:
        assert c.initialize(root, ["utf-8", "utf-16"])["capabilities"]["positionEncoding"] == "utf-8"


def test_shutdown_then_exit_is_0_and_exit_alone_is_1(root):
    with LspClient() as c:
        c.initialize(root)
        assert c.request("shutdown")["result"] is None
        after = c.request("textDocument/hover", {"textDocument": {"uri": "file:///x.lua"},
                                                 "position": {"line": 0, "character": 0}})
        assert after["error"]["code"] == -32600, "requests after shutdown are refused"
        c.notify("exit")
        assert c.proc.wait(30) == 0
    with LspClient() as c:
        c.initialize(root)
        c.notify("exit")
        assert c.proc.wait(30) == 1


def test_closing_stdin_ends_the_server(root):
    with LspClient() as c:
        c.initialize(root)
        c.proc.stdin.close()
        assert c.proc.wait(30) == 1


def test_malformed_json_gets_a_parse_error_and_the_server_goes_on(server):
    server.raw(b"Content-Length: 9\r\n\r\n{not json")
    parse_error = server.response(None)
    assert parse_error["error"]["code"] == -32700
    server.raw(b"Content-Length: 3\r\n\r\n[1]")
    assert server.response(None)["error"]["code"] == -32700
    server.raw(b"X-No-Length: 1\r\n\r\n")
    assert server.response(None)["error"]["code"] == -32700
    # Still serving, in order.
    assert server.request("no/suchMethod", {})["error"]["code"] == -32601
    u = server.open(Path("/nonexistent/a.lua"), "local x = 1\nreturn x\n")
    assert server.diagnostics_of(u) == []


def test_requests_before_initialize_are_refused(root):
    with LspClient() as c:
        assert c.request("textDocument/hover", {})["error"]["code"] == -32002
        c.initialize(root)


def luac_message(path: Path, text: str) -> str:
    """What Lua 5.4's compiler says of `text` (without the file and line)."""
    path.write_text(text)
    # Relative: Lua shortens long chunk names in messages.
    err = subprocess.run(["luac5.4", "-p", path.name], capture_output=True, text=True, cwd=path.parent)
    return err.stderr.strip().split(f"{path.name}:", 1)[1].split(": ", 1)[1]


def test_syntax_errors_carry_lua_54s_own_message_at_the_token(server, root):
    text = "local ok = 1\nlocal = 2\nreturn ok\n"
    path = root / "bad.lua"
    lua_message = luac_message(path, text)
    u = server.open(path, text)
    found = [d for d in server.diagnostics_of(u) if d["severity"] == 1]
    assert found, "a syntax error is reported"
    d = found[0]
    assert d["message"] == lua_message == "<name> expected near '='"
    assert d["range"]["start"] == {"line": 1, "character": 6}
    assert d["range"]["end"]["line"] == 1
    # Fixed: the error goes away on the next change.
    server.change(u, "local ok = 1\nlocal two = 2\nreturn ok + two\n", 2)
    assert [d for d in server.diagnostics_of(u) if d["severity"] == 1] == []


def test_unclosed_function_is_reported_at_the_end_as_lua_says(server, root):
    u = server.open(root / "open.lua", "local function f()\n  return 1\n")
    d = [d for d in server.diagnostics_of(u) if d["severity"] == 1][0]
    assert d["message"] == "'end' expected (to close 'function' at line 1) near <eof>"
    assert d["range"]["start"]["line"] == 2


def test_incremental_changes_with_utf16_columns(server, root):
    u = server.open(root / "inc.lua", "local s = '😀'\nlocal x = 1\nreturn s, x\n")
    assert server.diagnostics_of(u) == []
    # The emoji is 2 UTF-16 units (columns 11-12): column 13 is the closing quote.
    server.diagnostics.pop(u, None)
    server.notify("textDocument/didChange", {
        "textDocument": {"uri": u, "version": 2},
        "contentChanges": [
            {"range": {"start": {"line": 0, "character": 13}, "end": {"line": 0, "character": 14}},
             "text": " +"},
            {"range": {"start": {"line": 1, "character": 6}, "end": {"line": 1, "character": 7}},
             "text": "y"},
        ]})
    expected = luac_message(root / "expected.lua", "local s = '😀 +\nlocal y = 1\nreturn s, x\n")
    d = [d for d in server.diagnostics_of(u) if d["severity"] == 1]
    assert d and d[0]["message"] == expected, (d, expected)
    assert d[0]["range"]["start"]["line"] == 0


def test_documents_never_opened_are_read_from_disk_or_answered_empty(server, root):
    missing = server.at("hover", uri(root / "missing.lua"), 0, 0)
    assert missing is None
    assert server.at("documentSymbol", uri(root / "missing.lua"), 0, 0) == []
    completion = server.at("completion", uri(root / "missing.lua"), 0, 0)
    assert completion["items"] == []
    on_disk = root / "disk.lua"
    on_disk.write_text("local function helper(a) return a end\nreturn helper(1)\n")
    refs = server.at("references", uri(on_disk), 1, 8, context={"includeDeclaration": True})
    assert isinstance(refs, list)


@pytest.mark.timeout(300)
def test_hostile_documents_give_diagnostics_or_nothing_never_a_crash(server, root):
    cases = {
        "big.lua": "local t = {}\n" + "t[#t + 1] = 'some text that repeats'\n" * 280_000,
        "deep.lua": "x = " + "(" * 10_000 + "1" + ")" * 10_000 + "\n",
        "deep_tables.lua": "x = " + "{" * 10_000 + "}" * 10_000 + "\n",
        "garbage.lua": os.urandom(200_000).decode("latin-1"),
        "nul.lua": "\x1bLua\x54\x00\x19\x93\r\n\x1a\n" + "\x00" * 1000,
    }
    assert len(cases["big.lua"]) > 10_000_000
    for name, text in cases.items():
        u = server.open(root / name, text)
        diags = server.diagnostics_of(u, timeout=240)
        assert isinstance(diags, list), name
        # Still alive and answering.
        assert "result" in server.request("textDocument/documentSymbol", {"textDocument": {"uri": u}}, 240)
        server.notify("textDocument/didClose", {"textDocument": {"uri": u}})
    assert server.proc.poll() is None
    deep_text = "x = " + "(" * 10_000 + "1" + ")" * 10_000 + "\n"
    deep = server.open(root / "deep2.lua", deep_text)
    msg = [d["message"] for d in server.diagnostics_of(deep) if d["severity"] == 1]
    (root / "deep3.lua").write_text(deep_text)
    luac = subprocess.run(["luac5.4", "-p", "deep3.lua"], capture_output=True, text=True, cwd=root)
    assert msg and msg[0] == luac.stderr.split(": ", 1)[1].strip() == "C stack overflow", msg


def test_no_kernel_is_started_and_static_features_work(tmp_path, root):
    home = tmp_path / "home-never-made"
    with LspClient(env={"LLMSPELL_HOME": str(home)}) as c:
        c.initialize(root)
        u = c.open(root / "s.lua", "local function add(a, b) return a + b end\nreturn add(1, 2)\n")
        assert c.diagnostics_of(u) == []
        assert c.at("documentSymbol", u, 0, 0)
        time.sleep(1.5)  # let the live fetcher look for a kernel at least once
        c.call("shutdown")
        c.notify("exit")
        assert c.proc.wait(30) == 0
    assert not home.exists(), "the language server made a home (or started a kernel)"
