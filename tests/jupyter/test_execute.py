"""Execution through ``jupyter_client``: results, errors that keep the session, execution counts,
silent cells, stop_on_error; interrupts (interrupt_request and SIGINT); input through stdin.

Kernels come from two places (fixtures in conftest.py):

* ``kernel``: started by ``jupyter_client.KernelManager`` from the installed ``llmspell``
  kernelspec (``llmspell kernel start --connection-file ...``),
* ``id_kernel`` / ``id_kernels``: started as ``llmspell kernel start --id ID`` with a private
  ``LLMSPELL_HOME``; clients connect with the connection file the kernel wrote.

Every wait has a timeout; conftest's watchdog fails any test that still hangs.
"""

from __future__ import annotations

import os
import signal
import time
from queue import Empty

import pytest
import zmq
from client_helpers import (
    SPIN,
    assert_interrupted,
    iopub_until_idle,
    kernel_info_dict,
    raw_socket,
    shell_replies,
    start_running,
)
from conftest import (
    drain,
    execute,
    execute_ok,
    get_reply,
    pid_alive,
    run_request,
    send_control,
)


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
    assert c["ename"] == "LuaError"
    assert c["evalue"] == "[cell]:1: boom"
    # The traceback is what the stock `lua -e` prints for the same uncaught error (program name aside).
    assert c["traceback"] == [
        "[cell]:1: boom", "stack traceback:", "\t[C]: in function 'error'", "\t[cell]:1: in main chunk", "\t[C]: in ?",
    ], c["traceback"]
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
    assert res.content["ename"] == "LuaError", res.content
    assert "'='" in res.content["evalue"], res.content
    assert res.content["traceback"] == [res.content["evalue"]], "a syntax error has no stack, as in lua"
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
