"""Kernels started with ``llmspell kernel start --id``: connection files, one kernel per id,
shutdown on control and shell, SIGTERM, the idle timeout, the memory limit.

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
import stat
import subprocess
import time

from client_helpers import port_is_free
from conftest import (
    execute,
    execute_ok,
    get_reply,
    send_control,
    send_shell,
    wait_until,
)


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
