"""Which notebook and cell an execution belongs to, and following notebooks that move."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_core.utils import ensure_async
from tornado.web import HTTPError
from traitlets import Any as AnyTrait
from traitlets.config import LoggingConfigurable

from ..model.store import CaptureStore, Execution
from ..storage.writer import NotebookUnavailable, NotebookWriter

#: jupyter_server's contents events: renames move a notebook's executions along.
CONTENTS_SCHEMA = "https://events.jupyter.org/jupyter_server/contents_service/v1"


class ExecutionLocator(LoggingConfigurable):
    """Places executions in notebook cells: by ``cellId``, else by matching source."""

    session_manager = AnyTrait(help="The server's SessionManager.")

    def __init__(self, store: CaptureStore, writer: NotebookWriter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.writer = writer
        #: Last known notebook of each kernel's session, to notice path changes.
        self._session_paths: dict[str, str | None] = {}

    def forget_kernel(self, kernel_id: str) -> None:
        """Drop what is known of a kernel that went away."""
        self._session_paths.pop(kernel_id, None)

    async def notebook_paths(self) -> dict[str, str]:
        """Kernel id → API path of its notebook session, from the session manager."""
        paths: dict[str, str] = {}
        for session in await self._list_sessions():
            kernel_id = (session.get("kernel") or {}).get("id")
            path = session.get("path") or ""
            if kernel_id and (session.get("type") == "notebook" or path.endswith(".ipynb")):
                paths.setdefault(kernel_id, path)
        return paths

    async def _list_sessions(self) -> list[dict[str, Any]]:
        """The session manager's sessions, through a kernel that stops meanwhile.

        jupyter_server's ``list_sessions`` skips a session whose kernel is gone, but
        raises a 404 for one whose kernel stops while it lists (seen in a benchmark:
        ``GET /api/persist/status`` right after a kernel's shutdown). Listing again
        then skips that session.
        """
        for attempt in range(3):
            try:
                sessions: list[dict[str, Any]] = await ensure_async(
                    self.session_manager.list_sessions()
                )
                return sessions
            except HTTPError as err:
                if err.status_code != 404 or attempt == 2:
                    raise
                self.log.debug("jupyter_persist: listing sessions again: %s", err)
                await asyncio.sleep(0.05)
        return []

    async def locate(self, execution: Execution) -> bool:
        """Find the notebook and cell of an execution and place it there.

        Returns True once the execution is placed. An execution whose kernel has no
        notebook is marked ``notebookless`` (and forgotten if it already ended).
        """
        path = (await self.notebook_paths()).get(execution.kernel_id)
        self._session_paths[execution.kernel_id] = path
        if self.store.get(execution.msg_id) is not execution:
            return False  # replaced or forgotten meanwhile
        if path is None:
            execution.notebookless = True
            if not execution.running:
                self.store.forget(execution)
            return False
        cell_id = execution.cell_id
        if cell_id is None:
            if execution.code is None:
                execution.path = path
                return False  # located again when execute_input brings the code
            cell_id = await self._match_source(path, execution)
            if cell_id is None:
                return False
        return self.store.place(execution, path, cell_id)

    async def _match_source(self, path: str, execution: Execution) -> str | None:
        assert execution.code is not None
        try:
            cell_id, matches = await self.writer.find_cell_by_source(path, execution.code)
        except NotebookUnavailable as err:
            self.log.warning(
                "jupyter_persist: cannot place outputs of %s: %s", execution.msg_id, err
            )
            cell_id, matches = None, -1
        if cell_id is None:
            execution.path = path
            execution.unplaced = True
            if matches >= 0:
                self.log.warning(
                    "jupyter_persist: execution %s on kernel %s sent no cell id and %d cells of "
                    "%s have its source; its outputs are kept in memory, not written",
                    execution.msg_id,
                    execution.kernel_id,
                    matches,
                    path,
                )
        return cell_id

    async def on_contents_event(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        """Follow notebooks renamed or moved through the contents API."""
        if data.get("action") != "rename":
            return
        old_path, new_path = data.get("source_path"), data.get("path")
        if not old_path or not new_path:
            return
        moved = self.store.rename(old_path.strip("/"), new_path.strip("/"))
        self.writer.versions.renamed(old_path.strip("/"), new_path.strip("/"))
        if moved:
            self.log.info(
                "jupyter_persist: %s renamed to %s; %d execution(s) follow it",
                old_path,
                new_path,
                len(moved),
            )

    async def follow_sessions(self) -> None:
        """Follow session path changes (``PATCH /api/sessions``) of kernels with executions."""
        kernels = {e.kernel_id for e in self.store.executions() if e.path is not None}
        if not kernels:
            return
        current = await self.notebook_paths()
        for kernel_id in kernels:
            before, after = self._session_paths.get(kernel_id), current.get(kernel_id)
            self._session_paths[kernel_id] = after
            if before is None or after is None or before == after:
                continue
            for execution in self.store.executions(kernel_id):
                if execution.path == before:
                    self.store.place(execution, after, execution.cell_id)
            self.log.info(
                "jupyter_persist: session of kernel %s moved from %s to %s",
                kernel_id,
                before,
                after,
            )
