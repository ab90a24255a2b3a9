"""The kernel under Jupyter Enterprise Gateway (issue 15, part 2).

The first tests play Enterprise Gateway's side of its remote launch contract against
``llmspell kernel start --RemoteProcessProxy.*``: generate the RSA key pair, listen on a response
address, decrypt what the kernel sends exactly as EG's server does (``ResponseManager._decode_payload``
in ``enterprise_gateway/services/processproxies/processproxy.py``: base64 -> JSON ``{version, key,
conn_info}`` -> RSA PKCS#1 v1.5 for the AES key -> AES-ECB + unpad), connect with jupyter_client, and
talk to the comm port as ``RemoteProcessProxy._send_listener_request`` does (connect, send JSON,
close).

The last tests run Enterprise Gateway itself (its own venv, ``make venv-eg``: it pins an older
Jupyter stack) on 127.0.0.1: the unchanged kernelspec under its local process proxy, and EG's real
remote launch path (DistributedProcessProxy, which launches without ssh when its host is local).
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.PublicKey import RSA
from Cryptodome.Util.Padding import unpad

from conftest import (
    LLMSPELL_BIN,
    REPO,
    collect_iopub,
    execute_ok,
    run_request,
    wait_until,
)

LAUNCH_TIMEOUT = 60.0


# --------------------------------------------------------------------------------------------
# EG's side of the contract
# --------------------------------------------------------------------------------------------


class FakeGateway:
    """The response socket and key pair of EG's ResponseManager."""

    def __init__(self) -> None:
        self.private_key = RSA.generate(1024)  # ResponseManager.KEY_SIZE
        pem = self.private_key.publickey().export_key("PEM").decode()
        # ResponseManager.public_key: the PEM without header, footer and newlines.
        self.public_key = (
            pem.replace("-----BEGIN PUBLIC KEY-----", "")
            .replace("-----END PUBLIC KEY-----", "")
            .replace("\n", "")
        )
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def receive(self, proc: subprocess.Popen, timeout: float = LAUNCH_TIMEOUT) -> bytes:
        """The raw bytes of one connection to the response address (read until EOF)."""
        self.sock.settimeout(0.5)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the kernel exited with {proc.returncode} before answering")
            if time.monotonic() > deadline:
                raise AssertionError(f"no connection info within {timeout:g} s")
            try:
                conn, _ = self.sock.accept()
                break
            except socket.timeout:
                continue
        conn.settimeout(timeout)
        data = b""
        with conn:
            while chunk := conn.recv(1024):
                data += chunk
        return data

    def decode(self, data: bytes) -> dict:
        """EG's version-1 decoding, step by step."""
        payload = json.loads(base64.b64decode(data))
        assert payload["version"] == 1
        encrypted_key = base64.b64decode(payload["key"].encode())
        aes_key = PKCS1_v1_5.new(self.private_key).decrypt(encrypted_key, b"\x42")
        assert len(aes_key) == 16, "the AES key did not decrypt (sentinel returned)"
        cipher = AES.new(aes_key, AES.MODE_ECB)
        encrypted_info = base64.b64decode(payload["conn_info"].encode())
        return json.loads(unpad(cipher.decrypt(encrypted_info), 16).decode())

    def close(self) -> None:
        self.sock.close()


def send_listener_request(port: int, request: dict, shutdown_socket: bool = False) -> None:
    """RemoteProcessProxy._send_listener_request: connect, send the JSON, close."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.send(json.dumps(request).encode("utf-8"))
        if shutdown_socket:
            s.shutdown(socket.SHUT_WR)


def comm_port_open(port: int) -> bool:
    """EG's poll(): {"signum": 0} succeeds while the kernel lives, is refused once it is gone."""
    try:
        send_listener_request(port, {"signum": 0})
        return True
    except ConnectionRefusedError:
        return False


def port_range() -> tuple[int, int]:
    low = random.randrange(20000, 50000)
    return low, low + 1000  # EG's minimum range size


class Launched:
    """``llmspell kernel start`` run with EG's flags, the decoded info, and clients on it."""

    def __init__(self, tmp_path: Path, gateway: FakeGateway, extra: list[str] | None = None,
                 port_range_arg: str | None = None, kernel_id: str | None = None) -> None:
        self.kernel_id = kernel_id or str(uuid.uuid4())
        args = [
            LLMSPELL_BIN, "kernel", "start",
            "--RemoteProcessProxy.kernel-id", self.kernel_id,
            "--RemoteProcessProxy.response-address", gateway.address,
            "--RemoteProcessProxy.public-key", gateway.public_key,
        ]
        if port_range_arg is not None:
            args += ["--RemoteProcessProxy.port-range", port_range_arg]
        args += extra or []
        home = tmp_path / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        self.home = home
        self.err_path = tmp_path / "kernel.stderr"
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            args, env=dict(os.environ, LLMSPELL_HOME=str(home)), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self._err, start_new_session=True,
        )
        self.clients: list = []
        self.raw = gateway.receive(self.proc)
        self.info = gateway.decode(self.raw)

    def stderr(self) -> str:
        self._err.flush()
        return self.err_path.read_text(errors="replace")

    def client(self):
        from jupyter_client.blocking.client import BlockingKernelClient

        info = dict(self.info)
        # EG replaces ip with the address of the host the kernel landed on
        # (RemoteProcessProxy._setup_connection_info).
        info["ip"] = "127.0.0.1"
        for k in ("pid", "pgid", "comm_port", "kernel_id"):
            info.pop(k, None)
        kc = BlockingKernelClient()
        kc.load_connection_info(info)
        kc.start_channels()
        kc.wait_for_ready(timeout=30)
        self.clients.append(kc)
        return kc

    def close(self) -> None:
        for kc in self.clients:
            kc.stop_channels()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._err.close()


@pytest.fixture
def gateway():
    g = FakeGateway()
    yield g
    g.close()


@pytest.fixture
def launched(tmp_path):
    started: list[Launched] = []

    def launch(gateway: FakeGateway, **kwargs) -> Launched:
        k = Launched(tmp_path, gateway, **kwargs)
        started.append(k)
        return k

    yield launch
    for k in started:
        k.close()


def start_running(kc, code: str) -> str:
    """Send an execute request; return once the kernel runs it (its execute_input arrived)."""
    msg_id = kc.execute(code, allow_stdin=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = kc.get_iopub_msg(timeout=30)
        if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "execute_input":
            time.sleep(0.3)  # let the Lua thread get into the loop
            return msg_id
    raise AssertionError("the cell did not start")


# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------


def test_kernel_sends_sealed_connection_info_with_ports_in_range(gateway, launched):
    low, high = port_range()
    k = launched(gateway, port_range_arg=f"{low}..{high}")
    info = k.info
    ports = [info[p] for p in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")]
    assert all(low <= p <= high for p in ports + [info["comm_port"]]), info
    assert len(set(ports + [info["comm_port"]])) == 6, f"ports repeat: {info}"
    assert info["kernel_id"] == k.kernel_id
    assert info["pid"] == k.proc.pid
    assert info["pgid"] == os.getpgid(k.proc.pid)
    assert info["transport"] == "tcp"
    assert info["signature_scheme"] == "hmac-sha256"
    assert len(info["key"]) >= 32
    # Reachable from EG's host: all interfaces, as EG's launchers bind.
    assert info["ip"] == "0.0.0.0"
    # Nothing written where local kernels live.
    assert not list((k.home / "kernels").glob("*.json")), list((k.home / "kernels").iterdir())


def test_kernel_runs_code_interrupts_on_signum_2_and_stops_on_shutdown(gateway, launched):
    low, high = port_range()
    k = launched(gateway, port_range_arg=f"{low}..{high}")
    comm = k.info["comm_port"]
    kc = k.client()
    execute_ok(kc, "x = 6*7")
    assert execute_ok(kc, "print(x)").stdout == "42\n"

    # EG's poll: answered, and the kernel goes on.
    assert comm_port_open(comm)
    assert k.proc.poll() is None

    msg_id = start_running(kc, "while true do end")
    send_listener_request(comm, {"signum": 2})
    res = run_request(kc, msg_id, timeout=30)
    assert res.status == "error" and "Interrupt" in res.content["ename"], res.describe()
    assert execute_ok(kc, "x + 1").result_text == "43"

    # EG's shutdown_listener (after its shutdown_request): SHUT_WR, then close.
    send_listener_request(comm, {"shutdown": 1}, shutdown_socket=True)
    k.proc.wait(timeout=30)
    assert k.proc.returncode == 0, k.stderr()
    assert not comm_port_open(comm), "the comm port still answers after shutdown"


def test_malformed_comm_requests_are_ignored(gateway, launched):
    k = launched(gateway, port_range_arg="0..0")
    comm = k.info["comm_port"]
    kc = k.client()
    for junk in (b"not json", b"[1, 2]", b'{"signum": "two"}', b'{"signum": 10}', b"", b"\xff\xfe"):
        with socket.create_connection(("127.0.0.1", comm), timeout=30) as s:
            s.sendall(junk)
    assert comm_port_open(comm)
    assert k.proc.poll() is None
    assert execute_ok(kc, "1 + 1").result_text == "2"
    assert "gateway comm port" in k.stderr()


def test_sigterm_over_the_comm_port_shuts_down_cleanly(gateway, launched):
    k = launched(gateway)  # no --port-range at all: any ports
    send_listener_request(k.info["comm_port"], {"signum": 15})
    k.proc.wait(timeout=30)
    assert k.proc.returncode == 0, k.stderr()


def run_start(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(
        [LLMSPELL_BIN, "kernel", "start", *args], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, LLMSPELL_HOME=str(home), LLMSPELL_LOG="off"),
    )


def test_bad_public_key_is_one_line_and_exit_1(gateway, tmp_path):
    p = run_start(["--RemoteProcessProxy.kernel-id", "k1",
                   "--RemoteProcessProxy.response-address", gateway.address,
                   "--RemoteProcessProxy.public-key", "bm90IGEga2V5"], tmp_path)
    assert p.returncode == 1, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "public-key" in lines[0], p.stderr


def test_unreachable_response_address_is_one_line_and_exit_1(gateway, tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nobody listens there now
    p = run_start(["--RemoteProcessProxy.kernel-id", "k1",
                   "--RemoteProcessProxy.response-address", f"127.0.0.1:{port}",
                   "--RemoteProcessProxy.public-key", gateway.public_key], tmp_path)
    assert p.returncode == 1, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], p.stderr


@pytest.mark.parametrize("args, needle", [
    (["--RemoteProcessProxy.kernel-id", "k1"], "response-address is missing"),
    (["--spark-context-initialization-mode", "none"], "kernel-id is missing"),
    (["--RemoteProcessProxy.kernel-id", "k1", "--daemon"], "without --daemon"),
    (["--RemoteProcessProxy.kernel-id", "k1", "--RemoteProcessProxy.response-address",
      "{response_address}", "--RemoteProcessProxy.public-key", "x"], "Enterprise Gateway"),
    (["--RemoteProcessProxy.kernel-id", "k1", "--RemoteProcessProxy.response-address", "nohost",
      "--RemoteProcessProxy.public-key", "x"], "HOST:PORT"),
])
def test_incomplete_or_unfilled_flags_are_refused(args, needle, tmp_path):
    p = run_start(args, tmp_path)
    assert p.returncode != 0 and needle in p.stderr, p.stderr


def test_short_flag_names_of_egs_bootstrap_work_too(gateway, launched):
    """bootstrap-kernel.sh passes --kernel-id, --port-range, ... without the prefix."""
    kid = str(uuid.uuid4())
    low, high = port_range()
    k = launched(gateway, kernel_id=kid, extra=[
        "--port-range", f"{low}..{high}", "--spark-context-initialization-mode", "none",
    ])
    assert k.info["kernel_id"] == kid
    assert low <= k.info["shell_port"] <= high


# --------------------------------------------------------------------------------------------
# Enterprise Gateway itself (its own venv: `make venv-eg`)
# --------------------------------------------------------------------------------------------

EG_VENV = Path(os.environ.get("LLMSPELL_EG_VENV", REPO / "target" / "venv-eg"))
EG_BIN = EG_VENV / "bin" / "jupyter-enterprisegateway"
DISTRIBUTED = "enterprise_gateway.services.processproxies.distributed.DistributedProcessProxy"

needs_eg = pytest.mark.skipif(
    not EG_BIN.exists(), reason=f"Enterprise Gateway is not installed in {EG_VENV} (make venv-eg)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EnterpriseGateway:
    """EG on 127.0.0.1 with the llmspell kernelspec, plus one for its remote launch path."""

    def __init__(self, tmp_path: Path, low: int, high: int) -> None:
        from conftest import KERNELSPEC_DIR

        kernels = tmp_path / "share" / "jupyter" / "kernels"
        kernels.mkdir(parents=True)
        # The kernelspec `llmspell kernel install` writes, unchanged: EG's local process proxy.
        (kernels / "llmspell").mkdir()
        (kernels / "llmspell" / "kernel.json").write_text((KERNELSPEC_DIR / "kernel.json").read_text())
        # EG's remote launch: DistributedProcessProxy on this host starts the argv without ssh and
        # then speaks the same contract as on Kubernetes (response address, key, comm port).
        remote = {
            "display_name": "Lua 5.4 (llmspell, remote launch)",
            "language": "lua",
            "metadata": {"process_proxy": {"class_name": DISTRIBUTED,
                                           "config": {"remote_hosts": "localhost"}}},
            "argv": [LLMSPELL_BIN, "kernel", "start",
                     "--RemoteProcessProxy.kernel-id", "{kernel_id}",
                     "--RemoteProcessProxy.response-address", "{response_address}",
                     "--RemoteProcessProxy.public-key", "{public_key}",
                     "--RemoteProcessProxy.port-range", "{port_range}"],
        }
        (kernels / "llmspell_remote").mkdir()
        (kernels / "llmspell_remote" / "kernel.json").write_text(json.dumps(remote))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = tmp_path / "home"
        home.mkdir(mode=0o700)
        self.log_path = tmp_path / "eg.log"
        self._log = open(self.log_path, "wb")
        env = dict(
            os.environ,
            JUPYTER_PATH=str(tmp_path / "share" / "jupyter"),
            LLMSPELL_HOME=str(home),
            EG_KERNEL_LOG_DIR=str(tmp_path),
            EG_RESPONSE_IP="127.0.0.1",  # everything stays on loopback
            EG_RESPONSE_PORT=str(free_port()),
        )
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [str(EG_BIN), "--EnterpriseGatewayApp.ip=127.0.0.1",
             f"--EnterpriseGatewayApp.port={self.port}", "--EnterpriseGatewayApp.port_retries=0",
             f"--EnterpriseGatewayApp.port_range={low}..{high}", "--debug"],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not wait_until(self._up, 90, interval=0.3):
            raise AssertionError(f"Enterprise Gateway did not come up:\n{self.log()[-3000:]}")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"Enterprise Gateway exited:\n{self.log()[-3000:]}")
        try:
            return "llmspell" in self.request("GET", "/api/kernelspecs")["kernelspecs"]
        except OSError:
            return False

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=90) as r:
            text = r.read()
            return json.loads(text) if text else r.status

    def start_kernel(self, name: str) -> str:
        # EG refuses to launch kernels for root unless KERNEL_USERNAME names someone else.
        k = self.request("POST", "/api/kernels", {"name": name, "env": {"KERNEL_USERNAME": "tester"}})
        return k["id"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


class Channels:
    """The kernel websocket of EG (JSON text frames), driven synchronously."""

    def __init__(self, url: str, kernel_id: str) -> None:
        import asyncio

        from tornado.websocket import websocket_connect

        self.loop = asyncio.new_event_loop()
        self.session = uuid.uuid4().hex
        ws_url = url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels?session_id={self.session}"
        asyncio.set_event_loop(self.loop)

        async def connect():
            return await websocket_connect(ws_url)

        self.ws = self.loop.run_until_complete(asyncio.wait_for(connect(), 60))

    def send(self, channel: str, msg_type: str, content: dict) -> str:
        msg_id = uuid.uuid4().hex
        msg = {
            "channel": channel,
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session,
                       "username": "tester", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "content": content,
        }
        async def write():
            await self.ws.write_message(json.dumps(msg))

        self.loop.run_until_complete(write())
        return msg_id

    def recv(self, timeout: float) -> dict:
        import asyncio

        async def read():
            return await self.ws.read_message()

        text = self.loop.run_until_complete(asyncio.wait_for(read(), timeout))
        assert text is not None, "the websocket closed"
        return json.loads(text)

    def wait_for(self, pred, timeout: float = 60) -> list[dict]:
        """Messages until (and including) the first that satisfies pred."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(max(0.1, deadline - time.monotonic()))
            seen.append(m)
            if pred(m):
                return seen

    def execute(self, code: str, timeout: float = 60) -> tuple[dict, str]:
        """The execute_reply content and the stdout of the request (through its idle)."""
        msg_id = self.send("shell", "execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})
        reply: dict | None = None
        out = ""
        deadline = time.monotonic() + timeout
        idle = False
        while reply is None or not idle:
            m = self.recv(max(0.1, deadline - time.monotonic()))
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            if m["msg_type"] == "execute_reply":
                reply = m["content"]
            elif m["msg_type"] == "stream" and m["content"]["name"] == "stdout":
                out += m["content"]["text"]
            elif m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                idle = True
        return reply, out

    def close(self) -> None:
        import asyncio

        self.ws.close()
        self.loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def enterprise_gateway(tmp_path):
    low = random.randrange(20000, 50000)
    eg = EnterpriseGateway(tmp_path, low, low + 1000)
    eg.port_range = (low, low + 1000)
    yield eg
    eg.close()


def kernel_processes(eg: EnterpriseGateway) -> list:
    import psutil

    found = [p for p in psutil.Process(eg.proc.pid).children(recursive=True)
             if "llmspell" in " ".join(p.cmdline()) and "start" in p.cmdline()]
    # A kernel's zygote, between its fork and its exec, still shows the kernel's command line:
    # only processes whose parent is not itself a kernel are kernels.
    pids = {p.pid for p in found}
    return [p for p in found if p.ppid() not in pids]


@needs_eg
@pytest.mark.timeout(240)
def test_enterprise_gateway_runs_the_plain_kernelspec_with_its_local_process_proxy(enterprise_gateway):
    eg = enterprise_gateway
    kid = eg.start_kernel("llmspell")
    procs = kernel_processes(eg)
    assert len(procs) == 1, procs
    ch = Channels(eg.url, kid)
    try:
        reply, _ = ch.execute("x = 6*7")
        assert reply["status"] == "ok", reply
        reply, out = ch.execute("print(x)")
        assert reply["status"] == "ok" and out == "42\n", (reply, out)
    finally:
        ch.close()
    assert eg.request("DELETE", f"/api/kernels/{kid}") == 204
    assert wait_until(lambda: not any(p.is_running() and p.status() != "zombie" for p in procs), 60)


@needs_eg
@pytest.mark.timeout(300)
def test_enterprise_gateway_remote_launch_interrupt_and_shutdown(enterprise_gateway):
    """EG's own ResponseManager decrypts what the kernel sends; its interrupt and shutdown go
    through the comm port ({"signum": 2}, then SIGTERM and {"shutdown": 1})."""
    eg = enterprise_gateway
    kid = eg.start_kernel("llmspell_remote")
    log = eg.log()
    assert "Received connection info for KernelID" in log, log[-3000:]
    procs = kernel_processes(eg)
    assert len(procs) == 1, procs
    low, high = eg.port_range
    ports = [c.laddr.port for c in procs[0].net_connections(kind="tcp") if c.status == "LISTEN"]
    assert len(ports) >= 6 and all(low <= p <= high for p in ports), (ports, eg.port_range)
    ch = Channels(eg.url, kid)
    try:
        reply, _ = ch.execute("x = 6*7")
        reply, out = ch.execute("print(x)")
        assert reply["status"] == "ok" and out == "42\n", (reply, out)
        msg_id = ch.send("shell", "execute_request", {
            "code": "while true do end", "silent": False, "store_history": True,
            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        ch.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id
                    and m["msg_type"] == "execute_input")
        time.sleep(0.3)
        # The kernelspec has no interrupt_mode: EG signals, through the comm port.
        assert eg.request("POST", f"/api/kernels/{kid}/interrupt") == 204
        seen = ch.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id
                           and m["msg_type"] == "execute_reply")
        assert "Interrupt" in seen[-1]["content"].get("ename", ""), seen[-1]["content"]
        reply, out = ch.execute("print(x + 1)")
        assert out == "43\n", (reply, out)
    finally:
        ch.close()
    assert eg.request("DELETE", f"/api/kernels/{kid}") == 204
    assert wait_until(lambda: not any(p.is_running() and p.status() != "zombie" for p in procs), 60)
    assert "Signal (2) sent via gateway communication port" in eg.log()


# --------------------------------------------------------------------------------------------
# deploy/: the image's bootstrap and the kernelspecs (no Kubernetes or Docker daemon here)
# --------------------------------------------------------------------------------------------

DEPLOY = REPO / "deploy"


def test_image_bootstrap_runs_the_kernel_from_egs_environment(gateway, tmp_path):
    """deploy/bootstrap-kernel.sh with the variables EG's launch_kubernetes.py / launch_docker.py
    put in the container's environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llmspell").symlink_to(LLMSPELL_BIN)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    low, high = port_range()
    kid = str(uuid.uuid4())
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", LLMSPELL_HOME=str(home),
               KERNEL_ID=kid, RESPONSE_ADDRESS=gateway.address, PUBLIC_KEY=gateway.public_key,
               PORT_RANGE=f"{low}..{high}", KERNEL_LANGUAGE="lua",
               KERNEL_SPARK_CONTEXT_INIT_MODE="none")
    proc = subprocess.Popen(["sh", str(DEPLOY / "bootstrap-kernel.sh")], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        info = gateway.decode(gateway.receive(proc))
        assert info["kernel_id"] == kid and low <= info["shell_port"] <= high, info
        assert info["pid"] == proc.pid, "the bootstrap must exec the kernel (EG signals that pid)"
        send_listener_request(info["comm_port"], {"shutdown": 1})
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stderr.close()


def test_image_bootstrap_refuses_to_start_without_egs_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KERNEL_ID", "RESPONSE_ADDRESS")}
    p = subprocess.run(["sh", str(DEPLOY / "bootstrap-kernel.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0 and "KERNEL_ID" in p.stderr, p


@pytest.mark.parametrize("name", ["lua_kubernetes", "lua_docker"])
def test_deploy_kernelspecs_carry_egs_launch_arguments(name):
    spec = json.loads((DEPLOY / "kernelspecs" / name / "kernel.json").read_text())
    argv = spec["argv"]
    assert argv[1] == f"/usr/local/share/jupyter/kernels/{name}/scripts/{argv[1].rsplit('/', 1)[1]}"
    for flag, template in [("kernel-id", "{kernel_id}"), ("response-address", "{response_address}"),
                           ("public-key", "{public_key}"), ("port-range", "{port_range}")]:
        assert argv[argv.index(f"--RemoteProcessProxy.{flag}") + 1] == template
    proxy = spec["metadata"]["process_proxy"]
    assert proxy["config"]["image_name"]
    if EG_BIN.exists():  # the class EG will load is in the EG release we test with
        # (found, not imported: importing it wants a Docker daemon or a cluster config)
        module, cls = proxy["class_name"].rsplit(".", 1)
        code = (f"import importlib.util; src = open(importlib.util.find_spec({module!r}).origin).read(); "
                f"assert 'class {cls}(' in src")
        subprocess.run([str(EG_VENV / "bin" / "python"), "-c", code], check=True, timeout=120)


RENDER_POD = r"""
import json, sys, yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape

def yaml_safe(value):  # what EG 3.3's launch_kubernetes.py registers under that name
    if isinstance(value, str):
        return yaml.dump(value, default_style='"', width=10000).strip()
    if isinstance(value, (dict, list)):
        return yaml.dump(value, default_flow_style=True, width=10000).strip()
    return yaml.dump(value, width=10000).replace("\n...", "").strip()

env = Environment(loader=FileSystemLoader(sys.argv[1]), trim_blocks=True, lstrip_blocks=True,
                  autoescape=select_autoescape(disabled_extensions=("j2", "yaml"),
                                               default_for_string=True, default=True))
env.filters["yaml_safe"] = yaml_safe
text = env.get_template("kernel-pod.yaml.j2").render(**json.loads(sys.argv[2]))
print(json.dumps([d for d in yaml.safe_load_all(text) if d]))
"""


@needs_eg
def test_kernel_pod_template_renders_to_one_pod():
    keywords = {"kernel_id": "k-1", "kernel_pod_name": "tester-k-1", "kernel_namespace": "ns",
                "kernel_service_account_name": "default", "kernel_image": "r/llmspell-kernel:1",
                "kernel_uid": "1000", "kernel_gid": "100", "kernel_memory_limit": "1Gi",
                "kernel_volume_mounts": [{"name": "work", "mountPath": "/work"}],
                "kernel_volumes": [{"name": "work", "emptyDir": {}}]}
    out = subprocess.run(
        [str(EG_VENV / "bin" / "python"), "-c", RENDER_POD,
         str(DEPLOY / "kernelspecs" / "lua_kubernetes" / "scripts"), json.dumps(keywords)],
        capture_output=True, text=True, timeout=120, check=True).stdout
    docs = json.loads(out)
    assert [d["kind"] for d in docs] == ["Pod"]
    pod = docs[0]
    assert pod["metadata"]["labels"]["kernel_id"] == "k-1"
    c = pod["spec"]["containers"][0]
    assert c["image"] == "r/llmspell-kernel:1" and c["env"] == []
    assert c["resources"] == {"limits": {"memory": "1Gi"}}
    assert c["volumeMounts"] == [{"name": "work", "mountPath": "/work"}]
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000


KERNEL_IMAGE = os.environ.get("LLMSPELL_KERNEL_IMAGE")


@pytest.mark.skipif(not KERNEL_IMAGE, reason="set LLMSPELL_KERNEL_IMAGE to a built deploy/Dockerfile "
                    "image (and DOCKER_HOST if needed) to run a kernel in it")
@pytest.mark.timeout(300)
def test_kernel_image_launches_for_the_fake_gateway(gateway, tmp_path):
    """The image as EG's launch_docker.py / launch_kubernetes.py start it: no command, EG's
    variables in the environment. Host network, so everything stays on 127.0.0.1."""
    low, high = port_range()
    kid = str(uuid.uuid4())
    name = f"llmspell-test-{kid[:8]}"
    run = ["docker", "run", "--rm", "--name", name, "--network", "host",
           "-e", f"KERNEL_ID={kid}", "-e", f"RESPONSE_ADDRESS={gateway.address}",
           "-e", f"PUBLIC_KEY={gateway.public_key}", "-e", f"PORT_RANGE={low}..{high}",
           KERNEL_IMAGE]
    log = open(tmp_path / "container.log", "wb")
    proc = subprocess.Popen(run, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    kc = None
    try:
        info = gateway.decode(gateway.receive(proc, timeout=120))
        assert info["kernel_id"] == kid and low <= info["shell_port"] <= high, info
        from jupyter_client.blocking.client import BlockingKernelClient

        conn = {k: v for k, v in info.items() if k not in ("pid", "pgid", "comm_port", "kernel_id")}
        conn["ip"] = "127.0.0.1"
        kc = BlockingKernelClient()
        kc.load_connection_info(conn)
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        execute_ok(kc, "x = 6*7")
        assert execute_ok(kc, "print(x, io.popen('id -u'):read('l'))").stdout == "42\t1000\n"
        msg_id = start_running(kc, "while true do end")
        send_listener_request(info["comm_port"], {"signum": 2})
        res = run_request(kc, msg_id, timeout=30)
        assert res.status == "error" and "Interrupt" in res.content["ename"], res.describe()
        send_listener_request(info["comm_port"], {"shutdown": 1})
        assert proc.wait(timeout=60) == 0
    finally:
        if kc is not None:
            kc.stop_channels()
        if proc.poll() is None:
            subprocess.run(["docker", "kill", name], capture_output=True, timeout=60)
            proc.wait(timeout=60)
        log.close()
