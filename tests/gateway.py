"""A real Jupyter Kernel Gateway for the tests, and a TCP path to it that can be cut."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from browser import _stop_process, free_port, wait_until
from helpers import REPO


@dataclass
class KernelGateway:
    """A running ``jupyter kernelgateway`` subprocess."""

    url: str  # no trailing slash
    token: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def server_args(self, url: str | None = None) -> list[str]:
        """Command-line options of a notebook server that uses this gateway (or ``url``)."""
        return [f"--gateway-url={url or self.url}", f"--GatewayClient.auth_token={self.token}"]

    def server_config(self, url: str | None = None) -> dict[str, dict[str, object]]:
        """The same, as the configuration of an in-process server."""
        return {"GatewayClient": {"url": url or self.url, "auth_token": self.token}}

    def _request(self, method: str, path: str) -> bytes:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    def kernel_ids(self) -> list[str]:
        return [k["id"] for k in json.loads(self._request("GET", "/api/kernels"))]

    def delete_kernel(self, kernel_id: str) -> None:
        """Shut a kernel down on the gateway itself (as its idle culler does)."""
        self._request("DELETE", f"/api/kernels/{kernel_id}")


#: Jupyter Enterprise Gateway's environment (``bash .ci/run`` creates it): it pins
#: jupyter_server<2, so it cannot live beside the extension.
ENTERPRISE_GATEWAY = REPO / ".ci" / "eg" / "venv" / "bin" / "jupyter-enterprisegateway"


def kernel_gateway_command(port: int, token: str) -> list[str]:
    """Jupyter Kernel Gateway, from this environment (``list_kernels`` on: jupyter_server's
    gateway client lists the gateway's kernels, and fails where that is forbidden)."""
    return [
        sys.executable,
        "-m",
        "jupyter",
        "kernelgateway",
        "--KernelGatewayApp.ip=127.0.0.1",
        f"--KernelGatewayApp.port={port}",
        "--KernelGatewayApp.port_retries=0",
        f"--KernelGatewayApp.auth_token={token}",
        "--JupyterWebsocketPersonality.list_kernels=True",
    ]


def enterprise_gateway_command(port: int, token: str) -> list[str]:
    """Jupyter Enterprise Gateway from its own environment; its kernels are local processes
    (``unauthorized_users`` would refuse kernels to root, which the CI runs as; listing
    kernels is off by default, and jupyter_server's gateway client needs it)."""
    assert ENTERPRISE_GATEWAY.exists(), f"{ENTERPRISE_GATEWAY} is missing: run bash .ci/run"
    return [
        str(ENTERPRISE_GATEWAY),
        "--EnterpriseGatewayApp.ip=127.0.0.1",
        f"--EnterpriseGatewayApp.port={port}",
        "--EnterpriseGatewayApp.port_retries=0",
        f"--EnterpriseGatewayApp.auth_token={token}",
        "--EnterpriseGatewayApp.unauthorized_users=nobody",
        "--EnterpriseGatewayApp.list_kernels=True",
    ]


@contextmanager
def kernel_gateway_process(
    tmp_path: Path,
    command: Callable[[int, str], list[str]] = kernel_gateway_command,
    token: str | None = None,
) -> Iterator[KernelGateway]:
    """Run a gateway on 127.0.0.1 with a token (its kernels run on this machine)."""
    home = tmp_path / "gateway"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        (home / name.lower()).mkdir(exist_ok=True)
        env[name] = str(home / name.lower())
    env["PYTHONUNBUFFERED"] = "1"
    port = free_port()
    token = token or uuid.uuid4().hex
    cmd = command(port, token)
    log_path = home / "gateway.log"
    with ExitStack() as stack:
        log_file = stack.enter_context(log_path.open("ab"))
        process = subprocess.Popen(
            cmd,
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(_stop_process, process, 20)
        gateway = KernelGateway(f"http://127.0.0.1:{port}", token, port, log_path, process)

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited:\n{gateway.log()}")
            try:
                gateway.kernel_ids()
            except (OSError, urllib.error.URLError):
                return False
            return True

        wait_until(answers, 60, "the kernel gateway to answer", 0.2)
        yield gateway


class CuttablePath:
    """A TCP relay on 127.0.0.1 in front of the gateway, run by a thread of its own.

    :meth:`cut` closes every connection through it (both ends see the TCP connection
    end, as when a network path breaks) and refuses new ones until :meth:`restore`.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self.refusing = False
        self.connections = 0
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()
        server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def _cut(self) -> None:
        self.refusing = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def cut(self) -> None:
        """Break every connection now and refuse new ones."""
        done = threading.Event()
        self._loop.call_soon_threadsafe(lambda: (self._cut(), done.set()))
        done.wait(5)

    def restore(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
