"""Outputs into open collaboration rooms, which save the file themselves.

While a jupyter-collaboration room is open for a notebook, its shared document is what
every tab shows and what the room saves: the flusher writes outputs there instead of
into the file (see :mod:`.room` for the document itself).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from ..logs import OnceWarnings
from ..model.store import Execution
from .room import RoomUnsupported, room_is_loaded, write_into_room
from .writer import CellUpdate


class RoomOutputs:
    """Writes executions' outputs into a notebook's open room, one WARNING per problem."""

    def __init__(
        self,
        find_room: Callable[[str], Awaitable[Any | None]],
        warnings: OnceWarnings,
        log: Any,
    ) -> None:
        #: The open collaboration room's notebook of a path, or None.
        self.find_room = find_room
        self.warnings = warnings
        self.log = log

    async def write_for_absent_owners(
        self,
        path: str,
        executions: list[Execution],
        owner_attached: Callable[[Execution], bool],
    ) -> str:
        """With clients attached, the room still gets executions whose own client left.

        A tab reopened under collaboration shows the room's cells; the tab that ran the
        cell, the only one that would put the outputs there, is gone. Without a room,
        attached clients own the file, as always.
        """
        orphaned = [e for e in executions if not owner_attached(e)]
        if not orphaned:
            return "client attached"
        document = await self.open(path)
        if document is None:
            return "client attached"
        return self.write(path, document, orphaned) or "client attached"

    async def open(self, path: str) -> Any | None:
        try:
            document = await self.find_room(path)
        except Exception as err:
            self.warnings.warn(
                path,
                "room",
                f"jupyter_persist: cannot look up the collaboration room of {path} ({err!r}); "
                "writing the file",
            )
            return None
        if document is None:
            self.warnings.clear(path, "room")
        return document

    def write(self, path: str, document: Any, executions: list[Execution]) -> str | None:
        """Write outputs into an open room; None when the file must be written instead."""
        pending = [e for e in executions if e.cell_id is not None and not e.in_room(document)]
        if not pending:
            return "in room"
        try:
            if not room_is_loaded(document):
                return "room loading"
            result = write_into_room(
                document,
                {
                    str(e.cell_id): CellUpdate(e.area.to_json(), e.area.execution_count)
                    for e in pending
                },
                {str(e.cell_id) for e in pending if not e.running},
            )
        except RoomUnsupported as err:
            self.warnings.warn(
                path,
                "room",
                f"jupyter_persist: cannot write into the collaboration room of {path} "
                f"({err}); writing the file",
            )
            return None
        self.warnings.clear(path, "room")
        document_ref = weakref.ref(document)
        for execution in pending:
            if execution.cell_id in result.merged:
                execution.room_written = (document_ref, execution.version)
        self.warnings.missing_cells(
            path, "room cells", result.missing, "are not in its collaboration room"
        )
        if not result.changed:
            return "in room"
        self.log.info(
            "jupyter_persist: wrote %d cell(s) of %s into its collaboration room, which saves "
            "the file",
            len(result.merged),
            path,
        )
        return "written to room"
