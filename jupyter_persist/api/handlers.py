"""REST API: ``GET /api/persist/status``, ``POST /api/persist/flush``,
``GET /api/persist/outputs?path=``, ``GET /api/persist/file-version?path=`` and the
websocket ``/api/persist/follow?path=``.

Authenticated and authorized like the server's own contents API: the status names
notebooks, the outputs and the follow socket read them (``contents``/``read``), and the
flush and the file version (which pauses our writes for a saving tab) write them
(``contents``/``write``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.ioloop import PeriodicCallback
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ..kernels.websocket import SETTINGS_KEY
from ..model.reducer import normalized_outputs
from ..storage.returning import check_tab_version
from ..storage.versions import FileVersion, parse_time
from .follow import FollowView, describe, describe_released
from .status import capture_status

if TYPE_CHECKING:
    from ..capture import CaptureManager

AUTH_RESOURCE = "contents"
#: ``authorized`` called with an action returns the decorator; typed for mypy.
authorized_write = cast("Callable[[Any], Any]", authorized("write"))


#: Seconds between a follow socket's updates: live enough to watch, few enough messages.
FOLLOW_INTERVAL = 0.25


class CaptureAccess:
    """The running extension's capture manager, and the notebook a request names."""

    settings: dict[str, Any]
    get_argument: Any

    @property
    def capture(self) -> CaptureManager:
        """The running extension's capture manager."""
        manager: CaptureManager = self.settings[SETTINGS_KEY]
        return manager

    def notebook_path(self) -> str:
        """The ``path`` query argument, as an API path; 400 when missing or empty."""
        path = str(self.get_argument("path", "")).strip("/")
        if not path:
            raise web.HTTPError(400, "a notebook path is needed: ?path=dir/a.ipynb")
        return path


class PersistHandler(CaptureAccess, APIHandler):
    """Base of the extension's API handlers."""

    auth_resource = AUTH_RESOURCE


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


class OutputsHandler(PersistHandler):
    """The captured outputs of a notebook's cells: ``GET /api/persist/outputs?path=``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Each cell's latest captured execution, whole; 404 when nothing is captured."""
        path = self.notebook_path()
        self.capture.listener.catch_up()  # what the kernels sent so far
        if path not in self.capture.captured_paths():
            raise web.HTTPError(404, f"no captured outputs for {path!r}")
        executions = sorted(self.capture.store.latest_of(path), key=lambda e: e.seq)
        described = [(e.seq, describe(e)) for e in executions]
        described += await self._released(path)
        self.finish(
            json.dumps(
                {
                    "path": path,
                    "collaborative": self.capture.collaborative,
                    "executions": [item for _, item in sorted(described, key=lambda x: x[0])],
                }
            )
        )

    async def _released(self, path: str) -> list[tuple[int, dict[str, Any]]]:
        """Released runs, their outputs read from the file, which holds them."""
        records = self.capture.store.released_of(path)
        if not records:
            return []
        try:
            outputs = await self.capture.flusher.writer.cell_outputs(
                path, {record.cell_id for record in records}
            )
        except Exception as err:
            raise web.HTTPError(500, f"cannot read {path!r}: {err}") from None
        return [
            (record.seq, describe_released(record, normalized_outputs(outputs.get(record.cell_id))))
            for record in records
        ]


class FileVersionHandler(PersistHandler):
    """``GET /api/persist/file-version?path=&last_modified=&hash=&chain=``.

    Asked by a tab before it saves: may it take the file's current version as its own,
    every change since its version (``last_modified`` and ``hash`` as the contents API
    gave them; ``chain``: the token of a chain of ours it took a version of) being one
    of our writes? See :mod:`.returning`. It pauses our writes of the notebook, so it
    needs ``write``.
    """

    @web.authenticated
    @authorized_write
    async def get(self) -> None:
        """The answer as JSON; 400 for a missing or unreadable version, 404 without a file."""
        path = self.notebook_path()
        raw_time = str(self.get_argument("last_modified", ""))
        modified = parse_time(raw_time) if raw_time else None
        if raw_time and modified is None:
            raise web.HTTPError(400, f"last_modified is not an ISO 8601 time: {raw_time!r}")
        digest = str(self.get_argument("hash", "")) or None
        if modified is None and digest is None:
            raise web.HTTPError(400, "the tab's version is needed: ?last_modified=...&hash=...")
        answer = await check_tab_version(
            self.capture.writer,
            self.capture.flusher,
            self.capture.clients,
            path,
            FileVersion(modified, hash=digest),
            token=str(self.get_argument("chain", "")),
            log=self.log,
        )
        self.finish(json.dumps(answer))


class FollowHandler(CaptureAccess, WebSocketMixin, WebSocketHandler, JupyterHandler):
    """Websocket ``/api/persist/follow?path=``: a notebook's outputs, then their changes.

    See :mod:`.follow` for the messages. From its opening until the page's kernel
    connects, the page holds the notebook's file (see ``CaptureManager.page_owns``).
    """

    auth_resource = AUTH_RESOURCE
    _path = ""
    _opened = 0.0
    _view: FollowView | None = None
    _pusher: PeriodicCallback | None = None

    def set_default_headers(self) -> None:
        """No JSON API headers on a websocket (as jupyter_server's kernel websocket)."""

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Check the user may read contents and the path, then upgrade."""
        authorized = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)
        )
        if not authorized:
            raise web.HTTPError(403)
        self._path = self.notebook_path()
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        """Start following: the snapshot now, then changes every FOLLOW_INTERVAL."""
        super().open(*args, **kwargs)
        self._opened = self.capture.clients.follow(self._path)
        self.log.info("jupyter_persist: a page follows %s", self._path)
        self._view = FollowView(self.capture.store, self._path)
        self.capture.listener.catch_up()  # the snapshot has what the kernels sent so far
        self._push()
        self._pusher = PeriodicCallback(self._push, FOLLOW_INTERVAL * 1000)
        self._pusher.start()

    def on_message(self, message: str | bytes) -> None:
        """Pages send nothing; ignored."""

    def on_close(self) -> None:
        """Stop following; the extension may write the notebook again."""
        if self._pusher is not None:
            self._pusher.stop()
            self._pusher = None
        if self._view is not None:
            self._view = None
            self.capture.clients.unfollow(self._path, self._opened)
            self.log.info("jupyter_persist: a page stopped following %s", self._path)

    def _push(self) -> None:
        try:
            if self._view is None:
                return
            message = self._view.next_message(self.capture.collaborative)
            if message is not None:
                self.write_message(json.dumps(message))
        except WebSocketClosedError:
            self.on_close()
        except Exception:
            # What was sent is unknown now: the page reconnects and starts afresh.
            self.log.exception("jupyter_persist: error following %s", self._path)
            self.on_close()
            self.close()


HANDLERS: list[tuple[str, type[web.RequestHandler]]] = [
    ("/api/persist/status", StatusHandler),
    ("/api/persist/flush", FlushHandler),
    ("/api/persist/outputs", OutputsHandler),
    ("/api/persist/file-version", FileVersionHandler),
    ("/api/persist/follow", FollowHandler),
]
