"""`llmspell --remote URL` against a real Jupyter Kernel Gateway and a real Jupyter Server, both on
127.0.0.1 with a token, launching the llmspell kernelspec conftest installed (the debug binary).

The servers run with an LLMSPELL_HOME of their own (the kernel's side); each CLI call gets a fresh
one, so "nothing written to the local kernels/ directory" is checked on the client's home alone.
No test asserts a duration: waits are on events (a line printed, a file, a process gone).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from conftest import LLMSPELL_BIN, TMP_ROOT, wait_until

TOKEN = "remote-test-token"
START_TIMEOUT = 90.0
CLI_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A Jupyter Server or Kernel Gateway process and its URL."""

    def __init__(self, kind: str, tls: tuple[Path, Path, Path] | None = None):
        self.kind = kind
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.cafile = tls[0] if tls else None
        self.home = TMP_ROOT / f"server-home-{kind}"
        self.log = open(TMP_ROOT / f"{kind}.log", "w")
        env = dict(os.environ, LLMSPELL_HOME=str(self.home))
        common = [f"--ip=127.0.0.1", f"--port={self.port}"]
        if kind == "gateway":
            cmd = [sys.executable, "-m", "jupyter", "kernelgateway", *common,
                   f"--KernelGatewayApp.auth_token={TOKEN}",
                   "--JupyterWebsocketPersonality.list_kernels=True"]
        else:
            root = TMP_ROOT / "server-root"
            root.mkdir(exist_ok=True)
            cmd = [sys.executable, "-m", "jupyter", "server", *common, "--no-browser", "--allow-root",
                   f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}"]
            if tls:
                cmd += [f"--ServerApp.certfile={tls[1]}", f"--ServerApp.keyfile={tls[2]}"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_until(self.ready, START_TIMEOUT, interval=0.2):
            self.stop()
            raise RuntimeError(f"{kind} did not start; see {self.log.name}")

    def api(self, path: str, method: str = "GET") -> int:
        req = urllib.request.Request(self.url + path, method=method,
                                     headers={"Authorization": f"token {TOKEN}"})
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.cafile)) if self.cafile else None
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} exited; see {self.log.name}")
        try:
            return self.api("/api/kernelspecs") == 200
        except OSError:
            return False

    def kernel_pid(self, kernel_id: str) -> int | None:
        """The pid of the kernel process the server launched for kernel_id."""
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if any(kernel_id in part for part in p.cmdline()):
                    return p.pid
            except psutil.Error:
                pass
        return None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def gateway():
    s = Server("gateway")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def jupyter_server():
    s = Server("server")
    yield s
    s.stop()


@pytest.fixture(params=["gateway", "server"])
def any_server(request):
    return request.getfixturevalue("gateway" if request.param == "gateway" else "jupyter_server")


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "client-home"


def cli_env(home: Path, **extra: str) -> dict:
    env = dict(os.environ, LLMSPELL_HOME=str(home), **extra)
    for k in ("LLMSPELL_REMOTE", "LLMSPELL_TOKEN", "LLMSPELL_KERNELSPEC"):
        if k not in extra:
            env.pop(k, None)
    return env


def cli(server, home: Path, *args: str, stdin: str | None = None, token: str = TOKEN, **extra: str):
    cmd = [LLMSPELL_BIN, "--remote", server.url, "--token", token, *args]
    return subprocess.run(cmd, input=stdin if stdin is not None else "", capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, env=cli_env(home, **extra))


def no_local_kernels(home: Path) -> None:
    kernels = home / "kernels"
    assert not kernels.exists() or not any(kernels.iterdir()), list(kernels.iterdir())


def test_exec_twice_shares_one_remote_kernel(any_server, home):
    first = cli(any_server, home, "--kernel", "share", "exec", "x = 6*7")
    assert first.returncode == 0, first.stderr
    second = cli(any_server, home, "--kernel", "share", "exec", "print(x)")
    assert (second.returncode, second.stdout) == (0, "42\n"), second.stderr
    no_local_kernels(home)
    assert any((home / "remotes").iterdir()), "the name is remembered per server"


def test_the_token_from_the_environment_and_a_file(gateway, home, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = cli_env(home, LLMSPELL_REMOTE=gateway.url)
    r = subprocess.run([LLMSPELL_BIN, "--token-file", str(token_file), "exec", "print(1)"],
                       capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env)
    assert (r.returncode, r.stdout) == (0, "1\n"), r.stderr
    env["LLMSPELL_TOKEN"] = TOKEN
    r = subprocess.run([LLMSPELL_BIN, "exec", "print(2)"], capture_output=True, text=True,
                       timeout=CLI_TIMEOUT, env=env)
    assert (r.returncode, r.stdout) == (0, "2\n"), r.stderr


def test_run_with_args_and_stdin(gateway, home, tmp_path):
    script = tmp_path / "script.lua"
    script.write_text("#!/usr/bin/env llmspell\n"
                      "print(arg[0] == ..., select('#', ...), ...)\n"
                      "print(io.read('l'))\n"
                      "print(io.read('a'))\n"
                      "leaked = true\n")
    r = cli(gateway, home, "run", str(script), "a b", "c", stdin="first line\nthe rest\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "false\t2\ta b\tc\nfirst line\nthe rest\n\n"
    leaked = cli(gateway, home, "exec", "print(leaked)")
    assert leaked.stdout == "nil\n", "a run's globals stay in the run"
    bad = tmp_path / "bad.lua"
    bad.write_text("print('before')\nerror('boom')\n")
    r = cli(gateway, home, "run", str(bad))
    assert (r.returncode, r.stdout) == (1, "before\n")
    assert "bad.lua:2: boom" in r.stderr
    no_local_kernels(home)


def test_output_arrives_while_the_cell_runs(gateway, home, tmp_path):
    gate = tmp_path / "gate"
    code = ("print('first')\n"
            f"while not io.open({str(gate)!r}) do end\n"
            "print('second')")
    p = subprocess.Popen([LLMSPELL_BIN, "--remote", gateway.url, "--token", TOKEN, "exec", code],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=cli_env(home))
    try:
        assert p.stdout.readline() == "first\n"  # while the cell still waits for the gate
        gate.write_text("")
        out, err = p.communicate(timeout=CLI_TIMEOUT)
        assert (p.returncode, out) == (0, "second\n"), err
    finally:
        gate.touch()
        if p.poll() is None:
            p.kill()


def test_a_command_queued_behind_another_clients_cell_says_so(any_server, home, tmp_path):
    gate = tmp_path / "gate"
    code = f"print('started') io.stdout:flush() while not io.open({str(gate)!r}) do end"
    first = subprocess.Popen([LLMSPELL_BIN, "--remote", any_server.url, "--token", TOKEN, "--kernel", "queue",
                              "exec", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=cli_env(home))
    second = None
    try:
        assert first.stdout.readline() == "started\n"
        second = subprocess.Popen([LLMSPELL_BIN, "--remote", any_server.url, "--token", TOKEN, "--kernel",
                                   "queue", "exec", "print('second')"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(home))
        notice = second.stderr.readline()  # before the gate opens: the second command still waits
        assert notice.startswith("llmspell: waiting: the kernel is running"), notice
        assert "Ctrl-C to give up" in notice
        gate.write_text("")
        out, err = second.communicate(timeout=CLI_TIMEOUT)
        assert (second.returncode, out) == (0, "second\n"), err
        assert first.wait(timeout=CLI_TIMEOUT) == 0
    finally:
        gate.touch()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()


def test_ctrl_c_interrupts_the_remote_cell(gateway, home):
    p = subprocess.Popen([LLMSPELL_BIN, "--remote", gateway.url, "--token", TOKEN, "--kernel", "intr",
                          "exec", "print('started') while true do end"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=cli_env(home))
    try:
        assert p.stdout.readline() == "started\n"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=CLI_TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "Interrupted" in err
    after = cli(gateway, home, "--kernel", "intr", "exec", "print('still here')")
    assert after.stdout == "still here\n", "the kernel lives on"


def test_a_wrong_token_is_refused(any_server, home):
    r = cli(any_server, home, "exec", "print(1)", token="wrong")
    assert r.returncode == 1
    assert "the server refused the token" in r.stderr
    no_local_kernels(home)


def test_an_unreachable_server_names_the_url_and_the_os_error(home):
    url = f"http://127.0.0.1:{free_port()}"
    r = subprocess.run([LLMSPELL_BIN, "--remote", url, "exec", "1"], capture_output=True, text=True,
                       timeout=CLI_TIMEOUT, env=cli_env(home))
    assert r.returncode == 1
    assert f"cannot reach {url}" in r.stderr and "refused" in r.stderr.lower()


def test_a_missing_kernelspec_says_how_to_install_it(gateway, home):
    r = cli(gateway, home, "--kernel", "nospec", "exec", "1", LLMSPELL_KERNELSPEC="no-such-spec")
    assert r.returncode == 1
    assert "no no-such-spec kernelspec" in r.stderr and "llmspell kernel install" in r.stderr


@pytest.mark.parametrize("fmt,shown", [("json", "json"), ("v1", "v1.kernel.websocket.jupyter.org")])
def test_both_websocket_formats(any_server, home, fmt, shown):
    r = cli(any_server, home, "--ws-format", fmt, "repl",
            stdin=".kernel\nprint(io.read())\nfrom stdin\nprint('é' .. 1)\n")
    assert r.returncode == 0, r.stderr
    assert f"(websocket {shown})" in r.stdout
    assert "from stdin\n" in r.stdout and "é1\n" in r.stdout


def test_v1_is_chosen_when_offered(any_server, home):
    r = cli(any_server, home, "repl", stdin=".kernel\n")
    assert "(websocket v1.kernel.websocket.jupyter.org)" in r.stdout, r.stdout + r.stderr


def test_kernel_verbs_and_stop_ends_the_process(any_server, home):
    started = cli(any_server, home, "kernel", "start", "verbs")
    assert started.returncode == 0, started.stderr
    name, kernel_id, url = started.stdout.strip().split("\t")
    assert (name, url) == ("verbs", any_server.url)
    assert wait_until(lambda: any_server.kernel_pid(kernel_id) is not None, 30)
    pid = any_server.kernel_pid(kernel_id)
    status = cli(any_server, home, "kernel", "status", "verbs")
    assert status.returncode == 0 and kernel_id in status.stdout
    listed = cli(any_server, home, "kernel", "list")
    assert kernel_id in listed.stdout
    assert cli(any_server, home, "kernel", "interrupt", "verbs").returncode == 0
    stopped = cli(any_server, home, "kernel", "stop", "verbs")
    assert stopped.returncode == 0, stopped.stderr
    assert any_server.api(f"/api/kernels/{kernel_id}") == 404
    assert wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30)
    assert cli(any_server, home, "kernel", "status", "verbs").returncode == 1
    assert cli(any_server, home, "kernel", "stop", "verbs").returncode == 1
    no_local_kernels(home)


class DroppingProxy:
    """A TCP proxy in front of the server whose connections can all be cut at once."""

    def __init__(self, target_port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.target_port = target_port
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.conns += [client, upstream]
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(a: socket.socket, b: socket.socket):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_all(self):
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def close(self):
        self.listener.close()
        self.drop_all()


def test_a_dropped_websocket_reconnects_without_losing_output(jupyter_server, home, tmp_path):
    proxy = DroppingProxy(jupyter_server.port)
    gate = tmp_path / "gate"
    code = ("print('before')\n"
            f"while not io.open({str(gate)!r}) do end\n"
            "print('after')")
    p = subprocess.Popen([LLMSPELL_BIN, "--remote", proxy.url, "--token", TOKEN, "exec", code],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=cli_env(home))
    try:
        assert p.stdout.readline() == "before\n"
        accepted = proxy.accepted
        log = Path(jupyter_server.log.name)
        buffering = log.read_text().count("Starting buffering")
        proxy.drop_all()
        # Once the server has seen the drop it buffers for our session: 'after' is printed then,
        # before or while the CLI comes back, and must reach it all the same.
        assert wait_until(lambda: log.read_text().count("Starting buffering") > buffering, 30)
        gate.write_text("")
        out, err = p.communicate(timeout=CLI_TIMEOUT)
        assert (p.returncode, out) == (0, "after\n"), err + log.read_text()[-3000:]
        assert proxy.accepted > accepted, "it reconnected"
    finally:
        gate.touch()
        if p.poll() is None:
            p.kill()
        proxy.close()


def test_a_kernel_killed_mid_cell_ends_the_command(gateway, home):
    started = cli(gateway, home, "kernel", "start", "doomed")
    kernel_id = started.stdout.split("\t")[1]
    p = subprocess.Popen([LLMSPELL_BIN, "--remote", gateway.url, "--token", TOKEN, "--kernel", "doomed",
                          "exec", "print('started') while true do end"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=cli_env(home))
    try:
        assert p.stdout.readline() == "started\n"
        pid = gateway.kernel_pid(kernel_id)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        out, err = p.communicate(timeout=CLI_TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1
    assert "the kernel died while running the code" in err
    cli(gateway, home, "kernel", "stop", "doomed")


def make_certificates(d: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate it signed for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=llmspell test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                           "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext")
    return d / "ca.pem", d / "server.pem", d / "server.key"


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl to make a test CA")
def test_https_with_a_private_ca(home, tmp_path):
    server = Server("server", tls=make_certificates(tmp_path))
    try:
        ok = cli(server, home, "--cacert", str(server.cafile), "exec", "print(6*7)")
        assert (ok.returncode, ok.stdout) == (0, "42\n"), ok.stderr
        untrusted = cli(server, home, "exec", "print(1)")
        assert untrusted.returncode == 1
        assert "certificate" in untrusted.stderr.lower(), untrusted.stderr
    finally:
        server.stop()


def test_remote_options_may_follow_the_command(gateway, home):
    r = subprocess.run([LLMSPELL_BIN, "kernel", "list", "--remote", gateway.url, "--token", TOKEN],
                       capture_output=True, text=True, timeout=CLI_TIMEOUT, env=cli_env(home))
    assert r.returncode == 0, r.stderr
    r = subprocess.run([LLMSPELL_BIN, "exec", "print(3)", "--remote", gateway.url, f"--token={TOKEN}"],
                       capture_output=True, text=True, timeout=CLI_TIMEOUT, env=cli_env(home))
    assert (r.returncode, r.stdout) == (0, "3\n"), r.stderr


def test_remote_options_without_a_url_are_a_usage_error(home):
    r = subprocess.run([LLMSPELL_BIN, "--token", "x", "exec", "1"], capture_output=True, text=True,
                       timeout=CLI_TIMEOUT, env=cli_env(home))
    assert r.returncode == 2 and "need --remote URL" in r.stderr
    r = subprocess.run([LLMSPELL_BIN, "--remote", "http://127.0.0.1:1", "--connect", "x.json", "exec", "1"],
                       capture_output=True, text=True, timeout=CLI_TIMEOUT, env=cli_env(home))
    assert r.returncode == 2 and "either --remote or --connect" in r.stderr


# --------------------------------------------------------------------------------------------
# `run`: isolated in a process of its own on the kernel's host (metadata llmspell.run)
# --------------------------------------------------------------------------------------------


def test_a_remote_run_does_not_touch_the_session(any_server, home, tmp_path):
    assert cli(any_server, home, "--kernel", "iso", "exec", "g = 1").returncode == 0
    script = tmp_path / "globals.lua"
    script.write_text("print(g)\ng = 2\n")
    r = cli(any_server, home, "--kernel", "iso", "run", str(script))
    assert (r.returncode, r.stdout) == (0, "nil\n"), r.stderr
    after = cli(any_server, home, "--kernel", "iso", "exec", "print(g)")
    assert after.stdout == "1\n", after.stderr
    no_local_kernels(home)


def test_a_remote_run_exits_with_its_own_code(gateway, home, tmp_path):
    script = tmp_path / "exit.lua"
    script.write_text("io.write('bye\\n')\nos.exit(3)\n")
    r = cli(gateway, home, "run", str(script))
    assert (r.returncode, r.stdout) == (3, "bye\n"), r.stderr
    script.write_text("os.exit(false)")
    assert cli(gateway, home, "run", str(script)).returncode == 1


def test_a_remote_run_gets_arg_and_stdin_and_keeps_stderr_apart(gateway, home, tmp_path):
    script = tmp_path / "args.lua"
    # arg as lua's: its most negative entry is the interpreter, the kernel's own llmspell binary on
    # its host (the client's path means nothing there), then lua's options; never `run`.
    script.write_text("print(arg[-4], arg[-3], arg[-2], arg[-1], arg[1], arg[2], #arg, ...)\n"
                      "print(arg[0]:match('[^/]*$'))\n"
                      "io.stderr:write('to stderr\\n')\n"
                      "io.write(io.read('a'))\n")
    r = cli(gateway, home, "run", "-e", "x = 1", str(script), "x", "y z", stdin="line 1\nline 2\n")
    assert r.returncode == 0, r.stderr
    kernel_binary = os.path.realpath(LLMSPELL_BIN)  # the servers here run on this host
    assert r.stdout == f"nil\t{kernel_binary}\t-e\tx = 1\tx\ty z\t2\tx\ty z\nargs.lua\nline 1\nline 2\n"
    assert r.stderr == "to stderr\n"
    # The script from stdin, as `lua -` reads it.
    r = cli(gateway, home, "run", "-", "w", stdin="print(..., arg[0])\n")
    assert (r.returncode, r.stdout) == (0, "w\t-\n"), r.stderr
    # No script and no -e: as lua, stdin is the script.
    r = cli(gateway, home, "run", stdin="print('from stdin', #arg)\n")
    assert (r.returncode, r.stdout) == (0, "from stdin\t0\n"), r.stderr


def test_a_remote_run_error_exits_1_with_luas_message(gateway, home, tmp_path):
    script = tmp_path / "boom.lua"
    script.write_text("io.write('before\\n')\nerror('boom')\n")
    r = cli(gateway, home, "run", str(script))
    assert (r.returncode, r.stdout) == (1, "before\n"), r.stderr
    assert "boom.lua:2: boom" in r.stderr
    assert "stack traceback:" in r.stderr


def test_ctrl_c_ends_a_remote_run_as_a_local_one(gateway, home, tmp_path):
    script = tmp_path / "spin.lua"
    script.write_text("io.write('started\\n') io.stdout:flush()\nwhile true do end\n")
    p = subprocess.Popen([LLMSPELL_BIN, "--remote", gateway.url, "--token", TOKEN, "--kernel", "spin",
                          "run", str(script)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=cli_env(home))
    try:
        assert p.stdout.readline() == "started\n"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=CLI_TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1, err
    assert "interrupted!" in err and "spin.lua:2:" in err
    after = cli(gateway, home, "--kernel", "spin", "exec", "print('still here')")
    assert after.stdout == "still here\n", "the kernel lives on"


def run_request(kc, run) -> dict:
    """Sends an execute_request carrying llmspell.run metadata; the reply's content."""
    msg = kc.session.msg("execute_request",
                         {"code": "error('not isolated')", "silent": False, "store_history": False,
                          "user_expressions": {}, "allow_stdin": False, "stop_on_error": False},
                         metadata={"llmspell": {"run": run}})
    kc.shell_channel.send(msg)
    while True:
        reply = kc.get_shell_msg(timeout=CLI_TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply["content"]


@pytest.mark.parametrize("run,why", [
    ("a string", "not an object"),
    ({"argv": "llmspell run x.lua", "first_arg": 2}, "argv"),
    ({"argv": ["llmspell", "run", "x.lua"], "first_arg": 9}, "first_arg"),
    ({"argv": ["llmspell", "run", "x.lua"], "first_arg": 2, "stdin": "not base64!"}, "stdin"),
    ({"argv": ["llmspell", "run", "x.lua"], "first_arg": 2}, "its text was not sent"),
])
def test_a_malformed_run_request_gets_an_error_reply(kernel, run, why):
    content = run_request(kernel.kc, run)
    assert content["status"] == "error", content
    assert why in content["evalue"] and "\n" not in content["evalue"], content
    kernel.kc.execute("print('alive')")
    assert kernel.kc.get_shell_msg(timeout=CLI_TIMEOUT)["content"]["status"] == "ok"


def test_a_run_request_from_jupyter_client(kernel):
    run = {"argv": ["llmspell", "run", "s.lua", "a"], "first_arg": 2,
           "script": "io.write(arg[1], io.read('a')) os.exit(7)", "stdin": "aGk="}
    content = run_request(kernel.kc, run)
    assert content["status"] == "ok" and content["llmspell"]["exit"] == {"code": 7}, content


def test_a_remote_run_killed_by_a_signal_kills_the_cli_alike_and_big_output_arrives_whole(gateway, home,
                                                                                         tmp_path):
    script = tmp_path / "big.lua"
    script.write_text("io.write(('x'):rep(1 << 20), '\\n') io.stdout:flush()\n"
                      "local pid = io.open('/proc/self/stat'):read('n')\n"
                      "os.execute('kill -KILL ' .. pid)\n")
    r = cli(gateway, home, "run", str(script))
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert r.stdout == "x" * (1 << 20) + "\n"


def test_a_remote_run_refuses_stdin_too_large_to_send(gateway, home, tmp_path):
    script = tmp_path / "s.lua"
    script.write_text("print(#io.read('a'))")
    r = cli(gateway, home, "run", str(script), stdin="x" * (8 << 20))
    assert r.returncode == 1
    assert "at most 7 MiB" in r.stderr and r.stderr.count("\n") == 1, r.stderr
