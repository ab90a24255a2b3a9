"""`make bench` section "gateway": a no-op execute round trip through Jupyter Kernel Gateway, the
same Python websocket client (websocket-client, which jupyter_server brings) for llmspell and
ipykernel, plus `llmspell --remote URL exec` as a whole command."""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

TOKEN = "bench-token"
NOOP = {"llmspell": ("llmspell", "local x = 1"), "ipykernel": ("python3", "pass")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, method: str = "GET", body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        text = r.read()
        return json.loads(text) if text else None


def _round_trip(ws, session: str, code: str) -> float:
    """Seconds from sending a no-op execute_request to having its reply and its idle."""
    msg_id = uuid.uuid4().hex
    msg = {"channel": "shell", "buffers": [], "metadata": {}, "parent_header": {},
           "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session,
                      "username": "bench", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
           "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                       "allow_stdin": False, "stop_on_error": True}}
    t0 = time.perf_counter()
    ws.send(json.dumps(msg))
    replied = idle = False
    while not (replied and idle):
        m = json.loads(ws.recv())
        # Jupyter Server writes without TCP_NODELAY: ACK at once or each trip waits ~40 ms for it.
        ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        if m.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        replied |= m["header"]["msg_type"] == "execute_reply"
        idle |= m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
    return time.perf_counter() - t0


def bench_gateway(bin_path: Path, env: dict, cfg: dict, tmp: str, log) -> dict:
    import websocket  # websocket-client, a dependency of jupyter_server

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    logf = open(Path(tmp) / "gateway.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "kernelgateway", "--ip=127.0.0.1", f"--port={port}",
                             f"--KernelGatewayApp.auth_token={TOKEN}"], env=env, stdout=logf, stderr=subprocess.STDOUT)
    out: dict = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                specs = _api(url, "/api/kernelspecs")["kernelspecs"]
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    return {"error": "kernel gateway did not start"}
                time.sleep(0.2)
        n = cfg["rtt_n"]
        for label, (spec, code) in NOOP.items():
            if spec not in specs:
                out[label] = {"error": f"kernelspec {spec} missing"}
                continue
            kid = _api(url, "/api/kernels", "POST", {"name": spec})["id"]
            session = uuid.uuid4().hex
            ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{kid}/channels?session_id={session}",
                                             header=[f"Authorization: token {TOKEN}"], timeout=60,
                                             # without it Nagle and delayed ACKs add ~40 ms to each trip
                                             sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))
            try:
                for _ in range(cfg["warmup"]):
                    _round_trip(ws, session, code)
                ts = [_round_trip(ws, session, code) for _ in range(n)]
            finally:
                ws.close()
                _api(url, f"/api/kernels/{kid}", "DELETE")
            out[label] = {"rtt_us_p50": statistics.median(ts) * 1e6, "n": n}
            log(f"gateway {label}: p50 {out[label]['rtt_us_p50']:.0f} µs")
        # The CLI as a user runs it: one whole `exec` command, its kernel already started.
        cli = [str(bin_path), "--remote", url, "--token", TOKEN, "--kernel", "bench", "exec", "local x = 1"]
        subprocess.run(cli, env=env, check=True, capture_output=True, timeout=120)
        ts = []
        for _ in range(cfg["cli_n"]):
            t0 = time.perf_counter()
            subprocess.run(cli, env=env, check=True, capture_output=True, timeout=120)
            ts.append(time.perf_counter() - t0)
        out["cli_exec_ms_p50"] = statistics.median(ts) * 1e3
        subprocess.run(cli[:5] + ["kernel", "stop", "bench"], env=env, capture_output=True, timeout=120)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()
    return out
