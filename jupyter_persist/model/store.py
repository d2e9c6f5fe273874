"""In-memory outputs of every execution the server has seen, grouped the way they are saved.

No I/O here either: the capture manager feeds messages in and asks which notebooks have
outputs to write; the writer puts them on disk.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import reducer
from .caps import Limits
from .reducer import OutputArea
from .widgets import KernelWidgets, WidgetStore


@dataclass(eq=False)
class Execution:
    """One ``execute_request`` and the outputs it produced."""

    msg_id: str
    kernel_id: str
    #: The notebook cell's id, once known (from ``cellId`` or the source fallback).
    cell_id: str | None = None
    code: str | None = None
    #: API path of the notebook the execution belongs to; ``None`` when it has none
    #: (a console, a bare kernel) or while it is being looked up.
    path: str | None = None
    area: OutputArea = field(default_factory=OutputArea)
    running: bool = True
    #: Some of its messages arrived while no client was attached, so no client holds
    #: all of it: only the server can save it whole.
    server_owned: bool = False
    #: Counts changes; ``written_version`` is the one known to be on disk (written by
    #: us, or saved by a client with exactly these outputs).
    version: int = 0
    written_version: int = 0
    #: The execution could not be placed in a cell (no id, no single matching source).
    unplaced: bool = False
    #: The kernel turned out to have no notebook (a console, a bare kernel).
    notebookless: bool = False
    #: Order in which executions began; an older one never replaces a newer one.
    seq: int = 0
    #: Characters of output received, before the caps (for status reports).
    received_chars: int = 0
    #: The collaboration room's notebook its outputs were last written into (weakly
    #: held: a room that closed is gone) and the version written there. The room's
    #: save, through the save guard, is what makes them written.
    room_written: tuple[weakref.ref[Any], int] | None = None
    #: The client session id of the ``execute_request`` (JupyterLab's ``kernel.clientId``);
    #: None when the server did not see the request.
    client_session: str | None = None

    @property
    def dirty(self) -> bool:
        """Whether the outputs changed since they were last written."""
        return self.version != self.written_version

    def in_room(self, document: Any) -> bool:
        """Whether this version of the outputs was written into the room's ``document``."""
        return (
            self.room_written is not None
            and self.room_written[0]() is document
            and self.room_written[1] == self.version
        )

    @property
    def placed(self) -> bool:
        """Whether the execution has both a notebook and a cell to be written to."""
        return self.path is not None and self.cell_id is not None


class CaptureStore:
    """Executions by message id, the latest execution of each notebook cell, display ids."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._executions: dict[str, Execution] = {}
        self._latest_by_cell: dict[tuple[str, str], Execution] = {}
        #: (kernel id, display id) → message ids of executions that showed it, in order.
        self._displays: dict[tuple[str, str], list[str]] = {}
        self._seq = 0
        #: The widget models of every kernel (``metadata.widgets`` of their notebooks).
        self.widgets = WidgetStore()

    def __len__(self) -> int:
        return len(self._executions)

    def get(self, msg_id: str) -> Execution | None:
        """Return the execution started by ``msg_id``, if it is tracked."""
        return self._executions.get(msg_id)

    def executions(self, kernel_id: str | None = None) -> Iterator[Execution]:
        """Iterate over tracked executions, optionally of one kernel only."""
        for execution in list(self._executions.values()):
            if kernel_id is None or execution.kernel_id == kernel_id:
                yield execution

    def begin(
        self,
        kernel_id: str,
        msg_id: str,
        cell_id: str | None = None,
        code: str | None = None,
    ) -> Execution:
        """Track a new execution (idempotent: a known ``msg_id`` keeps its state)."""
        execution = self._executions.get(msg_id)
        if execution is None:
            self._seq += 1
            execution = Execution(
                msg_id=msg_id, kernel_id=kernel_id, cell_id=cell_id, code=code, seq=self._seq
            )
            self._executions[msg_id] = execution
        else:
            execution.cell_id = execution.cell_id or cell_id
            execution.code = execution.code if execution.code is not None else code
        return execution

    def place(self, execution: Execution, path: str | None, cell_id: str | None) -> bool:
        """Bind an execution to a notebook cell, replacing that cell's previous execution.

        A new execution of a cell replaces the cell's outputs, as running a cell does in
        JupyterLab: the older execution is forgotten. Returns False (and forgets
        ``execution``) when the cell already holds a newer execution.
        """
        self._unindex(execution)
        execution.path = path
        execution.cell_id = cell_id
        if path is None or cell_id is None:
            return True
        previous = self._latest_by_cell.get((path, cell_id))
        if previous is not None and previous is not execution:
            if previous.seq > execution.seq:
                self._forget(execution)
                return False
            self._forget(previous)
        self._latest_by_cell[(path, cell_id)] = execution
        execution.version += 1
        return True

    def rename(self, old_path: str, new_path: str) -> list[Execution]:
        """Move executions of ``old_path`` (or of notebooks under that folder) to ``new_path``."""
        moved = []
        prefix = old_path.rstrip("/") + "/"
        for execution in self.executions():
            path = execution.path
            if path is None:
                continue
            if path == old_path:
                target = new_path
            elif path.startswith(prefix):
                target = new_path.rstrip("/") + "/" + path[len(prefix) :]
            else:
                continue
            self.place(execution, target, execution.cell_id)
            moved.append(execution)
        return moved

    def apply(self, msg: dict[str, Any], *, detached: bool) -> list[Execution]:
        """Apply one IOPub message to the execution(s) it concerns; return those changed.

        ``detached`` says no client is attached to the kernel now: every execution the
        message changes becomes server-owned. Raises on malformed messages (the caller
        logs them); unknown types change nothing.
        """
        msg_id = msg["parent_header"]["msg_id"]
        execution = self._executions[msg_id]
        msg_type = msg["header"]["msg_type"]
        changed: list[Execution] = []
        if msg_type == "status":
            if msg["content"]["execution_state"] == "idle" and execution.running:
                _finish(execution)
                changed.append(execution)
        elif msg_type == "update_display_data":
            changed = self._update_displays(execution.kernel_id, msg, include_new=False)
        else:
            display_id = _display_id(msg)
            if display_id is not None and msg_type == "display_data":
                changed = self._update_displays(execution.kernel_id, msg, include_new=True)
            area = reducer.apply_message(execution.area, msg, self.limits)
            if area is not execution.area:
                execution.area = area
                execution.version += 1
                if execution not in changed:
                    changed.append(execution)
        if detached:
            for item in [execution, *changed]:
                item.server_owned = True
        return changed

    def _update_displays(
        self, kernel_id: str, msg: dict[str, Any], *, include_new: bool
    ) -> list[Execution]:
        display_id = _display_id(msg)
        if display_id is None:
            return []
        key = (kernel_id, display_id)
        owners = self._displays.setdefault(key, []) if include_new else self._displays.get(key)
        if owners is None:
            return []  # an update of a display no execution we hold showed
        changed = []
        for owner_id in list(owners):
            owner = self._executions.get(owner_id)
            if owner is None:
                owners.remove(owner_id)
                continue
            area = reducer.update_display(owner.area, display_id, msg["content"], self.limits)
            if area is not owner.area:
                owner.area = area
                owner.version += 1
                changed.append(owner)
        parent_id = msg["parent_header"]["msg_id"]
        if include_new and parent_id not in owners:
            owners.append(parent_id)
        return changed

    def client_left(self, kernel_id: str, session: str, session_gone: bool, any_left: bool) -> int:
        """A client of the kernel left; returns how many of its executions are unwritten.

        The runs the client's session started (``session_gone``: its last websocket
        left) are the server's to keep from now on, whoever else is attached: other
        pages do not show another page's runs, so their saves may lack those outputs.
        Once no client is left (``any_left`` false), every running execution is.
        """
        for execution in self.executions(kernel_id):
            if execution.running and (
                not any_left or (session_gone and execution.client_session == session)
            ):
                execution.server_owned = True
        return sum(1 for e in self.executions(kernel_id) if e.dirty)

    def forget_written(self, kernel_id: str) -> None:
        """The kernel is gone: forget its executions that are on disk and no one else's.

        Unsaved outputs stay for a later write; server-owned ones stay so that the save
        guard can still protect them from a stale tab, and so do the kernel's widgets.
        """
        for execution in list(self.executions(kernel_id)):
            if not execution.dirty and not execution.server_owned:
                self.forget(execution)
        if next(self.executions(kernel_id), None) is None:
            self.widgets.forget_kernel(kernel_id)

    def finish_kernel(self, kernel_id: str) -> list[Execution]:
        """Mark a kernel's running executions finished (restart, shutdown, death)."""
        finished = []
        for execution in self.executions(kernel_id):
            if execution.running:
                _finish(execution)
                finished.append(execution)
        for key in [key for key in self._displays if key[0] == kernel_id]:
            del self._displays[key]
        return finished

    def forget(self, execution: Execution) -> None:
        """Stop tracking an execution."""
        self._forget(execution)

    def _forget(self, execution: Execution) -> None:
        self._unindex(execution)
        self._executions.pop(execution.msg_id, None)
        # Its displays: a cell run all day with a new display id each run (a progress
        # bar) would otherwise leave one entry per run.
        msg_id = execution.msg_id
        for key in [k for k, owners in self._displays.items() if msg_id in owners]:
            owners = self._displays[key]
            owners.remove(msg_id)
            if not owners:
                del self._displays[key]

    def _unindex(self, execution: Execution) -> None:
        if execution.path is not None and execution.cell_id is not None:
            key = (execution.path, execution.cell_id)
            if self._latest_by_cell.get(key) is execution:
                del self._latest_by_cell[key]

    def to_write(self, path: str) -> list[Execution]:
        """The placed executions of one notebook whose outputs are not on disk yet."""
        return [
            execution
            for (cell_path, _), execution in self._latest_by_cell.items()
            if cell_path == path and execution.dirty
        ]

    def paths_to_write(self) -> set[str]:
        """Notebooks with at least one execution waiting to be written."""
        return {path for (path, _), execution in self._latest_by_cell.items() if execution.dirty}

    def latest_of(self, path: str) -> list[Execution]:
        """The execution each cell of a notebook should hold, for every cell with one."""
        return [e for (cell_path, _), e in self._latest_by_cell.items() if cell_path == path]

    def widget_kernels(self, path: str) -> list[KernelWidgets]:
        """The widget models of the kernels a notebook's cells ran on."""
        return self.widgets.of(e.kernel_id for e in self.latest_of(path))

    def latest(self, path: str, cell_id: str) -> Execution | None:
        """The execution whose outputs a notebook cell should hold, if one is tracked."""
        return self._latest_by_cell.get((path, cell_id))


def _finish(execution: Execution) -> None:
    """The run is over: a new version, since what is written of it changes too.

    A room shows a running cell without its count (as JupyterLab does), and a save of
    it made while it ran counts as written: the end must be written again even when no
    output came after that save.
    """
    execution.running = False
    execution.version += 1


def _display_id(msg: dict[str, Any]) -> str | None:
    transient = msg["content"].get("transient")
    if isinstance(transient, dict):
        display_id = transient.get("display_id")
        if isinstance(display_id, str):
            return display_id
    return None
