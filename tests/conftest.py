from __future__ import annotations

import json
from typing import Any

import pytest
from jupyter_server.gateway.gateway_client import GatewayClient

pytest_plugins = ["pytest_jupyter.jupyter_server", "reader_leaks"]

SAVE_INTERVAL = 0.5


@pytest.fixture(autouse=True)
def fresh_gateway_client() -> None:
    """The gateway client is a process-wide singleton that a server configures once: a
    server of a gateway test must not leave its gateway URL to the next test's server."""
    GatewayClient.clear_instance()


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    """A server with jupyter_persist enabled and a short save interval."""
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
        "PersistExtension": {"save_interval": SAVE_INTERVAL},
    }


@pytest.fixture
def capture(jp_serverapp: Any) -> Any:
    """The running extension's capture manager; fails if the extension did not load."""
    apps = jp_serverapp.extension_manager.extension_apps
    assert "jupyter_persist" in apps, "jupyter_persist did not load (see the server log)"
    manager = jp_serverapp.web_app.settings.get("jupyter_persist_capture")
    assert manager is not None, "jupyter_persist loaded but did not install its capture manager"
    return manager


@pytest.fixture
def notebook_session(jp_fetch: Any, capture: Any) -> Any:
    """Factory: start a notebook session for a path; returns (session id, kernel id).

    The server fixture's own cleanup shuts the kernels down.
    """

    async def start(path: str) -> tuple[str, str]:
        body = {"path": path, "type": "notebook", "name": "", "kernel": {"name": "python3"}}
        response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
        model = json.loads(response.body)
        return model["id"], model["kernel"]["id"]

    return start
