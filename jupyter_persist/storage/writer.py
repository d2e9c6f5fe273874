"""Merge captured outputs into notebooks through the server's ContentsManager."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nbformat
from jupyter_core.utils import ensure_async
from nbformat import NotebookNode
from tornado.web import HTTPError
from traitlets import Any as AnyTrait
from traitlets.config import LoggingConfigurable

from ..meter import CpuClock, LoopMeter
from ..model.widgets import STATE_MIME, NotebookWidgets, cells_view_ids, widget_state_document
from .switching import SwitchInterval
from .versions import FileVersion, WrittenVersions

#: Builds a notebook's widget state from its views' model ids and the state it holds.
WidgetStateBuilder = Callable[[list[str], Any], NotebookWidgets]


class NotebookUnavailable(Exception):
    """The notebook cannot be written: deleted, unreadable or invalid. Nothing is written."""


@dataclass(frozen=True)
class CellUpdate:
    """The outputs and execution count to give one code cell."""

    outputs: list[dict[str, Any]]
    execution_count: int | None
    #: The code that ran: places the outputs in a notebook whose cells have no ids
    #: (nbformat 4.4 and older), where JupyterLab's cell ids exist only in the browser.
    source: str | None = None


@dataclass
class WriteResult:
    """What a merge did."""

    #: Cell ids whose outputs on disk now equal the update (written or already equal).
    merged: set[str] = field(default_factory=set)
    #: Cell ids not found on disk.
    missing: set[str] = field(default_factory=set)
    #: Whether the file was saved.
    saved: bool = False
    bytes: int = 0
    #: Wall time of the merge.
    seconds: float = 0.0
    #: CPU time the server's threads spent on it (see ``CpuClock``); None: not measured.
    cpu_seconds: float | None = None
    #: The widget state the notebook holds now, by model id (None: not touched).
    widgets: dict[str, Any] | None = None
    #: Widget models left out for their size: (model id, bytes).
    widgets_too_big: list[tuple[str, int]] = field(default_factory=list)


#: File bytes of the notebooks kept parsed between our writes, in all (see ``merge``).
CACHE_MAX_BYTES = 100_000_000
#: The meter's kind for the ContentsManager's own time on the event loop.
CONTENTS_MANAGER = "contents_manager"


class NotebookWriter(LoggingConfigurable):
    """Reads notebooks and merges outputs into them by cell id, changing nothing else.

    A notebook we keep writing (a cell running, cells run one after the other) is not
    read and parsed again before each write when its modification time and size show
    that the file is still the one we wrote (the flusher says how long a copy stays):
    reading it costs as much as writing it, and most of it runs on the event loop
    (trust check, validation). Measured with 20 notebooks written every 5 s,
    those reads were what delayed the server's requests most.
    """

    contents_manager = AnyTrait(help="The server's ContentsManager.")

    def __init__(
        self, meter: LoopMeter | None = None, switch_interval: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        #: The ContentsManager's time on the event loop is counted apart from ours.
        self.meter = meter or LoopMeter()
        #: The GIL switch interval while the ContentsManager works for us (see :mod:`.switching`).
        self.switching = SwitchInterval(switch_interval)
        #: path -> (notebook as we saved it, the file's version after the save)
        self._written: dict[str, tuple[NotebookNode, FileVersion]] = {}
        #: Which versions of each notebook we wrote, on top of whose (see :mod:`.versions`).
        self.versions = WrittenVersions()

    async def read(self, path: str) -> NotebookNode:
        """Return the notebook at ``path``; raise :class:`NotebookUnavailable` if unusable."""
        notebook, _ = await self.read_with_time(path)
        return notebook

    async def read_with_time(self, path: str) -> tuple[NotebookNode, datetime | None]:
        """Like :meth:`read`, with the notebook's last modification time."""
        notebook, version = await self._read_version(path)
        return notebook, version.last_modified

    async def _read_version(self, path: str) -> tuple[NotebookNode, FileVersion]:
        """Like :meth:`read`, with the version of the file read (its hash where known)."""
        try:
            model = await self.get_model(path, content=True)
        except HTTPError as err:
            if err.status_code == 404:
                raise NotebookUnavailable(f"{path} does not exist") from None
            raise NotebookUnavailable(f"{path} cannot be read: {err.log_message}") from None
        if model.get("message"):
            raise NotebookUnavailable(f"{path} is not a valid notebook: {model['message'][:200]}")
        notebook: NotebookNode = model["content"]
        if notebook.get("nbformat") != 4 or "orig_nbformat" in notebook.get("metadata", {}):
            raise NotebookUnavailable(f"{path} is not an nbformat 4 notebook")
        return notebook, FileVersion.of(model)

    async def get_model(self, path: str, content: bool) -> dict[str, Any]:
        """The ContentsManager's model of the notebook, with the file's hash if it gives one.

        The hash is what JupyterLab compares before a save. ContentsManagers older than
        jupyter_server 2.11 take no ``require_hash``; their models have no hash.
        """
        try:
            model = await self._contents(
                self.contents_manager.get, path, content=content, type="notebook", require_hash=True
            )
        except TypeError:
            model = await self._contents(
                self.contents_manager.get, path, content=content, type="notebook"
            )
        return dict(model)

    async def find_cell_by_source(self, path: str, code: str) -> tuple[str | None, int]:
        """Return the id of the one code cell whose source equals ``code``.

        Returns ``(cell_id, matches)``: the id is None unless exactly one cell with an id
        matches; ``matches`` says how many did, for the log.
        """
        notebook = await self.read(path)
        matches = [
            cell
            for cell in notebook.cells
            if cell.get("cell_type") == "code" and _source(cell) == code
        ]
        if len(matches) == 1 and matches[0].get("id"):
            return matches[0]["id"], 1
        return None, len(matches)

    async def cell_outputs(self, path: str, cell_ids: set[str]) -> dict[str, Any]:
        """The outputs (as the file holds them) of the cells of ``path`` named in ``cell_ids``.

        A cell no longer in the file has no key. Raises :class:`NotebookUnavailable`.
        """
        notebook = await self.read(path)
        return {
            cell["id"]: cell.get("outputs", [])
            for cell in notebook.cells
            if cell.get("id") in cell_ids
        }

    async def merge(
        self,
        path: str,
        updates: dict[str, CellUpdate],
        widgets: WidgetStateBuilder | None = None,
    ) -> WriteResult:
        """Give each cell named in ``updates`` its outputs and count; save if anything changed.

        With ``widgets``, the notebook's widget state is brought up to date too (see
        :func:`merge_widget_state`).

        Raises :class:`NotebookUnavailable` when the notebook cannot be read; a notebook
        that cannot be read is never written.
        """
        clock = CpuClock()
        result = await clock.run(self._merge(path, updates, widgets))
        result.cpu_seconds = clock.seconds
        return result

    async def _merge(
        self, path: str, updates: dict[str, CellUpdate], widgets: WidgetStateBuilder | None
    ) -> WriteResult:
        started = time.perf_counter()
        before: FileVersion | None = None  # None: the file is still our own latest write
        notebook = await self._unchanged_since_written(path)
        if notebook is None:
            notebook, before = await self._read_version(path)
        result = merge_outputs(notebook, updates)
        if widgets is not None:
            widget_result = merge_widget_state(notebook, widgets)
            if widget_result is not None:
                result.saved = result.saved or widget_result[0]
                result.widgets = widget_result[1].state
                result.widgets_too_big = widget_result[1].too_big
        if result.saved:
            model = {"type": "notebook", "format": "json", "content": notebook}
            try:
                saved = await self._contents(self.contents_manager.save, model, path)
            except BaseException:
                self._written.pop(path, None)  # changed in memory, maybe not on disk
                raise
            after = FileVersion.of(saved)
            result.bytes = after.size or 0
            self.versions.wrote(path, before, after)
            self._written.pop(path, None)  # re-added last: the most recently written
            if after.last_modified is not None and result.bytes <= CACHE_MAX_BYTES:
                self._written[path] = (notebook, after)
                self._evict()
        result.seconds = time.perf_counter() - started
        return result

    async def _contents(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a ContentsManager method (sync or async), its event-loop time counted apart."""
        with self.meter.timing(CONTENTS_MANAGER):
            result = method(*args, **kwargs)
        if not inspect.isawaitable(result):
            return result
        # Only an async ContentsManager hands work to threads; a sync one runs on the loop.
        with self.switching.shortened():
            return await self.meter.timed(CONTENTS_MANAGER, ensure_async(result))

    def _evict(self) -> None:
        """Drop the copies written longest ago beyond ``CACHE_MAX_BYTES`` in all."""
        total = sum(version.size or 0 for _, version in self._written.values())
        while total > CACHE_MAX_BYTES and len(self._written) > 1:
            oldest = next(iter(self._written))
            total -= self._written.pop(oldest)[1].size or 0

    def forget(self, path: str) -> bool:
        """Drop the parsed copy kept of a notebook; return whether there was one.

        A parsed 50 MB notebook is millions of Python objects: kept for good, it would
        make every garbage collection of the server slower, long after its run ended.
        """
        return self._written.pop(path, None) is not None

    def kept_paths(self) -> list[str]:
        """The notebooks a parsed copy is kept of."""
        return list(self._written)

    async def _unchanged_since_written(self, path: str) -> NotebookNode | None:
        """The notebook as we last saved it, if the file has not changed since."""
        written = self._written.get(path)
        if written is None:
            return None
        notebook, version = written
        try:
            model = await self._contents(self.contents_manager.get, path, content=False)
        except HTTPError:
            model = {}
        if not FileVersion.of(model).is_our_write(version):
            self._written.pop(path, None)
            return None
        return notebook


def merge_outputs(notebook: NotebookNode, updates: dict[str, CellUpdate]) -> WriteResult:
    """Give each cell named in ``updates`` its outputs and count, in memory; nothing else.

    ``saved`` in the result says whether any cell changed (the caller writes the file).
    """
    result = WriteResult()
    code_cells = [cell for cell in notebook.cells if cell.get("cell_type") == "code"]
    cells = {cell.get("id"): cell for cell in code_cells}
    without_id = [cell for cell in code_cells if not cell.get("id")]
    for cell_id, update in updates.items():
        cell = cells.get(cell_id)
        if cell is None and without_id and update.source is not None:
            same = [c for c in without_id if _source(c) == update.source]
            cell = same[0] if len(same) == 1 else None
        if cell is None:
            result.missing.add(cell_id)
            continue
        result.merged.add(cell_id)
        if _plain(cell.get("outputs", [])) == update.outputs and (
            cell.get("execution_count") == update.execution_count
        ):
            continue
        cell["outputs"] = [nbformat.from_dict(output) for output in update.outputs]
        cell["execution_count"] = update.execution_count
        # The outputs of code the user ran are trusted, as JupyterLab marks a cell it
        # ran: the ContentsManager then signs the notebook, and a reopened page renders
        # them in full (a widget view, HTML with scripts) instead of their plain text.
        # ``trusted`` is transient: nbformat does not write it to the file.
        cell.setdefault("metadata", nbformat.from_dict({}))["trusted"] = True
        result.saved = True
    return result


def merge_widget_state(
    notebook: NotebookNode, build: WidgetStateBuilder
) -> tuple[bool, NotebookWidgets] | None:
    """Give the notebook the state of the widget models its views reach, in memory.

    Only ``metadata.widgets[STATE_MIME]`` is touched; a notebook without widget views
    is left alone (None). Returns whether the state changed, and the state built.
    """
    roots = cells_view_ids(notebook.cells)
    if not roots:
        return None
    holder = notebook.metadata.get("widgets")
    saved = holder.get(STATE_MIME) if isinstance(holder, dict) else None
    built = build(roots, saved)
    document = widget_state_document(built.state)
    if (saved is None and not built.state) or _plain(saved) == _plain(document):
        return False, built
    if not isinstance(holder, dict):
        holder = notebook.metadata["widgets"] = nbformat.from_dict({})
    holder[STATE_MIME] = nbformat.from_dict(document)
    return True, built


def _source(cell: NotebookNode) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))
