"""Start isolated `jupyter server` processes and talk to their kernels like JupyterLab."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import psutil
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from processes import readers_of
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

V1 = "v1.kernel.websocket.jupyter.org"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running `jupyter server`, with or without the extension."""

    name: str
    base_url: str
    token: str
    root_dir: Path
    process: subprocess.Popen[bytes]
    started_in: float
    folder: Path
    extension: bool

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    @property
    def journal_dir(self) -> Path:
        return self.folder / "jupyter_data_dir" / "jupyter_persist" / "journals"

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def processes(self) -> list[psutil.Process]:
        """The server and the extension's IOPub reader process (its work is the server's)."""
        server = self.ps
        return [server, *readers_of(server)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def rss(self) -> int:
        total = 0
        for process in self.processes():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total

    def request(self, path: str, method: str = "GET", body: Any = None, timeout: float = 60) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as err:
            return f"(no log: {err})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to the process group (kernels included)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(20)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def start_server(
    name: str, folder: Path, extension: bool, extra_args: list[str] | None = None
) -> Server:
    """Start `jupyter server` isolated under ``folder``; wait until /api/status answers."""
    root = folder / "root"
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for variable in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        path = folder / variable.lower()
        path.mkdir(exist_ok=True)
        env[variable] = str(path)
    port, token = free_port(), uuid.uuid4().hex
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "server",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        # INFO: the extension's "wrote <path> (cells, bytes, ms)" lines are measured.
        "--ServerApp.log_level=INFO",
    ]
    command += extra_args or []
    if not extension:
        command.append("--ServerApp.jpserver_extensions={'jupyter_persist': False}")
    log = (folder / "server.log").open("ab")
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    server = Server(name, f"http://127.0.0.1:{port}/", token, root, process, 0.0, folder, extension)
    deadline = started + 60
    while True:
        try:
            server.request("api/status", timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"{name} server did not start; see {folder / 'server.log'}"
                ) from None
            time.sleep(0.05)
    server.started_in = time.monotonic() - started
    return server


@dataclass
class Gateway:
    """A running `jupyter kernelgateway` whose kernels the gateway servers use."""

    url: str
    token: str
    process: subprocess.Popen[bytes]

    def server_args(self) -> list[str]:
        return [f"--gateway-url={self.url}", f"--GatewayClient.auth_token={self.token}"]

    def stop(self) -> None:
        stop_process(self.process)


def start_gateway(folder: Path) -> Gateway:
    """Start a Jupyter Kernel Gateway on 127.0.0.1; wait until it lists its kernels."""
    folder.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), uuid.uuid4().hex
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "kernelgateway",
        "--KernelGatewayApp.ip=127.0.0.1",
        f"--KernelGatewayApp.port={port}",
        f"--KernelGatewayApp.auth_token={token}",
        "--JupyterWebsocketPersonality.list_kernels=True",
    ]
    with (folder / "gateway.log").open("ab") as log:
        process = subprocess.Popen(
            command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    gateway = Gateway(f"http://127.0.0.1:{port}", token, process)
    deadline = time.monotonic() + 60
    while True:
        request = urllib.request.Request(
            f"{gateway.url}/api/kernels", headers={"Authorization": f"token {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2):
                return gateway
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                gateway.stop()
                raise RuntimeError(f"gateway did not start; see {folder / 'gateway.log'}") from None
            time.sleep(0.1)


def make_notebook(
    server: Server, name: str, code: str, other_cells: int = 0, output_bytes: int = 0
) -> str:
    """Write a notebook whose last cell (id ``bench``) holds ``code``.

    ``other_cells`` cells come first, with ``output_bytes`` of stream output in all.
    """
    nb = nbformat.v4.new_notebook()
    line = "y" * 99 + "\n"
    lines_per_cell = output_bytes // max(other_cells, 1) // len(line)
    for index in range(other_cells):
        cell = nbformat.v4.new_code_cell(f"print('cell {index}')")
        cell["id"] = f"c{index}"
        cell["execution_count"] = index + 1
        cell["outputs"] = [
            nbformat.v4.new_output("stream", name="stdout", text=line * lines_per_cell)
        ]
        nb.cells.append(cell)
    cell = nbformat.v4.new_code_cell(code)
    cell["id"] = "bench"
    nb.cells.append(cell)
    nbformat.write(nb, str(server.root_dir / name))
    return name


def make_cells_notebook(server: Server, name: str, code: str, cells: int) -> str:
    """Write a notebook of ``cells`` code cells (ids ``c0``, ``c1``, ...), each ``code``."""
    nb = nbformat.v4.new_notebook()
    for index in range(cells):
        cell = nbformat.v4.new_code_cell(code)
        cell["id"] = f"c{index}"
        nb.cells.append(cell)
    nbformat.write(nb, str(server.root_dir / name))
    return name


class KernelClient:
    """A JupyterLab-like client on the v1 kernel websocket protocol."""

    def __init__(self, ws: Any, session_id: str, server: Server, kernel_id: str) -> None:
        self.ws = ws
        self.session_id = session_id
        self.server = server
        self.kernel_id = kernel_id

    @classmethod
    async def connect(cls, server: Server, kernel_id: str) -> KernelClient:
        session_id = uuid.uuid4().hex
        return cls(await cls._open(server, kernel_id, session_id), session_id, server, kernel_id)

    @staticmethod
    async def _open(server: Server, kernel_id: str, session_id: str) -> Any:
        url = server.base_url.replace("http", "ws", 1)
        request = HTTPRequest(
            f"{url}api/kernels/{kernel_id}/channels?session_id={session_id}",
            headers={"Authorization": f"token {server.token}"},
        )
        return await websocket_connect(request, subprotocols=[V1], max_message_size=1 << 30)

    @property
    def legacy(self) -> bool:
        """The server chose the legacy protocol (as it does for kernels on a gateway)."""
        return bool(self.ws.selected_subprotocol != V1)

    async def send(self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any]) -> str:
        header = {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": self.session_id,
            "username": "bench",
            "date": "2026-01-01T00:00:00Z",
            "version": "5.3",
        }
        if self.legacy:
            msg = {"header": header, "parent_header": {}, "metadata": metadata}
            await self.ws.write_message(
                json.dumps({**msg, "content": content, "channel": "shell", "buffers": []})
            )
            return str(header["msg_id"])
        parts = [json.dumps(part).encode() for part in (header, {}, metadata, content)]
        await self.ws.write_message(serialize_msg_to_ws_v1(parts, "shell"), binary=True)
        return str(header["msg_id"])

    async def recv(self, timeout: float) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.read_message(), timeout)
        if raw is None:
            raise ConnectionError("websocket closed")
        if self.legacy:
            msg = json.loads(raw)
            return {key: msg[key] for key in ("header", "parent_header", "content")}
        _, parts = deserialize_msg_from_ws_v1(raw)
        return {
            "header": json.loads(parts[0]),
            "parent_header": json.loads(parts[1]),
            "content": json.loads(parts[3]),
        }

    async def ready(self, timeout: float = 60, attempts: int = 3) -> None:
        """Wait for the kernel's reply to a kernel_info request.

        A websocket the server closes before that is reopened with the same session id,
        as JupyterLab does, after saying why on stderr; a server that died is an error.
        """
        for attempt in range(1, attempts + 1):
            msg_id = await self.send("kernel_info_request", {}, {})
            try:
                while True:
                    msg = await self.recv(timeout)
                    if (
                        msg["parent_header"].get("msg_id") == msg_id
                        and msg["header"]["msg_type"] == "kernel_info_reply"
                    ):
                        return
            except ConnectionError:
                code = self.server.process.poll()
                tail = self.server.log_tail()
                if code is not None or attempt == attempts:
                    state = f"exited with {code}" if code is not None else "still running"
                    raise ConnectionError(
                        f"{self.server.name} server closed the kernel websocket ({state}); "
                        f"its log ends:\n{tail}"
                    ) from None
                print(
                    f"  note: {self.server.name} server closed a new kernel websocket; "
                    f"reconnecting. Its log ends:\n{tail}",
                    file=sys.stderr,
                    flush=True,
                )
                self.ws = await self._open(self.server, self.kernel_id, self.session_id)

    async def execute(self, code: str, cell_id: str = "bench") -> str:
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        return await self.send("execute_request", content, {"cellId": cell_id, "deletedCells": []})

    async def until_idle(self, msg_id: str, timeout: float = 3600) -> None:
        while True:
            msg = await self.recv(timeout)
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["header"]["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                return

    async def until_output(self, msg_id: str, timeout: float = 120) -> None:
        while True:
            msg = await self.recv(timeout)
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["header"]["msg_type"] == "stream"
            ):
                return

    def close(self) -> None:
        self.ws.close()
