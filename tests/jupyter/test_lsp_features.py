"""`llmspell lsp`'s static features through the scripted client: completion, hover, signature help,
definition (across `require`), references, rename as one WorkspaceEdit, document and workspace symbols,
undefined globals and globals defined by other workspace files, UTF-8 positions when offered."""

from __future__ import annotations

from pathlib import Path

import pytest

from lsp_client import LspClient, uri

MAIN = """local util = require("util")
local function area(width, height)
  return width * height
end
local total = area(2, 3)
print(util.shout("hi"), total)
print(shared_setting)
"""
UTIL = """local M = {}
function M.shout(s)
  return s:upper()
end
return M
"""


@pytest.fixture
def ws(tmp_path: Path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "util.lua").write_text(UTIL)
    (root / "config.lua").write_text("shared_setting = 42\n")
    with LspClient() as c:
        c.initialize(root)
        u = c.open(root / "main.lua", MAIN)
        yield c, u, root


def test_completion_of_locals_and_the_standard_library(ws):
    c, u, _ = ws
    c.change(u, MAIN + "ar\nstring.\n", 2)
    c.diagnostics_of(u)
    assert "area" in c.labels(u, 7, 2)
    assert {"format", "rep", "upper"} <= set(c.labels(u, 8, 7))


def test_completion_through_require(ws):
    c, u, _ = ws
    c.change(u, MAIN + "util.\n", 2)
    c.diagnostics_of(u)
    assert "shout" in c.labels(u, 7, 5)


def test_hover_and_signature_help(ws):
    c, u, _ = ws
    hover = c.at("hover", u, 4, 15)  # area(2, 3)
    assert hover and "width" in hover["contents"]["value"], hover
    sig = c.at("signatureHelp", u, 4, 21)  # after `area(2,`
    assert sig and "width" in sig["signatures"][0]["label"], sig
    assert sig["activeParameter"] == 1
    label = sig["signatures"][0]["label"]
    start, end = sig["signatures"][0]["parameters"][1]["label"]
    assert label[start:end] == "height"


def test_definition_across_require(ws):
    c, u, root = ws
    found = c.at("definition", u, 5, 12)  # util.shout
    assert found, found
    target = found[0]
    assert target["uri"] == uri(root / "util.lua")
    assert target["range"]["start"]["line"] == 1
    local = c.at("definition", u, 4, 15)  # area
    assert local[0]["uri"] == u and local[0]["range"]["start"]["line"] == 1


def test_references_and_rename_as_one_workspace_edit(ws):
    c, u, _ = ws
    refs = c.at("references", u, 2, 9, context={"includeDeclaration": True})  # width
    assert sorted(r["range"]["start"]["line"] for r in refs) == [1, 2]
    edit = c.at("rename", u, 1, 15, newName="surface")  # area
    edits = edit["changes"][u]
    assert len(edits) == 2 and all(e["newText"] == "surface" for e in edits)
    assert sorted(e["range"]["start"]["line"] for e in edits) == [1, 4]
    bad = c.request("textDocument/rename", {"textDocument": {"uri": u}, "position": {"line": 1, "character": 15},
                                            "newName": "end"})
    assert bad["error"]["code"] == -32602
    global_name = c.request("textDocument/rename", {"textDocument": {"uri": u},
                                                    "position": {"line": 6, "character": 8}, "newName": "x"})
    assert "error" in global_name or global_name["result"] is None


def test_document_and_workspace_symbols(ws):
    c, u, _ = ws
    names = [s["name"] for s in c.at("documentSymbol", u, 0, 0)]
    assert "area" in names
    found = c.call("workspace/symbol", {"query": "are"})
    assert any(s["name"] == "area" and s["location"]["uri"] == u for s in found)


def test_globals_of_other_workspace_files_are_not_undefined(ws):
    c, u, _ = ws
    # The workspace scan runs on its own thread: diagnostics are published again when it ends.
    deadline_diags = c.wait_for(
        lambda: c.diagnostics.get(u) is not None
        and not any("shared_setting" in d["message"] for d in c.diagnostics[u]) and [c.diagnostics[u]],
        why="shared_setting defined by config.lua")[0]
    assert not any(d["code"] == "W113" for d in deadline_diags), deadline_diags
    c.change(u, MAIN + "print(nowhere_defined)\n", 2)
    diags = c.diagnostics_of(u)
    w113 = [d for d in diags if d["code"] == "W113"]
    assert len(w113) == 1 and "nowhere_defined" in w113[0]["message"]
    assert w113[0]["range"]["start"] == {"line": 7, "character": 6}


def test_utf8_positions_when_the_client_offers_them(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    with LspClient() as c:
        assert c.initialize(root, ["utf-8"])["capabilities"]["positionEncoding"] == "utf-8"
        u = c.open(root / "e.lua", "local s = 'é' print(undefined_x)\n")
        w113 = [d for d in c.diagnostics_of(u) if d["code"] == "W113"]
        # `é` is 2 bytes: the name starts at byte 21 (character 20 in UTF-16).
        assert w113 and w113[0]["range"]["start"] == {"line": 0, "character": 21}
