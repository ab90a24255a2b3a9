"""JupyterLab in a real browser (headless Chromium driven by Playwright): what a user does with the
llmspell kernel in a notebook. Run by `make test-lab` (marker `lab`); screenshots of each step go to
target/lab-screens/. Needs Debian's chromium (`.ci/run` installs it) and the venv's jupyterlab and
playwright (tests/requirements.txt); Playwright drives the system chromium, it downloads no browser.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import REPO, TMP_ROOT

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300), pytest.mark.no_skip]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENS = REPO / "target" / "lab-screens"
WAIT_MS = 90_000  # generous: a loaded 2-core machine runs JupyterLab, Chromium and the kernel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab():
    """A JupyterLab server on 127.0.0.1 with a notebook on the llmspell kernel in its root."""
    root = TMP_ROOT / "lab-root"
    root.mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "llmspell", "display_name": "Lua 5.4 (llmspell)", "language": "lua"}
    nb.cells = [nbformat.v4.new_code_cell("")]
    nbformat.write(nb, str(root / "lua.ipynb"))
    # No news toast over the notebook, no update check: the browser has no internet.
    labconfig = Path(os.environ["JUPYTER_CONFIG_DIR"]) / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    # JupyterLab drops a completion provider's answer after 1 s by default; a loaded CI machine with a
    # debug build can take longer, as a user on a busy machine would wait.
    completer = TMP_ROOT / "lab-settings" / "@jupyterlab" / "completer-extension"
    completer.mkdir(parents=True, exist_ok=True)
    (completer / "manager.jupyterlab-settings").write_text(json.dumps({"providerTimeout": 20000}))
    token, port = secrets.token_hex(16), _free_port()
    log = open(TMP_ROOT / "jupyterlab.log", "w")
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
        "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.user_settings_dir={TMP_ROOT / 'lab-settings'}",
        f"--LabApp.workspaces_dir={TMP_ROOT / 'lab-workspaces'}",
    ]
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start: {(TMP_ROOT / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.3)
    yield base, token
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("chromium is not installed (apt-get install chromium): make test-lab needs it")
    base, token = lab
    SCREENS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(WAIT_MS)
        pg.goto(f"{base}/lab/tree/lua.ipynb?token={token}")
        pg.locator(".jp-Notebook .jp-Cell").first.wait_for()
        # The kernel is up when the status bar names it and says it is idle (a cell run before the
        # notebook has its kernel session does not run at all).
        _wait_idle(pg)
        yield pg
        pg.screenshot(path=str(SCREENS / "zz-last.png"))
        browser.close()


def _cells(page):
    return page.locator(".jp-Notebook .jp-Cell")


def run_cell(page, code: str):
    """Types `code` into the last cell and runs it (Shift+Enter adds the next cell); returns the cell."""
    cells = _cells(page)
    cell = cells.nth(cells.count() - 1)
    cell.locator(".cm-content").click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    return cell


def _expect():
    from playwright.sync_api import expect

    return expect


def test_a_cell_runs_and_prints(page):
    cell = run_cell(page, 'print("hello from lua " .. 6 * 7)')
    _expect()(cell.locator(".jp-OutputArea")).to_contain_text("hello from lua 42", timeout=WAIT_MS)
    _expect()(cell.locator(".jp-InputPrompt")).to_contain_text("[1]", timeout=WAIT_MS)
    page.screenshot(path=str(SCREENS / "01-print.png"))


def test_rich_output_and_update_display(page):
    cell = run_cell(page, 'h = display(display.html("<b id=rich-first>first</b>"))\nh:update(display.html("<i id=rich-updated>updated</i>"))')
    _expect()(cell.locator("#rich-updated")).to_have_text("updated", timeout=WAIT_MS)
    assert cell.locator("#rich-first").count() == 0, "the display was updated in place"
    cell = run_cell(page, 'display.markdown("# A *heading*")')
    _expect()(cell.locator(".jp-RenderedMarkdown h1")).to_contain_text("A heading", timeout=WAIT_MS)
    page.screenshot(path=str(SCREENS / "02-rich.png"))


def test_an_error_shows_its_message(page):
    cell = run_cell(page, 'error("boom from lua")')
    err = cell.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    _expect()(err).to_contain_text("boom from lua", timeout=WAIT_MS)
    page.screenshot(path=str(SCREENS / "03-error.png"))


def test_io_read_shows_an_input_box(page):
    cell = run_cell(page, 'answer = io.read()\nprint("got " .. answer)')
    box = cell.locator(".jp-Stdin-input")
    box.wait_for()
    box.fill("forty-two")
    box.press("Enter")
    _expect()(cell.locator(".jp-OutputArea")).to_contain_text("got forty-two", timeout=WAIT_MS)
    page.screenshot(path=str(SCREENS / "04-input.png"))


def _wait_idle(page):
    page.locator("#jp-main-statusbar").get_by_text("Lua 5.4 (llmspell) | Idle").wait_for()


def _last_cell_emptied(page):
    """The last cell's editor, focused and empty (whatever an earlier test left in it)."""
    cells = _cells(page)
    content = cells.nth(cells.count() - 1).locator(".cm-content")
    content.click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    _expect()(content).to_have_text("")
    return content


def test_completion_lists_candidates(page):
    _wait_idle(page)
    content = _last_cell_emptied(page)
    page.keyboard.type("string.fo")
    # Tab shows the kernel's candidates (string.format) or inserts the only one; a click takes it.
    # As a user would on a slow machine: Tab again if nothing came (the first press may come before
    # JupyterLab attached its completer to the new cell), click again if the list stayed.
    listing = page.locator(".jp-Completer-list:visible")
    deadline = time.monotonic() + WAIT_MS / 1000
    shown = False
    while "string.format" not in content.inner_text():
        assert time.monotonic() < deadline, f"Tab completed nothing: {content.inner_text()!r}"
        before = (listing.count() > 0, content.inner_text())
        if before[0]:
            if not shown:
                page.screenshot(path=str(SCREENS / "05-completer.png"))
                shown = True
            # A click takes the item (Enter can be taken by the editor, a newline, while another
            # completion provider, jupyterlab-lsp's, is still pending); the list may be redrawn
            # or closed meanwhile: then look again.
            try:
                listing.locator(".jp-Completer-item", has_text="string.format").first.click(timeout=5000)
            except Exception:
                continue
        else:
            page.keyboard.press("Tab")
        # Up to 10 s for the list to come or go, or the text to change, before acting again.
        acted = time.monotonic()
        while time.monotonic() - acted < 10 and (listing.count() > 0, content.inner_text()) == before:
            time.sleep(0.2)
    _expect()(content).to_have_text("string.format", timeout=WAIT_MS)
    page.screenshot(path=str(SCREENS / "05-completion.png"))


def test_inspect_shows_a_tooltip(page):
    # Open a call, ask for the tooltip.
    content = _last_cell_emptied(page)
    page.keyboard.insert_text("string.format(")
    _expect()(content).to_have_text("string.format(")
    tooltip = page.locator(".jp-Tooltip")
    try:
        page.keyboard.press("Shift+Tab")
        _expect()(tooltip).to_contain_text("format", timeout=WAIT_MS)
        page.screenshot(path=str(SCREENS / "06-tooltip.png"))
    finally:
        page.keyboard.press("Escape")
        # Leave the cell empty for the next test (Escape may also have left edit mode).
        _last_cell_emptied(page)


def test_interrupt_stops_a_busy_cell(page):
    cell = run_cell(page, 'print("spinning")\nwhile true do end')
    _expect()(cell.locator(".jp-OutputArea")).to_contain_text("spinning", timeout=WAIT_MS)
    page.locator('.jp-NotebookPanel-toolbar [data-command="notebook:interrupt-kernel"]').click()
    _expect()(cell.locator(".jp-OutputArea")).to_contain_text("interrupted", timeout=WAIT_MS)
    after = run_cell(page, 'print("alive after interrupt", answer)')
    _expect()(after.locator(".jp-OutputArea")).to_contain_text("alive after interrupt forty-two", timeout=WAIT_MS)
    page.screenshot(path=str(SCREENS / "07-interrupt.png"))


def test_restart_clears_the_session(page):
    page.locator('.jp-NotebookPanel-toolbar [data-command="notebook:restart-kernel"]').click()
    page.locator(".jp-Dialog .jp-mod-accept").click()
    page.locator(".jp-Dialog").wait_for(state="detached")
    # After a restart the globals are gone (answer was set before it).
    cell = run_cell(page, 'print("answer is", answer)')
    _expect()(cell.locator(".jp-OutputArea")).to_contain_text("answer is nil", timeout=WAIT_MS)
    page.screenshot(path=str(SCREENS / "08-restart.png"))


def test_the_debugger_stops_at_a_gutter_breakpoint_and_shows_locals(page):
    _wait_idle(page)
    bug = page.locator(".jp-NotebookPanel-toolbar .jp-DebuggerBugButton")
    # Enabled: the kernelspec and kernel_info advertise the debugger.
    _expect()(bug).to_have_attribute("aria-disabled", "false")
    bug.click()
    _expect()(bug).to_have_attribute("aria-pressed", "true")
    cells = _cells(page)
    cell = cells.nth(cells.count() - 1)
    cell.locator(".cm-content").click()
    page.keyboard.insert_text("local total = 0\nfor i = 1, 3 do\n  total = total + i * 10\nend\nprint('total is ' .. total)")
    # The breakpoint gutter's first element is a hidden spacer: element k is line k.
    line3 = cell.locator(".cm-breakpoint-gutter .cm-gutterElement").nth(3)
    line3.click()
    _expect()(page.locator(".jp-DebuggerBreakpoints")).to_contain_text("3")
    page.keyboard.press("Shift+Enter")
    variables = page.locator(".jp-DebuggerVariables")
    # JupyterLab's tree shows `name: value` (the colon may be drawn by CSS: not in the text).
    _expect()(variables).to_contain_text(re.compile(r"total:?\s*0(?!\d)"), timeout=WAIT_MS)
    _expect()(variables).to_contain_text(re.compile(r"\bi:?\s*1(?!\d)"), timeout=WAIT_MS)
    _expect()(page.locator(".jp-DebuggerCallstack")).to_contain_text("cell", timeout=WAIT_MS)
    page.screenshot(path=str(SCREENS / "09-debugger-stopped.png"))
    # Continue stops again at the same breakpoint with the loop's next values.
    continue_button = page.locator('[title^="Continue"]:visible').first
    continue_button.click()
    _expect()(variables).to_contain_text(re.compile(r"\bi:?\s*2(?!\d)"), timeout=WAIT_MS)
    _expect()(variables).to_contain_text(re.compile(r"total:?\s*10(?!\d)"), timeout=WAIT_MS)
    page.screenshot(path=str(SCREENS / "10-debugger-second-stop.png"))
    # Remove the breakpoint (click its gutter again), then Continue finishes the cell. JupyterLab
    # sends the new breakpoints after a dumpCell round trip: a Continue clicked at once can overtake
    # them and stop once more at i = 3 (test_debugger.py checks removal itself), so Continue again.
    line3.click()
    _expect()(page.locator(".jp-DebuggerBreakpoints")).not_to_contain_text("3")
    output = cell.locator(".jp-OutputArea")
    for _ in range(2):
        continue_button.click()
        try:
            _expect()(output).to_contain_text("total is 60", timeout=15_000)
            break
        except AssertionError:
            _expect()(variables).to_contain_text(re.compile(r"\bi:?\s*3(?!\d)"))
    _expect()(output).to_contain_text("total is 60", timeout=WAIT_MS)
    page.screenshot(path=str(SCREENS / "11-debugger-finished.png"))
    bug.click()
    _expect()(bug).to_have_attribute("aria-pressed", "false")
