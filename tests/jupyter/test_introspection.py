"""Help, inspect, complete, is_complete, history and comms through ``jupyter_client``.

Kernels come from two places (fixtures in conftest.py):

* ``kernel``: started by ``jupyter_client.KernelManager`` from the installed ``llmspell``
  kernelspec (``llmspell kernel start --connection-file ...``),
* ``id_kernel`` / ``id_kernels``: started as ``llmspell kernel start --id ID`` with a private
  ``LLMSPELL_HOME``; clients connect with the connection file the kernel wrote.

Every wait has a timeout; conftest's watchdog fails any test that still hangs.
"""

from __future__ import annotations

import uuid

from client_helpers import wait_iopub
from conftest import (
    drain,
    execute_ok,
    run_request,
    send_shell,
)


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


def test_completion_and_inspect_know_what_only_the_code_says(kernel, tmp_path):
    # One engine: the language server's analysis adds, to the session's answers, the members of a
    # module a cell requires before it ran, a function's doc comment, and the state store's keys.
    kc = kernel.kc
    (tmp_path / "cellmod.lua").write_text(
        "local M = {}\n---Only the file knows.\nfunction M.only_in_module(x) return x end\nreturn M\n")
    execute_ok(kc, f"package.path = '{tmp_path}/?.lua;' .. package.path state.set('intro_key', 1)")
    code = "local h = require('cellmod')\nh.only_"
    c = complete(kc, code)
    assert c["matches"] == ["h.only_in_module"], c
    assert (c["cursor_start"], c["cursor_end"]) == (len(code) - 7, len(code))
    ins = run_request(kc, kc.inspect("local h = require('cellmod')\nh.only_in_module"))
    assert ins.content["found"] and "Only the file knows." in ins.content["data"]["text/plain"], ins.content
    code = "---Adds one.\nlocal function inc(x) return x + 1 end\nprint(inc("
    ins = run_request(kc, kc.inspect(code))
    assert ins.content["found"] and "Adds one." in ins.content["data"]["text/plain"], ins.content
    c = complete(kc, 'print(state.get("intro_')
    assert c["matches"] == ["intro_key"], c
    execute_ok(kc, "state.delete('intro_key')")
