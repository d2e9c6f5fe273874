"""In-memory outputs of every execution the server has seen, grouped the way they are saved.

No I/O here either: the capture manager feeds messages in and asks which notebooks have
outputs to write; the writer puts them on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nbformat import from_dict

from . import reducer
from .caps import Limits
from .reducer import OutputArea, normalized_outputs
from .widgets import KernelWidgets, WidgetStore, view_model_ids


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


#: Runs a later run of their cell replaced, remembered so that their late messages are
#: dropped as JupyterLab drops them (it disposes a cell's previous future): oldest out.
REPLACED_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class Released:
    """What stays in memory of a finished run whose outputs the file holds (~300 bytes).

    A run a client saw whole and saved, or a finished run of the server's that we wrote
    (``server_owned``, see :meth:`CaptureStore.release_written`). A late message of the
    run (a thread printing after the cell ended, which JupyterLab still shows in the
    cell) brings its outputs back from the file first (:meth:`CaptureStore.revive`).
    """

    msg_id: str
    kernel_id: str
    path: str
    cell_id: str
    seq: int
    client_session: str | None
    received_chars: int
    execution_count: int | None
    #: Of the outputs as released: the file still holds exactly them if it matches.
    digest: str
    #: How a stream output after them continues the last one (see ``OutputArea``).
    last_stream_name: str
    stream_cursor: int
    stream_omitted: int
    #: A run no client saw whole: the save guard still gives its outputs, read back from
    #: the file, to a stale tab's save (see ``model/guard``).
    server_owned: bool = False


def outputs_digest(outputs: list[dict[str, Any]]) -> str:
    """A digest of outputs as the reducer builds them (a file's: see ``normalized_outputs``).

    Equal for outputs that are equal as JSON (key order aside). Not ``json.dumps``: its
    escaping of every character took 120 ms of the event loop to release 150 runs of
    400 kB at once (a notebook's save); strings go to the hash as they are encoded.
    """
    hasher = hashlib.sha256()
    _feed_digest(hasher, outputs)
    return hasher.hexdigest()


def _feed_digest(hasher: Any, node: Any) -> None:
    # Every string is length-prefixed and every container marked, so that no two
    # different outputs feed the same bytes.
    if isinstance(node, str):
        data = node.encode("utf-8", "surrogatepass")
        hasher.update(b"s%d:" % len(data))
        hasher.update(data)
    elif isinstance(node, dict):
        hasher.update(b"{%d:" % len(node))
        for key in sorted(node, key=str):
            _feed_digest(hasher, str(key))
            _feed_digest(hasher, node[key])
    elif isinstance(node, (list, tuple)):
        hasher.update(b"[%d:" % len(node))
        for item in node:
            _feed_digest(hasher, item)
    else:  # numbers, booleans and null, spelled as JSON spells them
        hasher.update(b"v" + json.dumps(node).encode() + b";")


class CaptureStore:
    """Executions by message id, the latest execution of each notebook cell, display ids."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._executions: dict[str, Execution] = {}
        self._latest_by_cell: dict[tuple[str, str], Execution] = {}
        #: (kernel id, display id) → message ids of executions that showed it, in order.
        self._displays: dict[tuple[str, str], list[str]] = {}
        self._seq = 0
        #: Finished runs released from memory (:meth:`release`), by cell and by msg id.
        self._released: dict[tuple[str, str], Released] = {}
        self._released_ids: dict[str, Released] = {}
        self._replaced: OrderedDict[str, None] = OrderedDict()
        #: Kernels whose widgets changed with no cell's run named (see ``widgets_changed``).
        self._widget_changes: set[str] = set()
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
        key = (path, cell_id)
        previous = self._latest_by_cell.get(key)
        released = self._released.get(key)
        if released is not None and released.msg_id != execution.msg_id:
            if released.seq > execution.seq:
                self._forget(execution)
                return False
            self._drop_released(released)
            self._note_replaced(released.msg_id)
        if previous is not None and previous is not execution:
            if previous.seq > execution.seq:
                self._forget(execution)
                return False
            self._forget(previous)
            self._note_replaced(previous.msg_id)
        self._latest_by_cell[key] = execution
        execution.version += 1
        return True

    def rename(self, old_path: str, new_path: str) -> list[Execution]:
        """Move executions of ``old_path`` (or of notebooks under that folder) to ``new_path``."""
        moved = []
        for execution in self.executions():
            target = _renamed(execution.path, old_path, new_path)
            if target is None:
                continue
            self.place(execution, target, execution.cell_id)
            moved.append(execution)
        for record in list(self._released.values()):
            target = _renamed(record.path, old_path, new_path)
            if target is not None:
                self._drop_released(record)
                self._keep_released(dataclasses.replace(record, path=target))
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
        self._settle_widget_changes()
        for execution in self.executions(kernel_id):
            if execution.running and (
                not any_left or (session_gone and execution.client_session == session)
            ):
                execution.server_owned = True
        return sum(1 for e in self.executions(kernel_id) if e.dirty)

    def forget_written(self, kernel_id: str, release_owned: bool = False) -> None:
        """The kernel is gone: forget its executions that are on disk and no one else's.

        Unsaved outputs stay for a later write. Server-owned ones stay so that the save
        guard can still protect them from a stale tab; with ``release_owned`` (the save
        guard can read them back from the file) only a record of them stays, unless
        they show widgets, whose models the guard takes from the kernel's state.
        """
        for record in [r for r in self._released.values() if r.kernel_id == kernel_id]:
            if not record.server_owned:
                self._drop_released(record)  # no late message can come any more
        for execution in list(self.executions(kernel_id)):
            if execution.dirty:
                continue
            if not execution.server_owned:
                self.forget(execution)
                continue
            path, cell_id = execution.path, execution.cell_id
            if (
                release_owned
                and path is not None
                and cell_id is not None
                and self.latest(path, cell_id) is execution
                and not _shows_widget(execution.area)
            ):
                self._release(execution, path, cell_id, server_owned=True)
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

    def release(self, execution: Execution) -> bool:
        """Let go of a finished run's outputs once a client saw it whole and saved it.

        Only a run whose outputs the file holds as the client saved them and that nothing
        else needs: not one the server owns (the save guard gives its outputs to a stale
        tab's save), not one written into a collaboration room (its replay check), not
        one that showed a display id (an update may still rewrite it), not one that shows
        a widget (a thread may still change its state: the next write takes it through
        that run). Returns whether it was released.
        """
        if (
            execution.running
            or execution.dirty
            or execution.server_owned
            or execution.room_written is not None
            or execution.path is None
            or execution.cell_id is None
            or self._latest_by_cell.get((execution.path, execution.cell_id)) is not execution
            or any(display_id is not None for display_id in execution.area.display_ids)
            or _shows_widget(execution.area)
        ):
            return False
        self._release(execution, execution.path, execution.cell_id, server_owned=False)
        return True

    def release_written(self, path: str) -> int:
        """Let go of the outputs of the server's finished runs of a notebook that are on disk.

        See :meth:`release_owned`, for each of the notebook's runs. Returns how many were
        released.
        """
        # latest_of makes a new list: releasing does not disturb it.
        return sum(self.release_owned(execution) for execution in self.latest_of(path))

    def release_owned(self, execution: Execution) -> bool:
        """Let go of the outputs of a finished run of the server's that is on disk.

        A day of detached runs would otherwise keep every cell's last outputs in memory
        (60 MB for 150 cells of 400 kB) while the file holds them: only a record stays
        (see :class:`Released`), and the save guard reads them back from the file for a
        stale tab's save. Kept: runs that still run or changed since their write, runs
        no longer their cell's latest, runs written into a collaboration room (its replay
        check), runs that showed a display id (an update may still rewrite them) or
        widgets (the guard takes their models from the kernel's state). Only for a
        ContentsManager whose files a save hook can read (see
        ``savehooks.can_read_back``). Returns whether it was released.
        """
        path, cell_id, area = execution.path, execution.cell_id, execution.area
        if (
            not execution.server_owned
            or execution.running
            or execution.dirty
            or execution.room_written is not None
            or path is None
            or cell_id is None
            or self._latest_by_cell.get((path, cell_id)) is not execution
            or any(display_id is not None for display_id in area.display_ids)
            or _shows_widget(area)
        ):
            return False
        self._release(execution, path, cell_id, server_owned=True)
        return True

    def _release(self, execution: Execution, path: str, cell_id: str, server_owned: bool) -> None:
        area = execution.area
        # The record first: if its digest fails, the run stays as it was, outputs and all.
        record = Released(
            msg_id=execution.msg_id,
            kernel_id=execution.kernel_id,
            path=path,
            cell_id=cell_id,
            seq=execution.seq,
            client_session=execution.client_session,
            received_chars=execution.received_chars,
            execution_count=area.execution_count,
            digest=outputs_digest(area.to_json()),
            last_stream_name=area.last_stream_name,
            stream_cursor=area.stream_cursor,
            stream_omitted=area.stream_omitted,
            server_owned=server_owned,
        )
        self._forget(execution)
        self._keep_released(record)

    def released(self, msg_id: str) -> Released | None:
        """The released run ``msg_id``, if its cell still shows it."""
        return self._released_ids.get(msg_id)

    def released_of(self, path: str) -> list[Released]:
        """The released runs a notebook's cells show."""
        return [r for (cell_path, _), r in self._released.items() if cell_path == path]

    def released_runs(self) -> list[Released]:
        """Every released run a cell still shows."""
        return list(self._released.values())

    def was_replaced(self, msg_id: str) -> bool:
        """Whether a later run of its cell replaced the run ``msg_id``."""
        return msg_id in self._replaced

    def revive(self, record: Released, outputs: Any) -> Execution | None:
        """A late message of a released run: track it again, with its outputs as saved.

        ``outputs`` are the cell's outputs read from the file. None (the file or the cell
        could not be read): the late output is kept on its own, unplaced, never written
        over the cell's saved outputs. Returns None when a later run replaced it meanwhile.
        """
        if self._released_ids.get(record.msg_id) is not record:
            return None
        self._drop_released(record)
        plain = normalized_outputs(outputs) or []
        same = outputs is not None and outputs_digest(plain) == record.digest
        area = OutputArea(
            outputs=tuple(from_dict(output) for output in plain),
            display_ids=(None,) * len(plain),
            execution_count=record.execution_count,
            # The file's outputs are the client's own when they differ: a stream then
            # starts a new output rather than continue a text we do not know.
            last_stream_name=record.last_stream_name if same else "",
            stream_cursor=record.stream_cursor if same else 0,
            stream_omitted=record.stream_omitted if same else 0,
        )
        execution = Execution(
            msg_id=record.msg_id,
            kernel_id=record.kernel_id,
            cell_id=record.cell_id,
            path=record.path,
            area=area,
            running=False,
            version=1,
            written_version=1,
            seq=record.seq,
            received_chars=record.received_chars,
            client_session=record.client_session,
            # A run no client saw whole stays the server's: a tab's save may still lack it.
            server_owned=record.server_owned,
        )
        self._executions[record.msg_id] = execution
        if outputs is None:
            execution.cell_id = None
            execution.unplaced = True
        else:
            self._latest_by_cell[(record.path, record.cell_id)] = execution
        return execution

    def _keep_released(self, record: Released) -> None:
        self._released[(record.path, record.cell_id)] = record
        self._released_ids[record.msg_id] = record

    def _drop_released(self, record: Released) -> None:
        self._released.pop((record.path, record.cell_id), None)
        self._released_ids.pop(record.msg_id, None)

    def _note_replaced(self, msg_id: str) -> None:
        self._replaced[msg_id] = None
        while len(self._replaced) > REPLACED_REMEMBERED:
            self._replaced.popitem(last=False)

    def to_write(self, path: str) -> list[Execution]:
        """The placed executions of one notebook whose outputs are not on disk yet."""
        self._settle_widget_changes()
        return [
            execution
            for (cell_path, _), execution in self._latest_by_cell.items()
            if cell_path == path and execution.dirty
        ]

    def paths_to_write(self) -> set[str]:
        """Notebooks with at least one execution waiting to be written."""
        self._settle_widget_changes()
        return {path for (path, _), execution in self._latest_by_cell.items() if execution.dirty}

    def latest_of(self, path: str) -> list[Execution]:
        """The execution each cell of a notebook should hold, for every cell with one."""
        return [e for (cell_path, _), e in self._latest_by_cell.items() if cell_path == path]

    def widgets_changed(self, kernel_id: str) -> None:
        """A widget of the kernel changed and no cell's run made the change.

        Every notebook showing a widget of the kernel has news (see
        :meth:`showing_widgets`), found when next asked what to write: a scan of every
        cell held, once per round of writes however often a thread moves a slider.
        """
        self._widget_changes.add(kernel_id)

    def _settle_widget_changes(self) -> None:
        if not self._widget_changes:
            return
        kernel_ids, self._widget_changes = self._widget_changes, set()
        for kernel_id in kernel_ids:
            for execution in self.showing_widgets(kernel_id):
                execution.version += 1

    def showing_widgets(self, kernel_id: str) -> list[Execution]:
        """Per notebook, one execution of the kernel whose outputs its cell holds and
        which show a widget view: writing it brings that notebook's widget state up to
        date."""
        found: dict[str, Execution] = {}
        for (path, _), execution in self._latest_by_cell.items():
            if (
                execution.kernel_id == kernel_id
                and path not in found
                and _shows_widget(execution.area)
            ):
                found[path] = execution
        return list(found.values())

    def widget_kernels(self, path: str) -> list[KernelWidgets]:
        """The widget models of the kernels a notebook's cells ran on."""
        return self.widgets.of(self.kernels_of(path))

    def kernels_of(self, path: str) -> list[str]:
        """The kernels the runs a notebook's cells show ran on, released ones included."""
        kernel_ids = [e.kernel_id for e in self.latest_of(path)]
        kernel_ids += [r.kernel_id for r in self.released_of(path)]
        return list(dict.fromkeys(kernel_ids))

    def latest(self, path: str, cell_id: str) -> Execution | None:
        """The execution whose outputs a notebook cell should hold, if one is tracked."""
        return self._latest_by_cell.get((path, cell_id))

    def owned_record(self, path: str, cell_id: str) -> Released | None:
        """The released server-owned run a notebook cell should hold (only the file has it)."""
        record = self._released.get((path, cell_id))
        return record if record is not None and record.server_owned else None

    def note_cleared(self, record: Released) -> None:
        """The user cleared a released server-owned run's outputs: they stay cleared."""
        if self._released.get((record.path, record.cell_id)) is record:
            self._keep_released(
                dataclasses.replace(record, digest=outputs_digest([]), execution_count=None)
            )


def _renamed(path: str | None, old_path: str, new_path: str) -> str | None:
    """``path`` after ``old_path`` (a notebook or a folder) became ``new_path``; else None."""
    if path is None:
        return None
    if path == old_path:
        return new_path
    prefix = old_path.rstrip("/") + "/"
    if path.startswith(prefix):
        return new_path.rstrip("/") + "/" + path[len(prefix) :]
    return None


def _shows_widget(area: OutputArea) -> bool:
    """Whether the outputs hold a widget view (whose model's state a thread may change)."""
    return next(view_model_ids(area.outputs), None) is not None


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
