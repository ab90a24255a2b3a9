"""Shared set-up for the Jupyter conformance and integration tests.

At import time (before jupyter_kernel_test or jupyter_client look up kernelspecs) this module:

* finds the kernel binary (``$LLMSPELL_BIN``, else ``target/debug/llmspell``),
* makes one private temporary directory for the whole run and points every Jupyter and llmspell
  location into it (``JUPYTER_PATH``, data/config/runtime dirs, ``IPYTHONDIR``, ``LLMSPELL_HOME``),
  so the tests never read or write the user's ``~/.llmspell`` or ``~/.local/share/jupyter``,
* installs the ``llmspell`` kernelspec there with ``llmspell kernel install --prefix``.

It also provides

* a per-phase watchdog (SIGALRM) so a kernel that never answers fails the test instead of hanging
  the run (pytest-timeout is not installed); ``@pytest.mark.timeout(SECONDS)`` overrides it,
* fixtures: ``kernel`` (a started ``KernelManager`` + ``BlockingKernelClient`` on the kernelspec),
  ``id_kernels`` (kernels started as ``llmspell kernel start --id ID`` in a private
  ``LLMSPELL_HOME``), and helpers that execute code and collect the iopub messages of that request,
* clean-up: every kernel a fixture started is shut down, and at the end of the session any child
  process still alive is reported and killed by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

import pytest

# --------------------------------------------------------------------------------------------
# Environment: runs at import time, before any kernelspec lookup.
# --------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
LLMSPELL_BIN = os.path.abspath(
    os.environ.get("LLMSPELL_BIN") or str(REPO / "target" / "debug" / "llmspell")
)
KERNEL_NAME = "llmspell"

TMP_ROOT = Path(tempfile.mkdtemp(prefix="llmspell-jupyter-"))
JUPYTER_PREFIX = TMP_ROOT / "prefix"
LLMSPELL_HOME = TMP_ROOT / "home"
KERNELSPEC_DIR = JUPYTER_PREFIX / "share" / "jupyter" / "kernels" / KERNEL_NAME

os.environ.update(
    {
        "LLMSPELL_BIN": LLMSPELL_BIN,
        "LLMSPELL_HOME": str(LLMSPELL_HOME),
        "JUPYTER_PATH": str(JUPYTER_PREFIX / "share" / "jupyter"),
        "JUPYTER_DATA_DIR": str(TMP_ROOT / "jupyter-data"),
        "JUPYTER_CONFIG_DIR": str(TMP_ROOT / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(TMP_ROOT / "jupyter-runtime"),
        "IPYTHONDIR": str(TMP_ROOT / "ipython"),
    }
)
# A user-level config path could change how jupyter console or nbclient behave.
os.environ.pop("JUPYTER_CONFIG_PATH", None)


def _install_kernelspec() -> None:
    if not os.access(LLMSPELL_BIN, os.X_OK):
        raise RuntimeError(
            f"llmspell binary not found or not executable at {LLMSPELL_BIN}; "
            "build it (`cargo build`) or set LLMSPELL_BIN"
        )
    cmd = [LLMSPELL_BIN, "kernel", "install", "--prefix", str(JUPYTER_PREFIX), "--name", KERNEL_NAME]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"`{' '.join(cmd)}` did not finish within 60 s") from e
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` exited with {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    spec = KERNELSPEC_DIR / "kernel.json"
    if not spec.is_file():
        raise RuntimeError(f"`{' '.join(cmd)}` succeeded but wrote no {spec}")


_install_kernelspec()

# --------------------------------------------------------------------------------------------
# Watchdog: no test may hang the run.
# --------------------------------------------------------------------------------------------

DEFAULT_TIMEOUT = 120.0


class WatchdogTimeout(Exception):
    """Raised in the main thread when a test phase runs longer than its limit."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "timeout(seconds): per-phase watchdog limit for this test (default 120 s)"
    )
    config.addinivalue_line("markers", "no_skip: a skip of this test is reported as a failure")
    config.addinivalue_line("markers", "lab: JupyterLab in headless Chromium (make test-lab)")


def _phase_limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker and marker.args:
        return float(marker.args[0])
    return DEFAULT_TIMEOUT


def _watchdog(item: pytest.Item, phase: str):
    limit = _phase_limit(item)

    def on_alarm(signum, frame):  # noqa: ARG001
        raise WatchdogTimeout(f"{item.nodeid}: {phase} ran longer than {limit:g} s (watchdog)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield from _watchdog(item, "setup")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield from _watchdog(item, "call")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield from _watchdog(item, "teardown")


# --------------------------------------------------------------------------------------------
# "None skipped": in the conformance module a skip is a failure.
# --------------------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    # An expected failure (xfail) is reported as skipped too: it stays what it is.
    if rep.skipped and not hasattr(rep, "wasxfail") and item.get_closest_marker("no_skip") is not None:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"{item.nodeid} was skipped, but no conformance test may be skipped: {reason}"


# --------------------------------------------------------------------------------------------
# End of session: nothing left behind.
# --------------------------------------------------------------------------------------------


def _live_children() -> list:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with ipykernel
        return []
    try:
        return [p for p in psutil.Process(os.getpid()).children(recursive=True) if p.is_running()]
    except psutil.Error:
        return []


_extra_pids: set[int] = set()  # kernels that detached from the process we started


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    import psutil

    leftovers = []
    for p in _live_children():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            leftovers.append(f"{p.pid} {' '.join(p.cmdline())}")
            p.kill()
        except psutil.Error:
            pass
    for pid in list(_extra_pids):
        try:
            p = psutil.Process(pid)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                leftovers.append(f"{pid} {' '.join(p.cmdline())}")
                p.kill()
        except psutil.Error:
            pass
    if leftovers:
        sys.stderr.write(
            "\nconftest: processes left behind by the tests were killed:\n  "
            + "\n  ".join(leftovers)
            + "\n"
        )
    shutil.rmtree(TMP_ROOT, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Message helpers
# --------------------------------------------------------------------------------------------

REPLY_TIMEOUT = 30.0


def lua_bytes(data: bytes) -> str:
    """A Lua string literal (with quotes) holding exactly these bytes."""
    return '"' + "".join(
        chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\{b:03d}" for b in data
    ) + '"'


def _png_1x1() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    idat = zlib.compress(b"\x00\xff\x00\x00")  # filter 0, one red pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PNG_BYTES = _png_1x1()
# Not a decodable picture, but JPEG-framed bytes (SOI, APP0/JFIF, EOI) with NULs and high bytes:
# the kernel must carry image bytes through base64 unchanged.
JPEG_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
SVG_TEXT = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'


@dataclass
class Result:
    """What one request produced: its reply and the iopub messages whose parent is the request."""

    msg_id: str
    reply: dict[str, Any] | None
    iopub: list[dict[str, Any]] = field(default_factory=list)
    other_iopub: list[dict[str, Any]] = field(default_factory=list)

    @property
    def content(self) -> dict[str, Any]:
        assert self.reply is not None, "no reply received"
        return self.reply["content"]

    @property
    def status(self) -> str:
        return self.content["status"]

    @property
    def types(self) -> list[str]:
        return [m["msg_type"] for m in self.iopub]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """iopub messages other than status and execute_input."""
        return [m for m in self.iopub if m["msg_type"] not in ("status", "execute_input")]

    def of_type(self, msg_type: str) -> list[dict[str, Any]]:
        return [m for m in self.iopub if m["msg_type"] == msg_type]

    def stream(self, name: str = "stdout") -> str:
        return "".join(
            m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == name
        )

    @property
    def stdout(self) -> str:
        return self.stream("stdout")

    @property
    def stderr(self) -> str:
        return self.stream("stderr")

    @property
    def results(self) -> list[dict[str, Any]]:
        return self.of_type("execute_result")

    @property
    def result_text(self) -> str | None:
        r = self.results
        return r[0]["content"]["data"].get("text/plain") if r else None

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.of_type("error")

    def describe(self) -> str:
        lines = [f"reply: {self.reply and self.reply['content']!r}"]
        for m in self.iopub:
            lines.append(f"iopub {m['msg_type']}: {m['content']!r}"[:500])
        return "\n".join(lines)


def collect_iopub(kc, msg_id: str, timeout: float = REPLY_TIMEOUT, other: list | None = None):
    """iopub messages whose parent is msg_id, up to and including its status idle.

    Messages of other requests (and iopub_welcome, which has no parent) go to ``other``.
    Raises AssertionError if idle for msg_id does not arrive within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    msgs: list[dict[str, Any]] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"no status idle on iopub for request {msg_id} within {timeout:g} s; "
                f"got: {[(m['msg_type'], m['content']) for m in msgs]!r}"[:3000]
            )
        try:
            msg = kc.get_iopub_msg(timeout=remaining)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            if other is not None:
                other.append(msg)
            continue
        msgs.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return msgs


def get_reply(kc, msg_id: str, timeout: float = REPLY_TIMEOUT, channel: str = "shell"):
    """The reply to msg_id on shell (or control); replies to other requests are discarded."""
    deadline = time.monotonic() + timeout
    getter = kc.get_control_msg if channel == "control" else kc.get_shell_msg
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {channel} reply to {msg_id} within {timeout:g} s")
        try:
            msg = getter(timeout=remaining)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


def run_request(kc, msg_id: str, timeout: float = REPLY_TIMEOUT, channel: str = "shell") -> Result:
    """Wait for both the reply and the iopub messages (through idle) of an already sent request."""
    res = Result(msg_id=msg_id, reply=None)
    res.iopub = collect_iopub(kc, msg_id, timeout, other=res.other_iopub)
    res.reply = get_reply(kc, msg_id, timeout, channel)
    return res


def execute(kc, code: str, timeout: float = REPLY_TIMEOUT, **kwargs: Any) -> Result:
    """Execute code and return its reply and iopub messages (until idle for that request)."""
    kwargs.setdefault("allow_stdin", False)
    msg_id = kc.execute(code, **kwargs)
    return run_request(kc, msg_id, timeout)


def execute_ok(kc, code: str, timeout: float = REPLY_TIMEOUT, **kwargs: Any) -> Result:
    """execute(), asserting the reply status is ok."""
    res = execute(kc, code, timeout, **kwargs)
    assert res.status == "ok", f"executing {code!r} failed:\n{res.describe()}"
    return res


def send_control(kc, msg_type: str, content: dict[str, Any] | None = None) -> str:
    msg = kc.session.msg(msg_type, content or {})
    kc.control_channel.send(msg)
    return msg["header"]["msg_id"]


def send_shell(kc, msg_type: str, content: dict[str, Any] | None = None) -> str:
    msg = kc.session.msg(msg_type, content or {})
    kc.shell_channel.send(msg)
    return msg["header"]["msg_id"]


def drain(channel_get, quiet: float = 0.2) -> list[dict[str, Any]]:
    """Read messages until none arrives for ``quiet`` seconds."""
    out = []
    while True:
        try:
            out.append(channel_get(timeout=quiet))
        except Empty:
            return out


def wait_until(pred, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def pid_alive(pid: int) -> bool:
    """Whether pid is a live llmspell process (a reused pid must never be signalled)."""
    try:
        import psutil

        p = psutil.Process(pid)
        return (p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                and any("llmspell" in part for part in p.cmdline()))
    except Exception:
        return False


# --------------------------------------------------------------------------------------------
# Kernels started through the kernelspec (jupyter_client.KernelManager)
# --------------------------------------------------------------------------------------------


def start_client(kc, clients: list, ready: bool = True):
    """Starts kc's channels, waits until the kernel answers (unless not ready), keeps it in clients
    (closed with the kernel) and returns it."""
    kc.start_channels()
    if ready:
        try:
            kc.wait_for_ready(timeout=30)
        except RuntimeError:
            kc.stop_channels()
            raise
    clients.append(kc)
    return kc


class SpecKernel:
    """A kernel launched from the installed kernelspec, with one ready client."""

    def __init__(self) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name=KERNEL_NAME)
        self.km.start_kernel()
        self.clients: list = []
        self.kc = self.client()

    @property
    def pid(self) -> int:
        return self.km.provisioner.pid

    @property
    def connection_file(self) -> str:
        return self.km.connection_file

    def client(self):
        """A ready client. The first is the manager's own; later ones get their own Session (and so
        their own session id and socket identity), like a second front end would."""
        if not self.clients:
            kc = self.km.client()
        else:
            from jupyter_client.blocking.client import BlockingKernelClient

            kc = BlockingKernelClient()
            kc.load_connection_info(self.km.get_connection_info())
        return start_client(kc, self.clients)

    def close(self) -> None:
        for kc in self.clients:
            try:
                kc.stop_channels()
            except Exception:
                pass
        try:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=False)
        finally:
            try:
                self.km.cleanup_resources()
            except Exception:
                pass


@pytest.fixture
def kernel():
    """A fresh llmspell kernel from the kernelspec; ``kernel.kc`` is a ready BlockingKernelClient."""
    k = SpecKernel()
    try:
        yield k
    finally:
        k.close()


# --------------------------------------------------------------------------------------------
# Kernels started by `llmspell kernel start --id ID` (own connection file in LLMSPELL_HOME)
# --------------------------------------------------------------------------------------------


class IdKernel:
    """``llmspell kernel start --id ID`` run as a subprocess with a private LLMSPELL_HOME."""

    def __init__(self, home: Path, kernel_id: str, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.home = home
        self.id = kernel_id
        self.kernels_dir = home / "kernels"
        self.conn_file = self.kernels_dir / f"{kernel_id}.json"
        self.lock_file = self.kernels_dir / f"{kernel_id}.lock"
        self.log_file = self.kernels_dir / f"{kernel_id}.log"
        self.out_path = home.parent / f"{kernel_id}.stdout"
        self.err_path = home.parent / f"{kernel_id}.stderr"
        self.args = [LLMSPELL_BIN, "kernel", "start", "--id", kernel_id] + (extra_args or [])
        env = dict(os.environ, LLMSPELL_HOME=str(home), **(env or {}))
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            self.args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            start_new_session=True,
        )
        self.clients: list = []
        self._pid: int | None = None

    # -- start-up --------------------------------------------------------------------------
    def wait_started(self, timeout: float = 30.0) -> "IdKernel":
        """Wait until the connection file exists and parses, then find the kernel's pid."""

        def ready() -> bool:
            try:
                json.loads(self.conn_file.read_text())
                return True
            except (OSError, ValueError):
                return False

        if not wait_until(lambda: ready() or self.proc.poll() not in (None, 0), timeout):
            raise AssertionError(
                f"{' '.join(self.args)} wrote no {self.conn_file} within {timeout:g} s\n"
                f"stderr: {self.stderr()}"
            )
        if not ready():
            raise AssertionError(
                f"{' '.join(self.args)} exited with {self.proc.returncode} before writing "
                f"{self.conn_file}\nstderr: {self.stderr()}"
            )
        self._pid = self._find_pid()
        return self

    def _find_pid(self) -> int:
        if self.proc.poll() is None:
            return self.proc.pid
        # The command detached the kernel and returned; find the process that holds this id.
        import psutil

        for p in psutil.process_iter(["pid", "cmdline", "environ"]):
            try:
                cmd = p.info["cmdline"] or []
                env = p.info["environ"] or {}
            except psutil.Error:
                continue
            if (
                cmd
                and os.path.basename(cmd[0]) == os.path.basename(LLMSPELL_BIN)
                and "start" in cmd
                and self.id in cmd
                and env.get("LLMSPELL_HOME") == str(self.home)
            ):
                _extra_pids.add(p.pid)
                return p.pid
        raise AssertionError(f"cannot find the process of kernel {self.id}")

    @property
    def pid(self) -> int:
        assert self._pid is not None, "wait_started() first"
        return self._pid

    def alive(self) -> bool:
        if self._pid == self.proc.pid:
            return self.proc.poll() is None
        return pid_alive(self.pid)

    def wait_exit(self, timeout: float) -> bool:
        return wait_until(lambda: not self.alive(), timeout)

    def connection_info(self) -> dict[str, Any]:
        return json.loads(self.conn_file.read_text())

    def client(self, ready: bool = True):
        from jupyter_client.blocking.client import BlockingKernelClient

        kc = BlockingKernelClient(connection_file=str(self.conn_file))
        kc.load_connection_file()
        return start_client(kc, self.clients, ready)

    def stderr(self) -> str:
        self._err.flush()
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def stdout(self) -> str:
        self._out.flush()
        try:
            return self.out_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        for kc in self.clients:
            try:
                kc.stop_channels()
            except Exception:
                pass
        if self._pid is not None and self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self.wait_exit(5):
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._out.close()
        self._err.close()


class IdKernels:
    def __init__(self, base: Path) -> None:
        self.home = base / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        self.started: list[IdKernel] = []

    def start(self, kernel_id: str | None = None, extra_args: list[str] | None = None,
              wait: bool = True, env: dict[str, str] | None = None) -> IdKernel:
        k = IdKernel(self.home, kernel_id or f"t{uuid.uuid4().hex[:8]}", extra_args, env)
        self.started.append(k)
        if wait:
            k.wait_started()
        return k

    def close(self) -> None:
        for k in self.started:
            k.close()


@pytest.fixture
def id_kernels(tmp_path):
    """Factory for kernels started with ``llmspell kernel start --id``; all closed afterwards."""
    ks = IdKernels(tmp_path)
    try:
        yield ks
    finally:
        ks.close()


@pytest.fixture
def id_kernel(id_kernels):
    """One ``llmspell kernel start --id`` kernel, started and answering."""
    return id_kernels.start()
