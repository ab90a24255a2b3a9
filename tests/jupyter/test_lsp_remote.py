"""`llmspell --remote URL lsp`: the live part through a Jupyter Server or Kernel Gateway (the
snapshot request rides the websocket's control channel), and no remote kernel is ever started."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from lsp_client import LspClient
from test_remote import TOKEN, Server, cli, cli_env


@pytest.fixture(scope="module", params=["gateway", "server"])
def server(request):
    s = Server(request.param)
    yield s
    s.stop()


def remote_kernels(server) -> list:
    req = urllib.request.Request(server.url + "/api/kernels", headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


@pytest.mark.timeout(240)
def test_the_editor_sees_a_remote_sessions_names(server, tmp_path: Path):
    home = tmp_path / "client-home"
    root = tmp_path / "ws"
    root.mkdir()
    remote = ("--remote", server.url, "--token", TOKEN, "--kernel", "lspremote")
    before = {k["id"] for k in remote_kernels(server)}
    with LspClient(remote, env=cli_env(home)) as c:
        c.initialize(root)
        u = c.open(root / "r.lua", "print(remote_cfg.port)\n")
        assert any("remote_cfg" in d["message"] for d in c.diagnostics_of(u))
        time.sleep(1.5)  # the fetcher has looked for the kernel at least once
        assert {k["id"] for k in remote_kernels(server)} == before, "the language server started a kernel"
        r = cli(server, home, "--kernel", "lspremote", "exec", "remote_cfg = {port = 1}")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 90
        while True:
            diags = c.diagnostics.get(u)
            if diags is not None and not any("remote_cfg" in d["message"] for d in diags):
                break
            assert time.monotonic() < deadline, f"the remote session's names never arrived: {diags}"
            time.sleep(0.2)
        after = {k["id"] for k in remote_kernels(server)}
        assert len(after - before) == 1, "exactly the kernel exec started, none by the language server"
        c.call("shutdown")
        c.notify("exit")
        assert c.proc.wait(30) == 0
    cli(server, home, "kernel", "stop", "lspremote")
