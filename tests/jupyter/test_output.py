"""Output through ``jupyter_client``: streams while the cell runs, order, a million lines, stdout
and stderr, user output never on the kernel's own stdio; rich display and its MIME types.

Kernels come from two places (fixtures in conftest.py):

* ``kernel``: started by ``jupyter_client.KernelManager`` from the installed ``llmspell``
  kernelspec (``llmspell kernel start --connection-file ...``),
* ``id_kernel`` / ``id_kernels``: started as ``llmspell kernel start --id ID`` with a private
  ``LLMSPELL_HOME``; clients connect with the connection file the kernel wrote.

Every wait has a timeout; conftest's watchdog fails any test that still hangs.
"""

from __future__ import annotations

import base64
import time
from queue import Empty

import pytest
from client_helpers import SPIN
from conftest import (
    JPEG_BYTES,
    PNG_BYTES,
    SVG_TEXT,
    execute,
    execute_ok,
    get_reply,
    lua_bytes,
)


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def iopub_arrivals(kc, msg_id: str, timeout: float = 30.0) -> list[tuple[float, dict]]:
    """(arrival time, message) of every iopub message for msg_id, up to and including its idle."""
    arrivals = []
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"no idle within {timeout:g} s: {arrivals!r}"[:3000]
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        arrivals.append((time.monotonic(), msg))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return arrivals


def kinds(arrivals) -> list[str]:
    return [m["content"]["execution_state"] if m["msg_type"] == "status" else m["msg_type"] for _, m in arrivals]


def test_output_streams_while_the_cell_runs(kernel):
    """print output is published while the cell still runs, not all at the end."""
    kc = kernel.kc
    code = SPIN + 'for i = 1, 3 do print("tick " .. i) spin(0.6) end'
    msg_id = kc.execute(code, allow_stdin=False)
    arrivals = iopub_arrivals(kc, msg_id)
    streams = [(t, m) for t, m in arrivals if m["msg_type"] == "stream"]
    text = "".join(m["content"]["text"] for _, m in streams)
    assert text == "tick 1\ntick 2\ntick 3\n"
    assert all(m["content"]["name"] == "stdout" for _, m in streams)
    assert len(streams) >= 2, f"all output came in one message: {text!r}"
    idle_at = arrivals[-1][0]
    first_at = streams[0][0]
    assert idle_at - first_at >= 0.9, (
        f"first output arrived only {idle_at - first_at:.2f} s before idle; the cell spun for 1.8 s"
        " after its first print, so output was held back instead of streamed"
    )
    reply = get_reply(kc, msg_id)
    assert reply["content"]["status"] == "ok"


def test_busy_and_execute_input_go_out_while_a_quiet_cell_still_runs(kernel):
    """The kernel holds busy and execute_input back for a moment so a quick request leaves in one go;
    a cell that runs long without output must still show busy at once, not at its end."""
    kc = kernel.kc
    msg_id = kc.execute(SPIN + "spin(1.5)", allow_stdin=False)
    arrivals = iopub_arrivals(kc, msg_id)
    assert kinds(arrivals) == ["busy", "execute_input", "idle"], kinds(arrivals)
    busy_at, idle_at = arrivals[0][0], arrivals[-1][0]
    assert idle_at - busy_at >= 1.0, f"busy arrived only {idle_at - busy_at:.2f} s before idle (cell: 1.5 s)"
    assert get_reply(kc, msg_id)["content"]["status"] == "ok"


def test_child_process_output_comes_after_busy_and_execute_input(kernel):
    kc = kernel.kc
    msg_id = kc.execute('os.execute("echo from-child; sleep 1")', allow_stdin=False)
    arrivals = iopub_arrivals(kc, msg_id)
    order = kinds(arrivals)
    assert order[:2] == ["busy", "execute_input"] and order[-1] == "idle", order
    text = "".join(m["content"]["text"] for _, m in arrivals if m["msg_type"] == "stream")
    assert "from-child" in text, order
    assert arrivals[-1][0] - arrivals[0][0] >= 0.6, "busy was held until the child had finished"


@pytest.mark.timeout(300)
def test_million_lines_arrive_complete_and_in_order(kernel):
    kc = kernel.kc
    n = 1_000_000
    res = execute(kc, f"for i = 1, {n} do print(i) end", timeout=240)
    assert res.status == "ok", res.content
    streams = res.of_type("stream")
    assert all(m["content"]["name"] == "stdout" for m in streams)
    text = res.stdout
    expected = "".join(f"{i}\n" for i in range(1, n + 1))
    if text != expected:
        lines = text.split("\n")
        first_bad = next(
            (i for i, line in enumerate(lines[:n]) if line != str(i + 1)), min(len(lines), n)
        )
        raise AssertionError(
            f"stdout differs: {len(text)} chars vs {len(expected)} expected, "
            f"{len(lines) - 1} lines; first wrong line #{first_bad + 1}: "
            f"{lines[first_bad] if first_bad < len(lines) else None!r}"
        )
    assert len(streams) < n // 10, f"{len(streams)} stream messages for {n} lines: not coalesced"


def test_stdout_and_stderr_streams(kernel):
    kc = kernel.kc
    res = execute_ok(kc, 'io.write("a") io.stdout:write("b") print("c", 1, nil)')
    assert res.stdout == "abc\t1\tnil\n"
    assert res.stderr == ""
    res = execute_ok(kc, 'io.stderr:write("to stderr\\n")')
    assert res.stderr == "to stderr\n"
    assert res.stdout == ""
    res = execute_ok(kc, 'print("one") io.stderr:write("two\\n") print("three")')
    assert res.stdout == "one\nthree\n"
    assert res.stderr == "two\n"


def test_user_output_never_reaches_the_kernel_process_stdio(id_kernels):
    """Nothing user code writes ends up on the kernel's own stdout/stderr."""
    # Default log level: a debug log of message contents would be a false alarm here.
    id_kernel = id_kernels.start(env={"LLMSPELL_LOG": "info"})
    kc = id_kernel.client()
    # The markers are built at run time so a kernel that logs request code does not leak them.
    code = (
        'local m = "LEAK" .. "-"\n'
        'print(m .. "PRINT") io.write(m .. "WRITE\\n") io.stdout:write(m .. "STDOUT\\n")\n'
        'io.stderr:write(m .. "STDERR\\n")'
    )
    res = execute_ok(kc, code)
    assert "LEAK-PRINT" in res.stdout and "LEAK-WRITE" in res.stdout and "LEAK-STDOUT" in res.stdout
    assert "LEAK-STDERR" in res.stderr
    time.sleep(0.3)
    leaked = id_kernel.stdout() + id_kernel.stderr()
    assert "LEAK-" not in leaked, f"user output reached the kernel's own stdio: {leaked[-2000:]!r}"


# ---------------------------------------------------------------------------------------------
# rich display
# ---------------------------------------------------------------------------------------------


def test_display_update_and_clear_messages(kernel):
    kc = kernel.kc
    res = execute_ok(kc, 'h = display(display.html("<b>one</b>"), {display_id = "d1"})')
    assert res.results == [], res.describe()
    (dd,) = res.of_type("display_data")
    assert dd["content"]["data"]["text/html"] == "<b>one</b>"
    assert dd["content"]["transient"] == {"display_id": "d1"}
    assert isinstance(dd["content"]["metadata"], dict)

    res = execute_ok(kc, 'h:update(display.html("<b>two</b>"))')
    assert res.of_type("display_data") == []
    (ud,) = res.of_type("update_display_data")
    assert ud["content"]["data"]["text/html"] == "<b>two</b>"
    assert ud["content"]["transient"] == {"display_id": "d1"}
    assert isinstance(ud["content"]["metadata"], dict)

    res = execute_ok(kc, "display.clear()")
    (co,) = res.of_type("clear_output")
    assert co["content"]["wait"] is False
    res = execute_ok(kc, "display.clear(true)")
    (co,) = res.of_type("clear_output")
    assert co["content"]["wait"] is True

    # output order within one cell: print, display, clear, print
    res = execute_ok(kc, 'print("a") display(display.markdown("m")) display.clear() print("b")')
    kinds = [m["msg_type"] for m in res.outputs if m["msg_type"] != "execute_result"]
    assert kinds == ["stream", "display_data", "clear_output", "stream"], res.describe()


DISPLAY_CASES = [
    ("html", lua_bytes(b"<p>x</p>"), "text/html", "<p>x</p>"),
    ("markdown", lua_bytes(b"# Title"), "text/markdown", "# Title"),
    ("latex", lua_bytes(b"$x^2$"), "text/latex", "$x^2$"),
    ("svg", lua_bytes(SVG_TEXT.encode()), "image/svg+xml", SVG_TEXT),
    ("png", lua_bytes(PNG_BYTES), "image/png", PNG_BYTES),
    ("jpeg", lua_bytes(JPEG_BYTES), "image/jpeg", JPEG_BYTES),
    ("json", "{a = 1, b = {1, 2}, c = {d = true}}", "application/json", {"a": 1, "b": [1, 2], "c": {"d": True}}),
]


@pytest.mark.parametrize("ctor,arg,mime,expected", DISPLAY_CASES, ids=[c[0] for c in DISPLAY_CASES])
def test_display_mime_types(kernel, ctor, arg, mime, expected):
    res = execute_ok(kernel.kc, f"display(display.{ctor}({arg}))")
    (dd,) = res.of_type("display_data")
    data = dd["content"]["data"]
    assert mime in data, data.keys()
    if isinstance(expected, bytes):
        assert base64.b64decode(data[mime]) == expected
    else:
        assert data[mime] == expected


def test_display_of_a_plain_value(kernel):
    res = execute_ok(kernel.kc, "display(42)")
    (dd,) = res.of_type("display_data")
    assert dd["content"]["data"]["text/plain"] == "42"


def test_rich_value_as_cell_result(kernel):
    res = execute_ok(kernel.kc, 'display.markdown("*hi*")')
    (r,) = res.results
    assert r["content"]["data"]["text/markdown"] == "*hi*"
    assert r["content"]["execution_count"] == res.content["execution_count"]
    assert res.of_type("display_data") == []
