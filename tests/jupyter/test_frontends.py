"""What Jupyter front ends see around the kernel: its logs on their screen, the kernelspec's logos,
and papermill parameters for Lua notebooks (through contrib/papermill, installed into the venv by
tests/requirements.txt as a user installs it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from conftest import KERNELSPEC_DIR, LLMSPELL_BIN


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_a_kernel_jupyter_launched_logs_only_warnings_named_by_its_connection_file(tmp_path):
    # ip 0.0.0.0 makes the kernel warn (anyone reachable could connect): that warning must reach
    # stderr, named by the connection file; the INFO lines (listening, shutting down) must not.
    conn = tmp_path / "kernel-0b1c2d3e.json"
    shell, iopub, stdin, control, hb = _free_ports(5)
    write_connection_file(
        str(conn), ip="0.0.0.0", shell_port=shell, iopub_port=iopub, stdin_port=stdin,
        control_port=control, hb_port=hb, key=b"secret-key",
    )
    env = {k: v for k, v in os.environ.items() if k != "LLMSPELL_LOG"}
    proc = subprocess.Popen(
        [LLMSPELL_BIN, "kernel", "start", "--connection-file", str(conn)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    kc = BlockingKernelClient(connection_file=str(conn))
    kc.load_connection_file()
    kc.ip = "127.0.0.1"
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive("print('hello')", timeout=60)
        assert reply["content"]["status"] == "ok"
        kc.shutdown()
        _, err = proc.communicate(timeout=60)
    finally:
        kc.stop_channels()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [l for l in err.splitlines() if l.strip()]
    assert lines, "the binding warning is missing"
    assert all("WARN" in l or "ERROR" in l for l in lines), f"only warnings on a launcher's stderr: {lines}"
    assert any("kernel-0b1c2d3e" in l and "0.0.0.0" in l for l in lines), lines
    assert not any("kernel default" in l or "listening" in l for l in lines), lines


def test_the_kernelspec_carries_the_logos_jupyterlab_shows():
    spec = json.loads((KERNELSPEC_DIR / "kernel.json").read_text())
    assert spec["language"] == "lua"
    for name, size in [("logo-32x32.png", 32), ("logo-64x64.png", 64)]:
        data = (KERNELSPEC_DIR / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (size, size), name
    svg = (KERNELSPEC_DIR / "logo-svg.svg").read_text()
    assert svg.lstrip().startswith("<svg") and "</svg>" in svg
    # And Jupyter's own kernelspec API finds them, as JupyterLab's server does.
    from jupyter_client.kernelspec import KernelSpecManager

    resources = KernelSpecManager().get_all_specs()["llmspell"]["resource_dir"]
    assert {"logo-32x32.png", "logo-64x64.png", "logo-svg.svg"} <= set(os.listdir(resources))


def _parameterised_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "llmspell", "display_name": "Lua 5.4 (llmspell)", "language": "lua"}
    nb.metadata["language_info"] = {"name": "lua"}
    params = nbformat.v4.new_code_cell('n = 1\nname = "default"\nflag = false\nitems = {}\nopts = {}\nnothing = 1')
    params.metadata["tags"] = ["parameters"]
    show = nbformat.v4.new_code_cell(
        "print(n * 2, math.type(n), name, #name, flag, nothing == nil, #items, items[3][1], opts.mode, opts['a key'], ratio)"
    )
    nb.cells = [params, show]
    nbformat.write(nb, str(path))


def test_papermill_injects_lua_parameters(tmp_path):
    src, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    _parameterised_notebook(src)
    papermill = Path(sys.executable).parent / "papermill"
    cmd = [
        str(papermill), str(src), str(out), "--kernel", "llmspell",
        "-p", "n", "21", "-p", "name", 'say "hi"\\n', "-p", "flag", "True", "-p", "nothing", "None",
        "-p", "ratio", "0.5",
        "-y", 'items: [1, "two", [3]]\nopts: {mode: fast, "a key": null}',
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    nb = nbformat.read(str(out), as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert injected.source.startswith("-- Parameters"), injected.source
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    assert text == '42\tinteger\tsay "hi"\\n\t10\ttrue\ttrue\t3\t3\tfast\tnil\t0.5\n', text
    # The kernel's INFO logs did not land in papermill's output.
    assert "listening" not in done.stderr and "INFO" not in done.stderr, done.stderr[-2000:]
