"""Integration tests: the llmspell kernel driven by the real ``jupyter_client`` (and raw ZeroMQ where
the point is what the wire carries).

Kernels come from two places:

* ``kernel``: started by ``jupyter_client.KernelManager`` from the installed ``llmspell``
  kernelspec (``llmspell kernel start --connection-file ...``),
* ``id_kernel`` / ``id_kernels``: started as ``llmspell kernel start --id ID`` with a private
  ``LLMSPELL_HOME``; clients connect with the connection file the kernel wrote.

Every wait has a timeout; conftest's watchdog fails any test that still hangs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
import uuid
from queue import Empty

import pytest
import zmq
from conftest import (
    JPEG_BYTES,
    KERNEL_NAME,
    KERNELSPEC_DIR,
    LLMSPELL_BIN,
    PNG_BYTES,
    SVG_TEXT,
    drain,
    execute,
    execute_ok,
    get_reply,
    lua_bytes,
    pid_alive,
    run_request,
    send_control,
    send_shell,
    wait_until,
)
from jupyter_client.session import Session

SPIN = "local function spin(s) local t0 = os.clock() while os.clock() - t0 < s do end end\n"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def wait_iopub(kc, pred, timeout: float = 10.0, seen: list | None = None):
    """Return the first iopub message for which pred(msg) is true."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                "expected iopub message did not arrive within "
                f"{timeout:g} s; saw {[(m['msg_type'], m['content']) for m in (seen or [])]!r}"[:3000]
            )
        try:
            msg = kc.get_iopub_msg(timeout=remaining)
        except Empty:
            continue
        if seen is not None:
            seen.append(msg)
        if pred(msg):
            return msg


def start_running(kc, code: str) -> str:
    """Send an execute request and return once the kernel is running it (execute_input seen)."""
    msg_id = kc.execute(code, allow_stdin=False)
    wait_iopub(
        kc,
        lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "execute_input",
        timeout=15,
    )
    time.sleep(0.3)  # let the Lua thread get into the loop
    return msg_id


def assert_interrupted(res, what: str) -> None:
    assert res.status == "error", f"{what}: expected an error reply, got:\n{res.describe()}"
    assert "Interrupt" in res.content["ename"], f"{what}: reply ename {res.content['ename']!r}"
    errors = res.errors
    assert len(errors) == 1, f"{what}: expected one iopub error, got:\n{res.describe()}"
    assert "Interrupt" in errors[0]["content"]["ename"], errors[0]["content"]


def shell_replies(kc, count: int, timeout: float = 30.0) -> list[dict]:
    """The next ``count`` shell messages, in arrival order."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"only {len(out)} of {count} shell replies arrived within {timeout:g} s: "
                f"{[(m['msg_type'], m['content']) for m in out]!r}"
            )
        try:
            out.append(kc.get_shell_msg(timeout=remaining))
        except Empty:
            pass
    return out


def iopub_until_idle(kc, msg_ids, timeout: float = 30.0) -> dict[str, list]:
    """iopub messages per request id, until every id has had its idle."""
    pending = set(msg_ids)
    got: dict[str, list] = {i: [] for i in msg_ids}
    deadline = time.monotonic() + timeout
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no idle for {pending} within {timeout:g} s; got {got!r}"[:3000])
        try:
            msg = kc.get_iopub_msg(timeout=remaining)
        except Empty:
            continue
        pid = msg["parent_header"].get("msg_id")
        if pid in got:
            got[pid].append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                pending.discard(pid)
    return got


def raw_socket(info: dict, channel: str, sock_type: int) -> zmq.Socket:
    ctx = zmq.Context.instance()
    s = ctx.socket(sock_type)
    s.linger = 0
    s.connect(f"{info['transport']}://{info['ip']}:{info[channel + '_port']}")
    return s


def key_of(info: dict) -> bytes:
    key = info["key"]
    return key if isinstance(key, bytes) else key.encode()


def kernel_info_dict(kernel) -> dict:
    info = dict(kernel.km.get_connection_info())
    info["key"] = key_of(info)
    return info


def port_is_free(ip: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# kernelspec and kernel_info
# ---------------------------------------------------------------------------------------------


def test_kernelspec_is_installed_and_found():
    spec = json.loads((KERNELSPEC_DIR / "kernel.json").read_text())
    assert spec["argv"] == [LLMSPELL_BIN, "kernel", "start", "--connection-file", "{connection_file}"]
    assert os.path.isabs(spec["argv"][0])
    assert spec["language"] == "lua"
    assert spec["interrupt_mode"] == "message"
    assert isinstance(spec.get("display_name"), str) and spec["display_name"]

    from jupyter_client.kernelspec import KernelSpecManager

    found = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    assert os.path.samefile(found.resource_dir, KERNELSPEC_DIR)
    assert found.language == "lua"


def test_kernel_info_reply(kernel):
    kc = kernel.kc
    msg_id = kc.kernel_info()
    res = run_request(kc, msg_id)
    c = res.content
    assert res.reply["msg_type"] == "kernel_info_reply"
    assert c["status"] == "ok"
    assert tuple(int(x) for x in c["protocol_version"].split(".")[:2]) >= (5, 3)
    assert tuple(int(x) for x in res.reply["header"]["version"].split(".")[:2]) >= (5, 3)
    assert isinstance(c["implementation"], str) and c["implementation"]
    assert isinstance(c["banner"], str) and c["banner"]
    li = c["language_info"]
    assert li["name"] == "lua"
    assert str(li["version"]).startswith("5.4")
    assert li["file_extension"] == ".lua"
    assert isinstance(li["mimetype"], str) and li["mimetype"]
    assert li["pygments_lexer"] == "lua"
    assert li["codemirror_mode"]
    assert isinstance(c["help_links"], list)
    for link in c["help_links"]:
        assert isinstance(link["text"], str) and isinstance(link["url"], str)
    # The reply echoes the request header as parent_header.
    assert res.reply["parent_header"]["msg_id"] == msg_id
    assert res.reply["parent_header"]["session"] == kc.session.session
    assert res.reply["parent_header"]["msg_type"] == "kernel_info_request"


def test_kernel_info_on_control(kernel):
    kc = kernel.kc
    msg_id = send_control(kc, "kernel_info_request")
    reply = get_reply(kc, msg_id, timeout=10, channel="control")
    assert reply["msg_type"] == "kernel_info_reply"
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["language_info"]["name"] == "lua"


def test_wire_format_signature_header_and_dates(kernel):
    """Raw multipart frames: <IDS|MSG>, HMAC-SHA256 signature, parent_header echoing the request
    header exactly, version >= 5.3, ISO 8601 UTC date."""
    info = kernel_info_dict(kernel)
    session = Session(key=info["key"], signature_scheme="hmac-sha256")
    sock = raw_socket(info, "shell", zmq.DEALER)
    try:
        sent = session.send(sock, "kernel_info_request", {})
        assert sock.poll(10_000), "no reply to a correctly signed raw kernel_info_request"
        frames = sock.recv_multipart()
    finally:
        sock.close()
    assert b"<IDS|MSG>" in frames, frames[:3]
    i = frames.index(b"<IDS|MSG>")
    signature, header, parent, metadata, content = frames[i + 1 : i + 6]
    expected = hmac.new(info["key"], header + parent + metadata + content, hashlib.sha256).hexdigest()
    assert signature.decode() == expected
    header_d = json.loads(header)
    parent_d = json.loads(parent)
    sent_header = json.loads(session.pack(sent["header"]))
    assert parent_d == sent_header
    assert header_d["msg_type"] == "kernel_info_reply"
    assert tuple(int(x) for x in header_d["version"].split(".")[:2]) >= (5, 3)
    assert isinstance(header_d["msg_id"], str) and header_d["msg_id"]
    assert isinstance(header_d["session"], str) and header_d["session"]
    assert "username" in header_d
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]00:00)", header_d["date"]
    ), header_d["date"]
    assert isinstance(json.loads(metadata), dict)
    assert json.loads(content)["status"] == "ok"


def test_iopub_welcome_for_every_new_subscriber(kernel):
    """A new SUB gets iopub_welcome first, parent_header {}, subscription "" -- also when another
    client (kernel.kc) is already subscribed to the same topic, so the kernel has to see every
    subscription (XPUB_VERBOSE) or use ZMQ_XPUB_WELCOME_MSG."""
    sub = kernel.km.connect_iopub()
    try:
        assert sub.poll(10_000), "no iopub message within 10 s of subscribing"
        frames = sub.recv_multipart()
        _, msg_frames = kernel.km.session.feed_identities(frames)
        msg = kernel.km.session.deserialize(msg_frames)  # verifies the signature
    finally:
        sub.close(linger=0)
    assert msg["msg_type"] == "iopub_welcome"
    assert msg["parent_header"] == {}
    assert msg["content"] == {"subscription": ""}


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
# execution semantics
# ---------------------------------------------------------------------------------------------


def test_execute_result_rendering(kernel):
    kc = kernel.kc
    assert execute_ok(kc, "1 + 1").result_text == "2"
    assert execute_ok(kc, '"ab"').result_text == '"ab"'
    assert execute_ok(kc, "2^10").result_text == "1024.0"
    assert execute_ok(kc, "10 // 3").result_text == "3"
    assert execute_ok(kc, "false").result_text == "false"

    t = execute_ok(kc, "{1, 2, x = 3}").result_text
    assert t is not None and not t.startswith("table:"), t
    for part in ("1", "2", "x", "3"):
        assert part in t, t
    nested = execute_ok(kc, '{a = {b = "deep"}}').result_text
    assert nested is not None and "deep" in nested and "b" in nested, nested

    multi = execute_ok(kc, "1, 2")
    assert len(multi.results) == 1, multi.describe()
    assert "1" in multi.result_text and "2" in multi.result_text

    for statement in ("y = 1", "local z = 2", "function f() return 1 end"):
        res = execute_ok(kc, statement)
        assert res.results == [], f"{statement!r} gave an execute_result:\n{res.describe()}"
    res = execute_ok(kc, "print(1)")
    assert res.results == [], res.describe()
    assert res.stdout == "1\n"

    res = execute_ok(kc, "6 * 7")
    (r,) = res.results
    assert r["content"]["execution_count"] == res.content["execution_count"]
    assert isinstance(r["content"]["metadata"], dict)


def test_runtime_error_then_success_keeps_globals(kernel):
    kc = kernel.kc
    execute_ok(kc, "x = 41")
    res = execute(kc, 'error("boom")')
    assert res.status == "error", res.describe()
    c = res.content
    assert c["ename"] == "RuntimeError"
    assert "boom" in c["evalue"]
    assert isinstance(c["traceback"], list) and all(isinstance(s, str) for s in c["traceback"])
    assert len(res.errors) == 1, res.describe()
    err = res.errors[0]["content"]
    assert err["ename"] == c["ename"] and err["evalue"] == c["evalue"]
    assert isinstance(err["traceback"], list) and all(isinstance(s, str) for s in err["traceback"])
    assert res.results == []

    after = execute_ok(kc, "x + 1")
    assert after.result_text == "42"


def test_other_errors_keep_the_session(kernel):
    kc = kernel.kc
    execute_ok(kc, "kept = 'yes'")
    for code in (
        "x = = 1",  # syntax error
        "undefined_function()",  # call a nil value
        "error({code = 7})",  # non-string error value
        "local t = nil; return t.field",  # index nil
        "coroutine.wrap(function() error('in coroutine') end)()",
        "string.rep('x', -1, 5, 6)(1)",  # call a string
    ):
        res = execute(kc, code)
        assert res.status == "error", f"{code!r}:\n{res.describe()}"
        assert isinstance(res.content["ename"], str) and res.content["ename"], res.content
        assert isinstance(res.content["evalue"], str), res.content
        assert len(res.errors) == 1, f"{code!r}:\n{res.describe()}"
    assert execute_ok(kc, "kept").result_text == '"yes"'


def test_syntax_error_reply(kernel):
    res = execute(kernel.kc, "x = = 1")
    assert res.status == "error"
    assert "'='" in res.content["evalue"], res.content
    assert len(res.errors) == 1


def test_execution_count_on_every_reply_and_incrementing(kernel):
    kc = kernel.kc
    r1 = execute_ok(kc, "a = 1")
    r2 = execute(kc, 'error("e")')
    r3 = execute_ok(kc, "a + 1")
    counts = []
    for res in (r1, r2, r3):
        assert "execution_count" in res.content, res.content
        assert isinstance(res.content["execution_count"], int)
        counts.append(res.content["execution_count"])
        inputs = res.of_type("execute_input")
        assert len(inputs) == 1, res.describe()
        assert inputs[0]["content"]["execution_count"] == res.content["execution_count"]
    assert counts[0] == 1, f"a fresh kernel's first count is {counts[0]}"
    assert counts == [counts[0], counts[0] + 1, counts[0] + 2]
    assert r3.results[0]["content"]["execution_count"] == counts[2]


def test_silent_produces_no_output_and_keeps_the_count(kernel):
    kc = kernel.kc
    r0 = execute_ok(kc, "n = 1")
    s1 = execute_ok(kc, 'print("hidden") io.stderr:write("hidden\\n") n = n + 1', silent=True)
    s2 = execute_ok(kc, "n * 100", silent=True)
    s3 = execute_ok(kc, 'display(display.html("<i>hidden</i>"))', silent=True)
    for res in (s1, s2, s3):
        assert res.outputs == [], f"silent request produced output:\n{res.describe()}"
        assert "execution_count" in res.content
    se = execute(kc, 'error("quiet")', silent=True)
    assert se.status == "error"
    assert se.errors == [], se.describe()
    r1 = execute_ok(kc, "n")
    assert r1.result_text == "2", "the silent cell still ran"
    assert r1.content["execution_count"] == r0.content["execution_count"] + 1
    # silent implies store_history = False
    h = run_request(kc, kc.history(hist_access_type="tail", n=2, output=False, raw=True))
    assert [e[2] for e in h.content["history"]] == ["n = 1", "n"]


def test_stop_on_error_aborts_queued_execute_requests(kernel):
    kc = kernel.kc
    slow_error = SPIN + 'spin(0.5) error("first fails")'
    id1 = kc.execute(slow_error, allow_stdin=False)
    id2 = kc.execute("queued = true", allow_stdin=False)
    id3 = kc.kernel_info()
    replies = shell_replies(kc, 3)
    assert [r["parent_header"]["msg_id"] for r in replies] == [id1, id2, id3], "replies out of order"
    assert replies[0]["content"]["status"] == "error"
    assert replies[1]["msg_type"] == "execute_reply"
    assert replies[1]["content"]["status"] == "aborted", replies[1]["content"]
    assert replies[2]["msg_type"] == "kernel_info_reply"
    assert replies[2]["content"]["status"] == "ok", "only execute requests are aborted"
    iopub_until_idle(kc, [id1, id3])
    drain(kc.get_iopub_msg)
    assert execute_ok(kc, "queued == nil").result_text == "true", "the aborted cell ran"


def test_request_sent_after_the_error_is_not_aborted(kernel):
    """stop_on_error aborts what was queued when the cell failed, never a request the client sent
    after it had the error reply and the idle status (the cell leaves garbage, so the kernel has
    work to do after failing)."""
    kc = kernel.kc
    failing = "local t = {} for i = 1, 200000 do t[i] = {i} end error('fails')"
    aborted = 0
    for _ in range(10):
        assert execute(kc, failing).status == "error"
        if execute(kc, "1").status == "aborted":
            aborted += 1
    assert aborted == 0, f"{aborted} of 10 requests sent after the failed cell's idle were aborted"


def test_stop_on_error_false_runs_queued_requests(kernel):
    kc = kernel.kc
    slow_error = SPIN + 'spin(0.5) error("first fails")'
    id1 = kc.execute(slow_error, allow_stdin=False, stop_on_error=False)
    id2 = kc.execute("queued = true", allow_stdin=False)
    replies = shell_replies(kc, 2)
    assert [r["parent_header"]["msg_id"] for r in replies] == [id1, id2]
    assert replies[0]["content"]["status"] == "error"
    assert replies[1]["content"]["status"] == "ok", replies[1]["content"]
    iopub_until_idle(kc, [id1, id2])
    assert execute_ok(kc, "queued").result_text == "true"


# ---------------------------------------------------------------------------------------------
# interrupt
# ---------------------------------------------------------------------------------------------


def test_interrupt_request_stops_an_infinite_loop(kernel):
    kc = kernel.kc
    execute_ok(kc, "keep = 'still here'")
    msg_id = start_running(kc, "while true do end")
    iid = send_control(kc, "interrupt_request")
    ireply = get_reply(kc, iid, timeout=5, channel="control")
    assert ireply["msg_type"] == "interrupt_reply"
    assert ireply["content"]["status"] == "ok"
    res = run_request(kc, msg_id, timeout=3)
    assert_interrupted(res, "interrupt_request")
    assert kernel.km.is_alive()
    assert execute_ok(kc, "keep").result_text == '"still here"'


def test_kernel_manager_interrupt_uses_the_kernelspec_mode(kernel):
    """KernelManager.interrupt_kernel() with interrupt_mode=message from the installed spec."""
    kc = kernel.kc
    assert kernel.km.kernel_spec.interrupt_mode == "message"
    execute_ok(kc, "keep = 1")
    msg_id = start_running(kc, "local n = 0 while true do n = n + 1 end")
    kernel.km.interrupt_kernel()
    res = run_request(kc, msg_id, timeout=3)
    assert_interrupted(res, "KernelManager.interrupt_kernel")
    assert execute_ok(kc, "keep + 1").result_text == "2"


def test_sigint_stops_an_infinite_loop(kernel):
    kc = kernel.kc
    execute_ok(kc, "keep = {1, 2, 3}")
    msg_id = start_running(kc, "while true do end")
    os.kill(kernel.pid, signal.SIGINT)
    res = run_request(kc, msg_id, timeout=3)
    assert_interrupted(res, "SIGINT")
    assert pid_alive(kernel.pid), "SIGINT killed the kernel"
    assert execute_ok(kc, "#keep").result_text == "3"


def test_sigint_on_an_idle_kernel_does_not_kill_or_poison_it(kernel):
    kc = kernel.kc
    os.kill(kernel.pid, signal.SIGINT)
    time.sleep(0.5)
    assert pid_alive(kernel.pid), "SIGINT killed an idle kernel"
    res = execute(kc, "1 + 1")
    assert res.status == "ok", f"the next cell failed after an idle SIGINT:\n{res.describe()}"
    assert res.result_text == "2"


def test_interrupt_stops_a_loop_that_calls_into_c(kernel):
    """Interrupt also works while the loop spends its time in library functions."""
    kc = kernel.kc
    msg_id = start_running(kc, 'while true do local s = string.rep("x", 1000):upper() end')
    send_control(kc, "interrupt_request")
    res = run_request(kc, msg_id, timeout=3)
    assert_interrupted(res, "interrupt during string functions")


def test_heartbeat_and_control_answer_while_lua_runs(kernel):
    kc = kernel.kc
    info = kernel_info_dict(kernel)
    msg_id = start_running(kc, "while true do end")
    hb = raw_socket(info, "hb", zmq.REQ)
    try:
        hb.send(b"ping")
        assert hb.poll(3000), "heartbeat did not answer while Lua was busy"
        assert hb.recv() == b"ping"
    finally:
        hb.close()
    kid = send_control(kc, "kernel_info_request")
    reply = get_reply(kc, kid, timeout=5, channel="control")
    assert reply["content"]["status"] == "ok", "control kernel_info not answered while Lua was busy"
    send_control(kc, "interrupt_request")
    assert_interrupted(run_request(kc, msg_id, timeout=3), "interrupt after heartbeat check")


# ---------------------------------------------------------------------------------------------
# stdin
# ---------------------------------------------------------------------------------------------


def answer_input(kc, msg_id: str, value: str) -> dict:
    req = kc.get_stdin_msg(timeout=10)
    assert req["msg_type"] == "input_request", req
    assert req["parent_header"]["msg_id"] == msg_id
    assert isinstance(req["content"]["prompt"], str)
    assert req["content"]["password"] is False
    kc.input(value)
    return req


def test_io_read_answered_through_stdin(kernel):
    kc = kernel.kc
    msg_id = kc.execute("name = io.read()", allow_stdin=True)
    answer_input(kc, msg_id, "Ada Lovelace")
    assert run_request(kc, msg_id).status == "ok"
    assert execute_ok(kc, "name").result_text == '"Ada Lovelace"'

    msg_id = kc.execute('num = io.read("n")', allow_stdin=True)
    answer_input(kc, msg_id, "41")
    assert run_request(kc, msg_id).status == "ok"
    assert execute_ok(kc, "num + 1").result_text == "42"

    msg_id = kc.execute("for line in io.lines() do got = line break end", allow_stdin=True)
    answer_input(kc, msg_id, "from lines")
    assert run_request(kc, msg_id).status == "ok"
    assert execute_ok(kc, "got").result_text == '"from lines"'

    # Two reads in one cell: two requests, answered in turn.
    msg_id = kc.execute("a1 = io.read() a2 = io.read() print(a1 .. '+' .. a2)", allow_stdin=True)
    answer_input(kc, msg_id, "first")
    answer_input(kc, msg_id, "second")
    res = run_request(kc, msg_id)
    assert res.status == "ok"
    assert res.stdout == "first+second\n"


def test_io_read_without_allow_stdin_is_a_clear_error(kernel):
    kc = kernel.kc
    res = execute(kc, "v = io.read()", allow_stdin=False)
    assert res.status == "error", res.describe()
    assert len(res.errors) == 1
    assert res.content["evalue"], res.content
    with pytest.raises(Empty):
        kc.get_stdin_msg(timeout=0.5)
    assert execute_ok(kc, "v == nil").result_text == "true"


# ---------------------------------------------------------------------------------------------
# several clients, signatures, malformed input
# ---------------------------------------------------------------------------------------------


def test_two_clients_each_get_their_own_replies_and_both_see_iopub(kernel):
    kc1 = kernel.kc
    kc2 = kernel.client()
    drain(kc1.get_iopub_msg)
    drain(kc2.get_iopub_msg)

    id1 = kc1.execute(SPIN + 'spin(0.2) print("from one") shared = 1', allow_stdin=False)
    id2 = kc2.execute('print("from two")', allow_stdin=False)
    id3 = kc1.kernel_info()
    id4 = kc2.complete("pri")

    r1 = shell_replies(kc1, 2)
    r2 = shell_replies(kc2, 2)
    assert [m["parent_header"]["msg_id"] for m in r1] == [id1, id3]
    assert [m["parent_header"]["msg_id"] for m in r2] == [id2, id4]
    assert [m["msg_type"] for m in r1] == ["execute_reply", "kernel_info_reply"]
    assert [m["msg_type"] for m in r2] == ["execute_reply", "complete_reply"]
    with pytest.raises(Empty):
        kc1.get_shell_msg(timeout=0.5)
    with pytest.raises(Empty):
        kc2.get_shell_msg(timeout=0.5)

    for kc in (kc1, kc2):
        got = iopub_until_idle(kc, [id1, id2, id3, id4])
        text1 = "".join(m["content"]["text"] for m in got[id1] if m["msg_type"] == "stream")
        text2 = "".join(m["content"]["text"] for m in got[id2] if m["msg_type"] == "stream")
        assert text1 == "from one\n"
        assert text2 == "from two\n"

    assert execute_ok(kc2, "shared").result_text == "1", "kc2 does not see kc1's global"

    # input_request goes to the client whose request is running
    msg_id = kc2.execute("line2 = io.read()", allow_stdin=True)
    req = kc2.get_stdin_msg(timeout=10)
    assert req["msg_type"] == "input_request" and req["parent_header"]["msg_id"] == msg_id
    with pytest.raises(Empty):
        kc1.get_stdin_msg(timeout=0.5)
    kc2.input("for two")
    assert run_request(kc2, msg_id).status == "ok"
    assert execute_ok(kc1, "line2").result_text == '"for two"'


def test_message_signed_with_the_wrong_key_is_ignored(kernel):
    kc = kernel.kc
    info = kernel_info_dict(kernel)
    good = Session(key=info["key"], signature_scheme="hmac-sha256")
    wrong = Session(key=b"definitely-not-the-key", signature_scheme="hmac-sha256")
    unsigned = Session(key=b"", signature_scheme="hmac-sha256")
    content = {
        "code": 'hacked = "yes"',
        "silent": False,
        "store_history": True,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    shell = raw_socket(info, "shell", zmq.DEALER)
    control = raw_socket(info, "control", zmq.DEALER)
    try:
        drain(kc.get_iopub_msg)
        for bad in (wrong, unsigned):
            bad.send(shell, "execute_request", content)
            bad.send(shell, "kernel_info_request", {})
            bad.send(control, "shutdown_request", {"restart": False})
        assert shell.poll(1500) == 0, "the kernel answered a badly signed shell message"
        assert control.poll(100) == 0, "the kernel answered a badly signed control message"
        bad_sessions = {wrong.session, unsigned.session}
        for m in drain(kc.get_iopub_msg, quiet=0.3):
            assert m["parent_header"].get("session") not in bad_sessions, (
                f"the kernel acted on a badly signed message: {m['msg_type']} {m['content']}"
            )
        # The kernel keeps serving, and a correctly signed raw message still gets its reply.
        assert kernel.km.is_alive(), "a badly signed shutdown_request stopped the kernel"
        good.send(shell, "kernel_info_request", {})
        assert shell.poll(10_000), "no reply to a correctly signed message after the bad ones"
        frames = shell.recv_multipart()
        _, msg_frames = good.feed_identities(frames)
        assert good.deserialize(msg_frames)["msg_type"] == "kernel_info_reply"
    finally:
        shell.close()
        control.close()
    assert execute_ok(kc, "hacked == nil").result_text == "true", "the badly signed code ran"


def test_malformed_messages_do_not_crash_the_kernel(kernel):
    kc = kernel.kc
    info = kernel_info_dict(kernel)
    key = info["key"]
    good = Session(key=key, signature_scheme="hmac-sha256")

    def signed(parts: list[bytes]) -> list[bytes]:
        sig = hmac.new(key, b"".join(parts), hashlib.sha256).hexdigest().encode()
        return [b"<IDS|MSG>", sig, *parts]

    shell = raw_socket(info, "shell", zmq.DEALER)
    try:
        shell.send_multipart([b"just one frame"])
        shell.send_multipart([b"<IDS|MSG>"])
        shell.send_multipart(signed([b"not json", b"{}", b"{}", b"{}"]))
        shell.send_multipart(signed([b"[1, 2]", b"{}", b"{}", b"{}"]))
        header = json.dumps(
            {"msg_id": uuid.uuid4().hex, "session": "x", "username": "u", "date": "2024-01-01T00:00:00Z",
             "msg_type": "no_such_request", "version": "5.3"}
        ).encode()
        shell.send_multipart(signed([header, b"{}", b"{}", b"{}"]))
        # an execute_request whose content lacks "code"
        good.send(shell, "execute_request", {"silent": False})
        # Replies (e.g. an error reply to the execute_request) may come; none is required.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            if shell.poll(100):
                shell.recv_multipart()
    finally:
        shell.close()
    assert kernel.km.is_alive(), "malformed messages killed the kernel"
    assert execute_ok(kc, "1 + 1").result_text == "2"


# ---------------------------------------------------------------------------------------------
# busy / idle around every request type
# ---------------------------------------------------------------------------------------------

REQUESTS = {
    "kernel_info": lambda kc: kc.kernel_info(),
    "execute": lambda kc: kc.execute("1 + 1", allow_stdin=False),
    "complete": lambda kc: kc.complete("string.fo"),
    "inspect": lambda kc: kc.inspect("print"),
    "is_complete": lambda kc: kc.is_complete("for i = 1, 3 do"),
    "history": lambda kc: kc.history(hist_access_type="tail", n=5, output=False, raw=True),
    "comm_info": lambda kc: kc.comm_info(),
}


@pytest.mark.parametrize("request_type", list(REQUESTS))
def test_busy_and_idle_around_every_request(kernel, request_type):
    kc = kernel.kc
    drain(kc.get_iopub_msg)
    msg_id = REQUESTS[request_type](kc)
    res = run_request(kc, msg_id)
    assert res.reply["msg_type"] == f"{request_type}_reply"
    if request_type == "is_complete":
        assert res.content["status"] == "incomplete", res.content
    else:
        assert res.content["status"] == "ok", res.content
    statuses = [m["content"]["execution_state"] for m in res.iopub if m["msg_type"] == "status"]
    assert statuses == ["busy", "idle"], res.describe()
    assert res.iopub[0]["msg_type"] == "status" and res.iopub[0]["content"]["execution_state"] == "busy"
    assert res.iopub[-1]["msg_type"] == "status"


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


# ---------------------------------------------------------------------------------------------
# help, inspect, complete, is_complete, history, comms
# ---------------------------------------------------------------------------------------------


def test_help_pager_payload_matches_inspect(kernel):
    kc = kernel.kc
    res = execute_ok(kc, "help(print)")
    payload = res.content["payload"]
    assert len(payload) == 1, payload
    page = payload[0]
    assert page["source"] == "page"
    assert page["start"] == 0
    text = page["data"]["text/plain"]
    assert isinstance(text, str) and "print" in text

    ins = run_request(kc, kc.inspect("print"))
    assert ins.content["status"] == "ok"
    assert ins.content["found"] is True
    assert ins.content["data"]["text/plain"] == text

    for name, word in (("string.format", "format"), ("display", "display"), ("help", "help")):
        res = execute_ok(kc, f"help({name})")
        (page,) = res.content["payload"]
        assert page["source"] == "page"
        assert word in page["data"]["text/plain"], (name, page["data"])
        ins = run_request(kc, kc.inspect(name))
        assert ins.content["found"] is True, (name, ins.content)


def test_inspect_cursor_and_unknown_names(kernel):
    kc = kernel.kc
    ins = run_request(kc, kc.inspect("print(1)", cursor_pos=2))
    assert ins.content["status"] == "ok" and ins.content["found"] is True
    ins = run_request(kc, kc.inspect("no_such_name_anywhere"))
    assert ins.content["status"] == "ok"
    assert ins.content["found"] is False


def complete(kc, code, cursor_pos=None):
    res = run_request(kc, kc.complete(code, cursor_pos))
    assert res.content["status"] == "ok", res.content
    return res.content


def test_completion_matches_and_cursor_positions(kernel):
    kc = kernel.kc
    execute_ok(kc, 's = "hello" my_global_value = 1 t = {first = 1, fifth = 5, other = 2}')

    c = complete(kc, "string.fo")
    assert "string.format" in c["matches"]
    assert (c["cursor_start"], c["cursor_end"]) == (0, 9)

    c = complete(kc, "x = string.fo")
    assert "string.format" in c["matches"]
    assert (c["cursor_start"], c["cursor_end"]) == (4, 13)

    c = complete(kc, "s:up")
    assert "s:upper" in c["matches"]
    assert (c["cursor_start"], c["cursor_end"]) == (0, 4)

    c = complete(kc, "print(s:up")
    assert "s:upper" in c["matches"]
    assert (c["cursor_start"], c["cursor_end"]) == (6, 10)

    c = complete(kc, "string.fo + 1", cursor_pos=9)
    assert "string.format" in c["matches"]
    assert (c["cursor_start"], c["cursor_end"]) == (0, 9)

    c = complete(kc, "my_glob")
    assert "my_global_value" in c["matches"]

    c = complete(kc, "t.fi")
    assert {"t.first", "t.fifth"} <= set(c["matches"])
    assert "t.other" not in c["matches"]


def test_is_complete_statuses(kernel):
    kc = kernel.kc

    def status(code):
        res = run_request(kc, kc.is_complete(code))
        return res.content

    c = status("for i = 1, 3 do")
    assert c["status"] == "incomplete"
    assert isinstance(c.get("indent"), str), c
    assert status("x = = 1")["status"] == "invalid"
    assert status("x = 1")["status"] == "complete"
    assert status("1 + 1")["status"] == "complete"
    assert status("function f()\n  return 1")["status"] == "incomplete"


def test_history_tail_range_and_search(kernel):
    kc = kernel.kc
    codes = ["a = 1", "a + 10", "b = a * 2", "a + 20"]
    for code in codes:
        execute_ok(kc, code)
    execute_ok(kc, "not_stored = 1", store_history=False)

    def hist(**kw):
        kw.setdefault("output", False)
        kw.setdefault("raw", True)
        res = run_request(kc, kc.history(**kw))
        assert res.content["status"] == "ok", res.content
        return res.content["history"]

    tail = hist(hist_access_type="tail", n=4)
    assert [e[2] for e in tail] == codes
    session = tail[0][0]
    lines = [e[1] for e in tail]
    assert lines == list(range(lines[0], lines[0] + 4)), lines

    with_output = hist(hist_access_type="tail", n=1, output=True)
    assert len(with_output) == 1 and len(with_output[0][2]) == 2
    assert with_output[0][2][0] == "a + 20"

    rng = hist(hist_access_type="range", session=session, start=lines[1], stop=lines[1] + 2)
    assert [e[2] for e in rng] == ["a + 10", "b = a * 2"]
    assert [e[1] for e in rng] == [lines[1], lines[1] + 1]

    found = hist(hist_access_type="search", pattern="a + *")
    assert [e[2] for e in found] == ["a + 10", "a + 20"]
    found = hist(hist_access_type="search", pattern="a + *", n=1)
    assert [e[2] for e in found] == ["a + 20"]

    execute_ok(kc, "a + 10")
    found = hist(hist_access_type="search", pattern="a + 1?", unique=True)
    assert [e[2] for e in found] == ["a + 10"]
    found = hist(hist_access_type="search", pattern="a + 1?")
    assert [e[2] for e in found] == ["a + 10", "a + 10"]


def test_comm_info_and_unknown_comm_open(kernel):
    kc = kernel.kc
    res = run_request(kc, kc.comm_info())
    assert res.content["status"] == "ok"
    assert res.content["comms"] == {}
    res = run_request(kc, kc.comm_info(target_name="jupyter.widget"))
    assert res.content["comms"] == {}

    comm_id = uuid.uuid4().hex
    drain(kc.get_iopub_msg)
    send_shell(kc, "comm_open", {"comm_id": comm_id, "target_name": "no.such.target", "data": {}})
    close = wait_iopub(kc, lambda m: m["msg_type"] == "comm_close", timeout=10)
    assert close["content"]["comm_id"] == comm_id
    assert execute_ok(kc, "1 + 1").result_text == "2"


# ---------------------------------------------------------------------------------------------
# kernels started with `llmspell kernel start --id`
# ---------------------------------------------------------------------------------------------


def test_kernel_start_writes_a_usable_connection_file(id_kernels):
    k = id_kernels.start("files")
    info = k.connection_info()
    assert info["transport"] == "tcp"
    assert info["ip"] == "127.0.0.1"
    assert info["signature_scheme"] == "hmac-sha256"
    assert isinstance(info["key"], str) and len(info["key"]) >= 32
    ports = [info[f"{c}_port"] for c in ("shell", "iopub", "stdin", "control", "hb")]
    assert all(isinstance(p, int) and p > 0 for p in ports) and len(set(ports)) == 5
    assert info.get("kernel_name"), info
    assert stat.S_IMODE(k.conn_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(k.kernels_dir.stat().st_mode) & 0o077 == 0, "kernels dir readable by others"
    assert k.lock_file.exists()

    kc = k.client()
    assert execute_ok(kc, "1 + 1").result_text == "2"

    other = id_kernels.start("files2")
    assert other.connection_info()["key"] != info["key"], "two kernels share a key"


def test_second_kernel_with_the_same_id_refuses_to_start(id_kernels):
    first = id_kernels.start("dup")
    before = first.conn_file.read_text()
    second = id_kernels.start("dup", wait=False)
    try:
        rc = second.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError("a second kernel with a live id kept running") from None
    assert rc != 0
    err = second.stderr().strip()
    assert err and len(err.splitlines()) == 1, f"expected one line on stderr, got {err!r}"
    assert "dup" in err
    assert first.alive()
    assert first.conn_file.read_text() == before


def test_shutdown_request_on_control_removes_the_connection_file(id_kernel):
    k = id_kernel
    info = k.connection_info()
    kc = k.client()
    assert k.conn_file.exists() and k.lock_file.exists()
    msg_id = send_control(kc, "shutdown_request", {"restart": False})
    reply = get_reply(kc, msg_id, timeout=10, channel="control")
    assert reply["msg_type"] == "shutdown_reply"
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["restart"] is False
    kc.stop_channels()
    assert k.wait_exit(10), "the kernel did not exit after shutdown_request"
    if k.pid == k.proc.pid:
        assert k.proc.returncode == 0, k.stderr()
    assert not k.conn_file.exists(), "connection file left behind"
    assert not k.lock_file.exists(), "lock file left behind"
    for c in ("shell", "iopub", "stdin", "control", "hb"):
        assert port_is_free(info["ip"], info[f"{c}_port"]), f"{c} port still bound"


def test_shutdown_with_restart_is_echoed(id_kernel):
    kc = id_kernel.client()
    msg_id = send_control(kc, "shutdown_request", {"restart": True})
    reply = get_reply(kc, msg_id, timeout=10, channel="control")
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["restart"] is True
    kc.stop_channels()
    assert id_kernel.wait_exit(10)
    assert not id_kernel.conn_file.exists()


def test_shutdown_request_on_shell_is_honoured(kernel):
    kc = kernel.kc
    msg_id = send_shell(kc, "shutdown_request", {"restart": False})
    reply = get_reply(kc, msg_id, timeout=10)
    assert reply["msg_type"] == "shutdown_reply"
    assert reply["content"]["restart"] is False
    assert wait_until(lambda: not kernel.km.is_alive(), 10), "kernel still alive after shell shutdown"


def test_sigterm_shuts_down_cleanly(id_kernel):
    k = id_kernel
    k.client()
    os.kill(k.pid, signal.SIGTERM)
    assert k.wait_exit(10), "the kernel did not exit on SIGTERM"
    if k.pid == k.proc.pid:
        assert k.proc.returncode == 0, f"exit code {k.proc.returncode}: {k.stderr()}"
    assert not k.conn_file.exists()
    assert not k.lock_file.exists()


def test_idle_timeout_shuts_the_kernel_down(id_kernels):
    k = id_kernels.start("idle", extra_args=["--idle-timeout", "2"])
    kc = k.client()
    assert execute_ok(kc, "1").result_text == "1"
    kc.stop_channels()
    assert k.wait_exit(15), "the kernel ignored --idle-timeout 2"
    assert not k.conn_file.exists()


def test_memory_limit_fails_the_cell_not_the_kernel(id_kernels):
    k = id_kernels.start("mem", extra_args=["--memory-limit", "64"])
    kc = k.client()
    execute_ok(kc, "kept = 'yes'")
    # Bounded (about 1 GB without a limit) so a kernel that ignores the limit fails, not the machine.
    res = execute(kc, 'local t = {} for i = 1, 5e6 do t[i] = string.rep("x", 100) .. i end', timeout=90)
    assert res.status == "error", res.describe()
    assert len(res.errors) == 1
    assert k.alive()
    assert execute_ok(kc, "kept").result_text == '"yes"'


def test_idle_kernel_uses_no_cpu(id_kernel):
    import psutil

    kc = id_kernel.client()
    execute_ok(kc, "1 + 1")
    proc = psutil.Process(id_kernel.pid)
    time.sleep(0.5)
    before = proc.cpu_times()
    time.sleep(3)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    assert used < 0.15, f"an idle kernel used {used:.2f} s of CPU in 3 s"
