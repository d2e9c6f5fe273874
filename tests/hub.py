"""Harness for the JupyterHub tests: a real Hub, its proxy and the users' single-user servers.

:func:`jupyterhub` starts ``jupyterhub`` in a subprocess with the documented example
config (``docs/examples/jupyterhub_config.py``) plus what a test needs: addresses on
127.0.0.1, the dummy authenticator, the Hub's own local spawner (each user's home under
the test's folder) and an admin service token. configurable-http-proxy comes from
``.ci/hub/node_modules`` (``bash .ci/run`` installs it with ``npm ci``). The extension
gets no configuration: the single-user servers load it because it is installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from browser import free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
PROXY = REPO / ".ci" / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
EXAMPLE_CONFIG = REPO / "docs" / "examples" / "jupyterhub_config.py"
USER = "ana"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an answer of its own here (to the login page)


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass
class Hub:
    """A running JupyterHub."""

    url: str  # the proxy's public URL, ending in "/"
    admin_token: str
    homes: Path  # each user's home (the single-user server's root) is homes / name
    log_path: Path

    def request(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, Any, dict[str, str]]:
        """``method path`` on the proxy (``hub/api/...``, ``user/ana/...``): status, JSON, headers.

        The body is JSON when it parses, else the text; redirects are not followed.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if token:
            request.add_header("Authorization", f"token {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(request, timeout=30) as response:
                status, raw, headers = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as err:
            status, raw, headers = err.code, err.read(), dict(err.headers)
        try:
            return status, json.loads(raw) if raw else None, headers
        except ValueError:
            return status, raw.decode(errors="replace"), headers

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """A Hub API call with the admin token; asserts it succeeded; returns its JSON."""
        status, answer, _ = self.request(method, f"hub/api/{path}", self.admin_token, body)
        assert 200 <= status < 300, f"{method} hub/api/{path}: {status} {answer}"
        return answer

    def home(self, user: str = USER) -> Path:
        home = self.homes / user
        home.mkdir(parents=True, exist_ok=True)
        return home

    def server_ready(self, user: str = USER) -> bool:
        server = self.admin("GET", f"users/{user}").get("servers", {}).get("")
        return bool(server and server.get("ready"))

    def start_server(self, user: str = USER) -> None:
        """Start the user's server through the Hub API; wait until it is ready."""
        self.admin("POST", f"users/{user}/server")
        wait_until(lambda: self.server_ready(user), 120, f"{user}'s server to be ready", 0.5)

    def stop_server(self, user: str = USER) -> None:
        """Stop the user's server through the Hub API; wait until it is gone."""
        self.admin("DELETE", f"users/{user}/server")
        wait_until(
            lambda: not self.admin("GET", f"users/{user}").get("servers"),
            120,
            f"{user}'s server to stop",
            0.5,
        )

    def user_token(self, user: str = USER) -> str:
        """A new API token of the user (what a script of theirs would use)."""
        token: str = self.admin("POST", f"users/{user}/tokens", {"note": "tests"})["token"]
        return token

    def log(self) -> str:
        """The Hub's output, with the proxy's and the single-user servers' (they inherit it)."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def _config(tmp_path: Path, port: int, admin_token: str, homes: Path) -> str:
    bin_dir = Path(sys.executable).parent
    root_only = ["--allow-root"] if os.geteuid() == 0 else []
    settings = {
        "bind_url": f"http://127.0.0.1:{port}",
        "hub_bind_url": f"http://127.0.0.1:{free_port()}",
        "proxy_api": f"http://127.0.0.1:{free_port()}",
        "proxy": str(PROXY),
        "db": f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}",
        "cookie_secret": str(tmp_path / "jupyterhub_cookie_secret"),
        "homes": str(homes / "{username}"),
        "singleuser": str(bin_dir / "jupyterhub-singleuser"),
        "args": [*root_only, "--LabApp.expose_app_in_browser=True"],
        "admin_token": admin_token,
        "user": USER,
    }
    return f"""\
import json
s = json.loads({json.dumps(json.dumps(settings))})
c = get_config()
load_subconfig({str(EXAMPLE_CONFIG)!r})  # the documented example, as an admin would use it

c.JupyterHub.bind_url = s["bind_url"]
c.JupyterHub.hub_bind_url = s["hub_bind_url"]
c.ConfigurableHTTPProxy.api_url = s["proxy_api"]
c.ConfigurableHTTPProxy.command = [s["proxy"]]
c.JupyterHub.db_url = s["db"]
c.JupyterHub.cookie_secret_file = s["cookie_secret"]
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {{s["user"]}}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = s["homes"]
c.Spawner.ip = "127.0.0.1"
c.Spawner.cmd = [s["singleuser"]]
c.Spawner.args = list(c.Spawner.args) + s["args"]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.services = [{{"name": "tests", "api_token": s["admin_token"]}}]
c.JupyterHub.load_roles = [
    {{
        "name": "tests",
        "scopes": ["admin:users", "admin:servers", "servers", "tokens", "read:users"],
        "services": ["tests"],
    }}
]
"""


@contextmanager
def jupyterhub(tmp_path: Path) -> Iterator[Hub]:
    """Run JupyterHub under ``tmp_path``; yield a :class:`Hub`; stop it and its servers."""
    assert PROXY.exists(), f"{PROXY} is missing: bash .ci/run installs it (npm ci --prefix .ci/hub)"
    port, admin_token = free_port(), uuid.uuid4().hex
    homes = tmp_path / "home"
    homes.mkdir()
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(_config(tmp_path, port, admin_token, homes))
    env = dict(os.environ)
    # The proxy is a node script; the single-user servers run this Python's kernels.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    log_path = tmp_path / "jupyterhub.log"
    hub = Hub(f"http://127.0.0.1:{port}/", admin_token, homes, log_path)
    with ExitStack() as stack:
        log_file = stack.enter_context(log_path.open("wb"))
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(_stop_hub, hub, process)

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"jupyterhub exited with {process.returncode}\n{hub.log_tail()}"
                )
            with suppress(OSError):
                return hub.request("GET", "hub/api/")[0] == 200
            return False

        wait_until(answers, 60, "JupyterHub to answer", 0.25)
        yield hub


def _stop_hub(hub: Hub, process: subprocess.Popen[bytes]) -> None:
    """Stop the users' servers through the Hub, then the Hub (which stops its proxy)."""
    with suppress(Exception):
        if hub.admin("GET", f"users/{USER}").get("servers"):
            hub.stop_server()
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
