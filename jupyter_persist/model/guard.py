"""The save guard: a save never takes away captured outputs the saving tab never had.

A tab can hold a stale copy of a cell: it was offline while the cell printed, it lost
messages in flight when its connection died (a gap), or it was reopened while the cell
ran and JupyterLab never shows output of executions it did not start. When such a tab
saves (autosave, Ctrl+S, "Overwrite"), the saved cell gets the captured outputs instead.
A client that saw a whole execution keeps the last word: what it saves (for example
cleared outputs) is what the user wants. Pure: it edits the save's model, no I/O.
Nothing counts as written until the save succeeds (:meth:`SaveReport.commit`): a save
that fails (a full disk) must leave the outputs to be written again. Widget state
follows the same rules (:func:`reconcile_widget_state`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .reducer import OutputArea, normalized_outputs
from .store import CaptureStore, Execution, Released, outputs_digest
from .widgets import (
    STATE_MIME,
    KernelWidgets,
    cells_view_ids,
    notebook_widget_state,
    widget_digest,
    widget_state_document,
)


@dataclass
class SaveReport:
    """What one save did to the executions of its notebook."""

    #: The save holds exactly the captured outputs (or the client's own, which win).
    clean: list[Execution] = field(default_factory=list)
    #: The save's cells were given the captured outputs the saving tab did not have.
    restored: list[Execution] = field(default_factory=list)
    #: The user cleared complete outputs that were on disk: they stay cleared.
    cleared: list[Execution] = field(default_factory=list)
    #: Each execution whose outputs the file will hold once the save succeeds, and the
    #: version it will hold (output may arrive while the save is being written).
    saved_versions: list[tuple[Execution, int]] = field(default_factory=list)
    #: The kernels' widget state the save was given, by model id.
    widgets: dict[str, Any] = field(default_factory=dict)
    #: Saved cells that lack the outputs of a released server-owned run (only the file
    #: holds them): the save hook gives them the outputs the file holds (``read_back``).
    read_back: list[tuple[dict[str, Any], Released]] = field(default_factory=list)
    #: Released server-owned runs whose outputs the user cleared.
    cleared_records: list[Released] = field(default_factory=list)

    def commit(self) -> None:
        """The save succeeded: its executions' outputs are on disk, as of the save."""
        for execution, version in self.saved_versions:
            execution.written_version = max(execution.written_version, version)


def reconcile_save(
    store: CaptureStore, path: str, cells: list[Any], check_records: bool = True
) -> SaveReport:
    """Check each saved code cell against its captured execution; fix stale ones in place.

    ``check_records``: also check cells of released server-owned runs (a save of ours
    never touches them).
    """
    report = SaveReport()
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        execution = store.latest(path, str(cell.get("id")))
        if execution is None:
            record = store.owned_record(path, str(cell.get("id"))) if check_records else None
            if record is not None:
                _check_record(cell, record, report)
            continue
        captured = execution.area.to_json()
        saved = normalized_outputs(cell.get("outputs"))
        count = cell.get("execution_count")
        # A running cell has no count yet in JupyterLab (nor in a room we write).
        expected_counts = {execution.area.execution_count}
        if execution.running:
            expected_counts.add(None)
        if saved == captured and count in expected_counts:
            report.clean.append(execution)
        elif not execution.server_owned:
            # Every message reached a client. Once the run is over, what it saves wins;
            # while it runs, the client's copy is still growing.
            if execution.running:
                continue
            report.clean.append(execution)
        elif saved == [] and count is None and not execution.running and not execution.dirty:
            # The complete outputs were on disk and the user cleared them.
            execution.area = OutputArea()
            execution.version += 1
            report.cleared.append(execution)
        else:
            cell["outputs"] = copy.deepcopy(captured)
            cell["execution_count"] = execution.area.execution_count
            report.restored.append(execution)
        report.saved_versions.append((execution, execution.version))
    return report


def _check_record(cell: dict[str, Any], record: Released, report: SaveReport) -> None:
    """The save guard for a run whose outputs only the file holds now (see ``Released``)."""
    saved = normalized_outputs(cell.get("outputs"))
    count = cell.get("execution_count")
    same_count = count == record.execution_count
    if saved is not None and same_count and outputs_digest(saved) == record.digest:
        return
    if saved == [] and count is None:
        report.cleared_records.append(record)  # the user cleared them
    else:
        report.read_back.append((cell, record))


def reconcile_widget_state(
    content: dict[str, Any],
    kernels: list[KernelWidgets],
    written: Mapping[str, str],
    max_model_bytes: int,
) -> dict[str, Any]:
    """Give a save the kernels' state of the widget models its views reach; returns it.

    A tab saves widget state only with JupyterLab's "save widget state" setting on;
    otherwise it keeps what the file held when it was opened, or nothing. A model the
    save lacks, or holds exactly as we last wrote it (a copy carried over, now stale),
    gets the kernel's current state; a state the tab saved itself is its last word.
    """
    cells = content.get("cells")
    if not isinstance(cells, list):
        return {}
    roots = cells_view_ids(cells)
    ours = notebook_widget_state(roots, kernels, None, max_model_bytes).state if roots else {}
    metadata = content.get("metadata")
    if not ours or not isinstance(metadata, dict):
        return {}
    holder = metadata.get("widgets")
    document = holder.get(STATE_MIME) if isinstance(holder, dict) else None
    theirs = document.get("state") if isinstance(document, dict) else {}
    if not isinstance(theirs, dict) or (holder is not None and not isinstance(holder, dict)):
        return {}  # not the widget manager's format: left as the tab saved it
    put = {
        model_id: entry
        for model_id, entry in ours.items()
        if model_id not in theirs
        or (widget_digest(theirs[model_id]) == written.get(model_id) and theirs[model_id] != entry)
    }
    if not put:
        return {}
    if not isinstance(holder, dict):
        holder = metadata["widgets"] = {}
    if not isinstance(document, dict):
        document = holder[STATE_MIME] = widget_state_document({})
    document["state"] = {**theirs, **put}
    return put
