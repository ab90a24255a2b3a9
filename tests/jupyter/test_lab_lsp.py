"""JupyterLab + jupyterlab-lsp + jupyter-lsp in headless Chromium: `llmspell lsp`, registered by
`llmspell kernel install` (jupyter_server_config.d/llmspell-lsp.json), gives an llmspell notebook cell
a diagnostic and a completion. Screenshots go to target/lab-screens/lsp-*.png. (make test-lab)"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import LLMSPELL_BIN, TMP_ROOT
from test_lab import CHROMIUM, SCREENS, WAIT_MS, _expect, _free_port, _wait_idle

pytestmark = [pytest.mark.lab, pytest.mark.timeout(400), pytest.mark.no_skip]


def _lab_with_lsp(root: Path):
    """JupyterLab whose config path holds what `llmspell kernel install --prefix` wrote."""
    prefix = TMP_ROOT / "lsp-prefix"
    out = subprocess.run([LLMSPELL_BIN, "kernel", "install", "--prefix", str(prefix)],
                         capture_output=True, text=True, check=True)
    spec = prefix / "etc" / "jupyter" / "jupyter_server_config.d" / "llmspell-lsp.json"
    assert spec.is_file(), out.stdout
    assert json.loads(spec.read_text())["LanguageServerManager"]["language_servers"]["llmspell-lsp"]["argv"][1] == "lsp"
    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(prefix / "etc" / "jupyter"),
           "JUPYTER_PATH": f"{prefix / 'share' / 'jupyter'}{os.pathsep}{os.environ.get('JUPYTER_PATH', '')}"}
    log = open(TMP_ROOT / "jupyterlab-lsp.log", "w")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
           "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabApp.user_settings_dir={TMP_ROOT / 'lab-lsp-settings'}",
           f"--LabApp.workspaces_dir={TMP_ROOT / 'lab-lsp-workspaces'}"]
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start: {(TMP_ROOT / 'jupyterlab-lsp.log').read_text()[-3000:]}")
            time.sleep(0.3)
    return server, log, base, token


@pytest.fixture(scope="module")
def lsp_page():
    from playwright.sync_api import sync_playwright

    root = TMP_ROOT / "lab-lsp-root"
    root.mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "llmspell", "display_name": "Lua 5.4 (llmspell)", "language": "lua"}
    nb.metadata["language_info"] = {"name": "lua", "mimetype": "text/x-lua", "file_extension": ".lua"}
    nb.cells = [nbformat.v4.new_code_cell("")]
    # In a folder of its own: jupyter-lsp's copy of it is `.virtual_documents/notebooks/lsp.ipynb`,
    # and `require` must look beside the notebook (where its kernel runs), not in the server's root.
    (root / "notebooks").mkdir(exist_ok=True)
    nbformat.write(nb, str(root / "notebooks" / "lsp.ipynb"))
    # A module only the language server reads (a cell that was never run, a field in no cell).
    (root / "notebooks" / "helpers.lua").write_text("local M = {}\nfunction M.only_on_disk(x) return x end\nreturn M\n")
    # No news toast over the notebook (the browser has no internet), as test_lab.py.
    labconfig = Path(os.environ["JUPYTER_CONFIG_DIR"]) / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    settings = TMP_ROOT / "lab-lsp-settings" / "@jupyterlab" / "completer-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "manager.jupyterlab-settings").write_text(json.dumps({"providerTimeout": 20000}))
    server, log, base, token = _lab_with_lsp(root)
    SCREENS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(WAIT_MS)
            pg.goto(f"{base}/lab/tree/notebooks/lsp.ipynb?token={token}")
            pg.locator(".jp-Notebook .jp-Cell").first.wait_for()
            _wait_idle(pg)
            yield pg, base, token
            pg.screenshot(path=str(SCREENS / "lsp-zz-last.png"))
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_jupyter_lsp_knows_the_llmspell_server(lsp_page):
    _, base, token = lsp_page
    status = json.load(urllib.request.urlopen(f"{base}/lsp/status?token={token}", timeout=30))
    assert "llmspell-lsp" in status["specs"], status


def test_a_cell_gets_a_diagnostic(lsp_page):
    page, _, _ = lsp_page
    cell = page.locator(".jp-Notebook .jp-Cell").first
    cell.locator(".cm-content").click()
    page.keyboard.insert_text('local h = require("helpers")\nprint(undefined_global_x)\nprint(h.only_)')
    page.keyboard.press("ArrowLeft")  # the cursor after `h.only_`
    # The diagnostic: jupyterlab-lsp underlines the undefined global (CodeMirror's lint range).
    lint = cell.locator(".cm-lintRange", has_text="undefined_global_x")
    _expect()(lint.first).to_be_visible(timeout=WAIT_MS)
    page.screenshot(path=str(SCREENS / "lsp-01-diagnostic.png"))


def test_a_cell_completes_a_required_module_through_the_language_server(lsp_page):
    page, _, _ = lsp_page
    cell = page.locator(".jp-Notebook .jp-Cell").first
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.press("ArrowLeft")  # the cursor after `h.only_`, before the `)`
    # The completion: a function of a module on disk required by this unexecuted cell, which only
    # the language server knows (not the kernel, not JupyterLab's completion from the cell's words).
    deadline = time.monotonic() + WAIT_MS / 1000
    listing = page.locator(".jp-Completer-list:visible")
    while True:
        page.keyboard.press("Tab")
        try:
            listing.wait_for(timeout=5000)
            break
        except Exception:
            assert time.monotonic() < deadline, "Tab completed nothing"
    try:
        _expect()(listing).to_contain_text("only_on_disk", timeout=WAIT_MS)
    finally:
        page.screenshot(path=str(SCREENS / "lsp-02-completion.png"))
        # What the server was asked (LLMSPELL_LOG=debug shows each request) and what JupyterLab said.
        log = (TMP_ROOT / "jupyterlab-lsp.log").read_text(errors="replace").splitlines()
        sys.stderr.write("\n".join([l for l in log if "lsp" in l.lower()][-40:]) + "\n")
