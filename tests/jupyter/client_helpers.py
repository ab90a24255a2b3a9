"""Helpers the jupyter_client tests share: waiting on iopub, collecting replies, raw ZeroMQ
sockets on a kernel's ports. The fixtures themselves are in conftest.py."""

from __future__ import annotations

import socket
import time
from queue import Empty

import zmq


SPIN = "local function spin(s) local t0 = os.clock() while os.clock() - t0 < s do end end\n"


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
