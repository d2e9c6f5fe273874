"""REST API: ``GET /api/persist/status`` and ``POST /api/persist/flush``.

Authenticated and authorized like the server's own contents API: the status names
notebooks and the flush writes them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .status import capture_status
from .websocket import SETTINGS_KEY

if TYPE_CHECKING:
    from .capture import CaptureManager

AUTH_RESOURCE = "contents"


class PersistHandler(APIHandler):
    """Base of the extension's API handlers."""

    auth_resource = AUTH_RESOURCE

    @property
    def capture(self) -> CaptureManager:
        """The running extension's capture manager."""
        manager: CaptureManager = self.settings[SETTINGS_KEY]
        return manager


class StatusHandler(PersistHandler):
    """What is being captured: per notebook, kernel state, running cells, writes."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Return the status as JSON."""
        self.finish(json.dumps(await capture_status(self.capture)))


class FlushHandler(PersistHandler):
    """Journal and write captured outputs now, for all notebooks or one ``path``."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Body: ``{}`` (or none) for every notebook, ``{"path": "dir/nb.ipynb"}`` for one."""
        path = self._requested_path()
        if path is not None and path not in self.capture.captured_paths():
            raise web.HTTPError(404, f"no captured outputs for {path!r}")
        outcomes = await self.capture.flush_now(path)
        self.finish(json.dumps({"notebooks": outcomes}))

    def _requested_path(self) -> str | None:
        raw = self.request.body.strip()
        if not raw:
            return None
        try:
            body: Any = json.loads(raw)
        except ValueError as err:
            raise web.HTTPError(400, f"the body is not JSON: {err}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, 'the body must be a JSON object such as {"path": "a.ipynb"}')
        unknown = set(body) - {"path"}
        if unknown:
            raise web.HTTPError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        path = body.get("path")
        if path is None:
            return None
        if not isinstance(path, str) or not path.strip("/"):
            raise web.HTTPError(400, '"path" must be a notebook path such as "dir/a.ipynb"')
        return path.strip("/")


HANDLERS: list[tuple[str, type[PersistHandler]]] = [
    ("/api/persist/status", StatusHandler),
    ("/api/persist/flush", FlushHandler),
]
