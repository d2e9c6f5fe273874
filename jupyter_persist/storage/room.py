"""Writing captured outputs into a notebook's open collaboration room.

With jupyter-collaboration installed, JupyterLab edits a shared document the server
holds (``jupyter_server_ydoc``), and the room saves that document to the file. Writing
the file behind the room's back makes the room reload it ("Out-of-band changes"), and
jupyter-ydoc replaces every cell with new stream output whole: an edit a tab made to
that cell's source while offline merges into a cell the room no longer has. So while a
room is open, the extension changes only the outputs, the execution count and the
execution state of the room's cells, and leaves saving to the room.
The room's save passes the save guard, which then counts the outputs as written.

Outputs are changed by difference: equal outputs are kept, a stream output that grew
gets only its new text. The room keeps every update in its store and sends it to every
tab; rewriting a long output every few seconds would grow both by its size each time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .journal import common_prefix_length
from .writer import CellUpdate

try:  # Installed with jupyter-collaboration, which is what opens rooms.
    from pycrdt import Array, Map, Text
except ImportError:  # pragma: no cover - no collaboration, no room to write into
    Array = Map = Text = None  # type: ignore[assignment,misc]

#: Where jupyter_server_ydoc keeps its extension in the tornado settings.
YDOC_SETTINGS_KEY = "jupyter_server_ydoc"
#: The transaction origin of our changes, for whoever observes the document.
ORIGIN = "jupyter_persist"


class RoomUnsupported(Exception):
    """The room's document is not a jupyter-ydoc notebook this module knows how to edit."""


@dataclass
class RoomWriteResult:
    """What writing into a room did."""

    #: Cell ids whose outputs in the room now equal the update.
    merged: set[str] = field(default_factory=set)
    #: Cell ids the room's notebook does not have (or not as code cells).
    missing: set[str] = field(default_factory=set)
    #: Whether anything in the document changed.
    changed: bool = False


def room_extension_loaded(settings: Mapping[str, Any]) -> bool:
    """Whether jupyter-collaboration's server side is loaded and on (rooms can open).

    ``YDocExtension.disable_rtc`` leaves the extension in the settings but opens no room.
    """
    extension = settings.get(YDOC_SETTINGS_KEY)
    return (
        extension is not None
        and "file_id_manager" in settings
        and not getattr(extension, "disable_rtc", False)
    )


async def open_room_document(settings: Mapping[str, Any], path: str) -> Any | None:
    """The shared notebook of the room open for ``path``, or None when there is none.

    None also when collaboration is not installed. Never opens a room. Raises what
    jupyter_server_ydoc raises; the caller logs it.
    """
    if not room_extension_loaded(settings):
        return None
    return await settings[YDOC_SETTINGS_KEY].get_document(
        path=path, content_type="notebook", file_format="json", copy=False
    )


def room_is_loaded(document: Any) -> bool:
    """Whether the room's notebook has its cells (a room still loading has none)."""
    return len(_cells(document)) > 0


def write_into_room(
    document: Any, updates: Mapping[str, CellUpdate], finished: set[str]
) -> RoomWriteResult:
    """Give the room's cells their captured outputs, in one transaction.

    ``finished`` holds the cell ids whose execution is over: they get their execution
    count and the ``idle`` state (the tab that ran the cell left before it could say so,
    and a tab opened later would show it running for ever); the others have no count
    and the ``running`` state, as JupyterLab shows a run. Nothing but the outputs, the
    execution count and that state is touched.
    """
    make_outputs = getattr(document, "_create_youtputs", None)
    if Array is None:
        raise RoomUnsupported("pycrdt is not installed")
    if make_outputs is None:
        raise RoomUnsupported(f"{type(document).__name__} has no _create_youtputs")
    result = RoomWriteResult()
    with document.ydoc.transaction(origin=ORIGIN):
        for ycell in _cells(document):
            cell_id = ycell.get("id")
            update = updates.get(cell_id) if isinstance(cell_id, str) else None
            if update is None or ycell.get("cell_type") != "code":
                continue
            if _sync_cell(ycell, update, cell_id in finished, make_outputs):
                result.changed = True
            result.merged.add(str(cell_id))
    result.missing = set(updates) - result.merged
    return result


def _cells(document: Any) -> Any:
    cells = getattr(document, "ycells", None)
    if cells is None:
        raise RoomUnsupported(f"{type(document).__name__} has no ycells")
    return cells


def _sync_cell(ycell: Any, update: CellUpdate, finished: bool, make_outputs: Any) -> bool:
    """Outputs, count and state as JupyterLab shows a run: no count and running while it
    runs, the count and idle once it is over (a tab opened meanwhile shows ``[*]``)."""
    changed = False
    youtputs = ycell.get("outputs")
    if not isinstance(youtputs, Array):
        ycell["outputs"] = Array()
        youtputs = ycell["outputs"]
        changed = True
    if sync_outputs(youtputs, update.outputs, make_outputs):
        changed = True
    count = update.execution_count if finished else None
    if ycell.get("execution_count") != count:
        ycell["execution_count"] = count
        changed = True
    state = "idle" if finished else "running"
    if ycell.get("execution_state", "idle") != state:
        ycell["execution_state"] = state
        changed = True
    return changed


def sync_outputs(youtputs: Any, outputs: list[dict[str, Any]], make_outputs: Any) -> bool:
    """Make the shared ``youtputs`` equal ``outputs`` by difference; whether it changed.

    ``make_outputs`` turns output dicts into shared maps (jupyter-ydoc's own conversion,
    which keeps stream text as shared text, the way JupyterLab 4 edits it).
    """
    kept = 0
    changed = False
    for current, wanted in zip(youtputs, outputs, strict=False):
        if not isinstance(current, Map):
            break
        if current.to_py() == wanted:
            kept += 1
        elif _grow_stream(current, wanted):
            kept += 1
            changed = True
        else:
            break
    if kept < len(youtputs):
        del youtputs[kept:]
        changed = True
    if kept < len(outputs):
        youtputs.extend(make_outputs(outputs[kept:]))
        changed = True
    return changed


def _grow_stream(current: Any, wanted: dict[str, Any]) -> bool:
    """Edit a shared stream output's text into ``wanted``'s; False if it is not that."""
    text = current.get("text")
    if (
        wanted.get("output_type") != "stream"
        or current.get("output_type") != "stream"
        or current.get("name") != wanted.get("name")
        or not isinstance(text, Text)
        or not isinstance(wanted.get("text"), str)
        or set(current.keys()) != set(wanted)
    ):
        return False
    old, new = str(text), wanted["text"]
    keep = common_prefix_length(old, new)
    if keep < len(old):
        del text[keep:]
    if keep < len(new):
        text.insert(keep, new[keep:])
    return True


async def outputs_held_by_rooms(
    executions: list[Any], flush_into_room: Callable[[str], Awaitable[Any | None]]
) -> frozenset[str]:
    """Write the open rooms of these executions' notebooks now; the msg ids they hold.

    A client coming back to its session is about to be replayed what the kernel sent
    while it was away; the messages of executions a room holds must be left out of the
    replay, or the tab would add them to the room's cells a second time.
    """
    in_room: set[str] = set()
    for path in sorted({e.path for e in executions if e.path is not None}):
        document = await flush_into_room(path)
        if document is not None:
            in_room.update(e.msg_id for e in executions if e.path == path and e.in_room(document))
    return frozenset(in_room)
