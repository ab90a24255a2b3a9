"""Neovim 0.7.2 (Debian's `nvim`, headless) as the editor: `vim.lsp.start_client` starts
`llmspell lsp`, the buffer attaches, and we read what Neovim itself shows — `vim.diagnostic.get`
and a completion through `vim.lsp.buf_request_sync`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lsp_client import LLMSPELL_BIN

pytestmark = pytest.mark.skipif(shutil.which("nvim") is None, reason="nvim is not installed")

SCRIPT = r"""
local out = {}
local id = vim.lsp.start_client({ cmd = { os.getenv("LLMSPELL_BIN"), "lsp" },
                                  root_dir = vim.fn.getcwd(), name = "llmspell" })
vim.cmd("edit main.lua")
vim.lsp.buf_attach_client(0, id)
vim.wait(30000, function() return #vim.diagnostic.get(0) >= 1 end, 50)
out.diagnostics = {}
for _, d in ipairs(vim.diagnostic.get(0)) do
  table.insert(out.diagnostics, { lnum = d.lnum, col = d.col, message = d.message,
                                  severity = d.severity, code = d.code })
end
local function complete(line, character)
  local labels = {}
  local res = vim.lsp.buf_request_sync(0, "textDocument/completion",
    { textDocument = { uri = vim.uri_from_bufnr(0) }, position = { line = line, character = character } }, 30000)
  for _, r in pairs(res or {}) do
    for _, it in ipairs(r.result and (r.result.items or r.result) or {}) do table.insert(labels, it.label) end
  end
  return labels
end
out.string_dot = complete(3, 18)
out.require_field = complete(5, 16)
local f = io.open("result.json", "w")
f:write(vim.fn.json_encode(out))
f:close()
vim.lsp.stop_client(id)
vim.cmd("qa!")
"""

MAIN = """local used = 1
print(used)
print(undefined_thing)
local s = string.f
local util = require("util")
local u = util.s
return s, u
"""


@pytest.mark.timeout(120)
def test_neovim_shows_diagnostics_and_completes(tmp_path: Path):
    (tmp_path / "main.lua").write_text(MAIN)
    (tmp_path / "util.lua").write_text("local M = {}\nfunction M.shout(s) return s:upper() end\nreturn M\n")
    (tmp_path / "test.lua").write_text(SCRIPT)
    env = {"LLMSPELL_BIN": LLMSPELL_BIN, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "LLMSPELL_HOME": str(tmp_path / "home")}
    r = subprocess.run(["nvim", "--headless", "--clean", "-c", "luafile test.lua"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=100)
    assert (tmp_path / "result.json").exists(), f"nvim wrote nothing: {r.stdout} {r.stderr}"
    out = json.loads((tmp_path / "result.json").read_text())
    by_line = {d["lnum"]: d for d in out["diagnostics"]}
    assert "undefined_thing" in by_line[2]["message"], out["diagnostics"]
    assert by_line[2]["col"] == 6
    assert 0 not in by_line and 1 not in by_line, "a used local is not reported"
    assert "format" in out["string_dot"], out["string_dot"]
    assert "shout" in out["require_field"], out["require_field"]
    assert not (tmp_path / "home").exists(), "the language server made a home (or started a kernel)"
