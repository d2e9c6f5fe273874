"""Restore on start: merge outputs from crash journals into their notebooks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from nbformat import NotebookNode

from ..model.reducer import normalized_outputs
from .journal import Journal, JournaledCell, fold
from .writer import CellUpdate, NotebookUnavailable, NotebookWriter


async def restore_journals(journal: Journal, writer: NotebookWriter, log: logging.Logger) -> None:
    """Merge every journal left by a previous server into its notebook, then delete it.

    A notebook saved after the journal's last record, with outputs that differ from the
    journal's, was changed by the user in the meantime: it is left alone and the journal
    kept, with a WARNING. So is a notebook that cannot be read or lacks a journaled cell.
    """
    for file in journal.files():
        try:
            cells = fold(journal.read(file))
        except (KeyError, TypeError, ValueError) as err:
            log.warning("jupyter_persist: journal %s cannot be replayed (%s); kept", file, err)
            continue
        by_path: dict[str, list[JournaledCell]] = {}
        for cell in cells.values():
            by_path.setdefault(cell.path, []).append(cell)
        keep = False
        for path, journaled in by_path.items():
            keep = not await _restore_notebook(writer, path, journaled, file, log) or keep
        if not keep:
            file.unlink(missing_ok=True)


@dataclass
class RestorePlan:
    """What merging a notebook's journaled cells into it would do."""

    updates: dict[str, CellUpdate]
    #: Journaled cells whose outputs or count differ from the notebook's.
    differs: list[JournaledCell]
    #: The notebook was saved after the journal's last record, with other outputs: the
    #: user changed it since, and restoring would undo that.
    changed_since: datetime | None
    last_record: datetime


def plan_restore(
    notebook: NotebookNode, modified: datetime | None, journaled: list[JournaledCell]
) -> RestorePlan:
    """Compare a notebook with its journaled cells (pure: nothing is written)."""
    on_disk = {c.get("id"): c for c in notebook.cells if c.get("cell_type") == "code"}
    differs = [
        cell
        for cell in journaled
        if cell.cell_id in on_disk
        and (
            normalized_outputs(on_disk[cell.cell_id].get("outputs")) != cell.outputs
            or on_disk[cell.cell_id].get("execution_count") != cell.execution_count
        )
    ]
    last_record = max(cell.time for cell in journaled)
    changed = differs and modified is not None and modified.timestamp() > last_record + 1
    return RestorePlan(
        updates={c.cell_id: CellUpdate(c.outputs, c.execution_count) for c in journaled},
        differs=differs,
        changed_since=modified if changed else None,
        last_record=datetime.fromtimestamp(last_record, tz=timezone.utc),
    )


async def _restore_notebook(
    writer: NotebookWriter,
    path: str,
    journaled: list[JournaledCell],
    file: Path,
    log: logging.Logger,
) -> bool:
    """Merge one notebook's journaled cells; True when the journal is no longer needed."""
    try:
        notebook, modified = await writer.read_with_time(path)
    except NotebookUnavailable as err:
        log.warning("jupyter_persist: cannot restore outputs from %s: %s; journal kept", file, err)
        return False
    plan = plan_restore(notebook, modified, journaled)
    if plan.changed_since is not None:
        log.warning(
            "jupyter_persist: %s changed after the journal %s was last written "
            "(%s > %s); not restoring over it, journal kept",
            path,
            file,
            plan.changed_since.isoformat(),
            plan.last_record.isoformat(),
        )
        return False
    result = await writer.merge(path, plan.updates)
    if result.missing:
        log.warning(
            "jupyter_persist: %d journaled cell(s) of %s no longer exist; journal %s kept",
            len(result.missing),
            path,
            file,
        )
        return False
    log.info(
        "jupyter_persist: restored %d cell(s) of %s from the journal %s",
        len(plan.differs),
        path,
        file,
    )
    return True
