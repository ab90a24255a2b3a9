"""The kernel driven by the real ``jupyter_client`` (and raw ZeroMQ where the point is what the
wire carries): the kernelspec, kernel_info, the wire format, iopub welcomes, several clients,
signatures and malformed input, busy/idle around every request type.

Kernels come from two places (fixtures in conftest.py):

* ``kernel``: started by ``jupyter_client.KernelManager`` from the installed ``llmspell``
  kernelspec (``llmspell kernel start --connection-file ...``),
* ``id_kernel`` / ``id_kernels``: started as ``llmspell kernel start --id ID`` with a private
  ``LLMSPELL_HOME``; clients connect with the connection file the kernel wrote.

Every wait has a timeout; conftest's watchdog fails any test that still hangs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
import uuid
from queue import Empty

import pytest
import zmq
from client_helpers import (
    SPIN,
    iopub_until_idle,
    kernel_info_dict,
    raw_socket,
    shell_replies,
)
from conftest import (
    KERNEL_NAME,
    KERNELSPEC_DIR,
    LLMSPELL_BIN,
    drain,
    execute_ok,
    get_reply,
    run_request,
    send_control,
)
from jupyter_client.session import Session


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
