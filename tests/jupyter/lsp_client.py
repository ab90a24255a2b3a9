"""A small scripted LSP client for `llmspell lsp`: frames JSON-RPC over the server's stdin/stdout.

Our own (not pytest-lsp) because the robustness tests must also send what no well-behaved client
sends: malformed JSON, bodies without headers, 10 MB documents, and then keep talking.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

LLMSPELL_BIN = os.environ.get("LLMSPELL_BIN") or str(
    Path(__file__).resolve().parents[2] / "target" / "debug" / "llmspell"
)


def uri(path: Path) -> str:
    return Path(path).resolve().as_uri()


class LspClient:
    """`llmspell [GLOBAL...] lsp` under our control: requests, notifications and what comes back.
    Messages the server sends us as requests (`client/registerCapability`, ...) get a null result."""

    def __init__(self, global_args: tuple[str, ...] = (), env: dict | None = None, cwd=None,
                 cmd: list[str] | None = None):
        """`cmd` runs another server instead (the bench compares with EmmyLua's)."""
        self.proc = subprocess.Popen(
            cmd or [LLMSPELL_BIN, *global_args, "lsp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self.messages: queue.Queue = queue.Queue()
        self.diagnostics: dict[str, list] = {}
        self.notes: list[dict] = []
        self._next_id = 0
        self._cond = threading.Condition()
        self._responses: dict[Any, dict] = {}
        self._answer_later: list = []
        threading.Thread(target=self._read, daemon=True).start()

    def __enter__(self) -> "LspClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the wire ------------------------------------------------------------------------------
    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    with self._cond:
                        self._cond.notify_all()
                    return
                line = line.strip()
                if not line:
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = json.loads(out.read(length))
            with self._cond:
                if "id" in body and "method" not in body:
                    self._responses[json.dumps(body["id"])] = body
                elif "id" in body:
                    self.notes.append(body)
                    items = (body.get("params") or {}).get("items") or []
                    answer = [None] * len(items) if body.get("method") == "workspace/configuration" else None
                    self._answer_later.append((body["id"], answer))
                elif body.get("method") == "textDocument/publishDiagnostics":
                    self.diagnostics[body["params"]["uri"]] = body["params"]["diagnostics"]
                    self.notes.append(body)
                else:
                    self.notes.append(body)
                self._cond.notify_all()

    def raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: dict) -> None:
        with self._cond:
            pending, self._answer_later = self._answer_later, []
        for rid, answer in pending:  # the server's own requests: answered before what we send next
            self._send({"jsonrpc": "2.0", "id": rid, "result": answer})
        self._send(message)

    def _send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.raw(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def wait_for(self, what: Callable[[], Any], timeout: float = 30.0, why: str = "") -> Any:
        """Waits until `what()` is truthy (it runs under the lock); returns its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = what()
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {why or what}; stderr: {self.stderr_so_far()}")
                if self.proc.poll() is not None and not got:
                    self._cond.wait(0.05)
                else:
                    self._cond.wait(left)

    def response(self, request_id: Any, timeout: float = 30.0) -> dict:
        key = json.dumps(request_id)
        return self.wait_for(lambda: self._responses.pop(key, None), timeout, f"the answer to {request_id}")

    def request(self, method: str, params: Any = None, timeout: float = 30.0) -> dict:
        """The whole response (result or error)."""
        self._next_id += 1
        rid = self._next_id
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return self.response(rid, timeout)

    def call(self, method: str, params: Any = None, timeout: float = 30.0) -> Any:
        """The result of a request that must succeed."""
        r = self.request(method, params, timeout)
        assert "error" not in r, r
        return r["result"]

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    # -- LSP conveniences ------------------------------------------------------------------------
    def initialize(self, root: Path | None = None, encodings: list[str] | None = None) -> dict:
        caps: dict = {"textDocument": {"publishDiagnostics": {}}}
        if encodings:
            caps["general"] = {"positionEncodings": encodings}
        params = {"processId": os.getpid(), "capabilities": caps,
                  "rootUri": uri(root) if root else None}
        result = self.call("initialize", params)
        self.notify("initialized", {})
        return result

    def open(self, path: Path, text: str, version: int = 1) -> str:
        u = uri(path)
        self.diagnostics.pop(u, None)
        self.notify("textDocument/didOpen",
                    {"textDocument": {"uri": u, "languageId": "lua", "version": version, "text": text}})
        return u

    def change(self, u: str, text: str, version: int) -> None:
        self.diagnostics.pop(u, None)
        self.notify("textDocument/didChange",
                    {"textDocument": {"uri": u, "version": version}, "contentChanges": [{"text": text}]})

    def diagnostics_of(self, u: str, timeout: float = 30.0) -> list:
        return self.wait_for(lambda: self.diagnostics.get(u) is not None and [self.diagnostics[u]],
                             timeout, f"diagnostics of {u}")[0]

    def at(self, method: str, u: str, line: int, character: int, **extra) -> Any:
        params = {"textDocument": {"uri": u}, "position": {"line": line, "character": character}, **extra}
        return self.call(f"textDocument/{method}", params)

    def labels(self, u: str, line: int, character: int) -> list[str]:
        result = self.at("completion", u, line, character)
        items = result["items"] if isinstance(result, dict) else result
        return [i["label"] for i in items]

    def stderr_so_far(self) -> str:
        return "" if self.proc.poll() is None else self.proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
