"""The ContentsManager's save hooks: every save of a notebook passes the save guard.

Registered as the pre- and post-save hooks, so they see a browser's saves, ours, a
collaboration room's and any API client's. The guard itself (:mod:`.guard`) is pure;
this module is the I/O around it: catching up with the kernels first, logging, and
committing what a save wrote only once it succeeded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from traitlets.config import LoggingConfigurable

from ..meter import LoopMeter
from ..model.guard import SaveReport, reconcile_save, reconcile_widget_state
from ..model.reducer import normalized_outputs
from ..model.store import CaptureStore, outputs_digest
from .releases import ReleaseQueue


def can_read_back(contents_manager: Any) -> bool:
    """Whether a save hook can read the notebook a save replaces (a file on this disk)."""
    return callable(getattr(contents_manager, "_get_os_path", None))


def saved_cell_outputs(contents_manager: Any, path: str, cell_ids: set[str]) -> dict[str, Any]:
    """The outputs of cells ``cell_ids`` as the file being replaced holds them, normalized.

    Read from the disk directly: a pre-save hook runs inside the ContentsManager's save
    and cannot await its ``get``. Raises ``OSError`` or ``ValueError``.
    """
    with open(contents_manager._get_os_path(path), encoding="utf-8") as file:
        notebook = json.load(file)
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    found: dict[str, Any] = {}
    for cell in cells if isinstance(cells, list) else []:
        if isinstance(cell, dict) and cell.get("id") in cell_ids:
            outputs = normalized_outputs(cell.get("outputs"))
            if outputs is not None:
                found[cell["id"]] = outputs
    return found


#: The event-loop time of the save guard (see :class:`.LoopMeter`).
SAVE_GUARD = "save_guard"


class SaveHooks(LoggingConfigurable):
    """Pre- and post-save hooks that run the save guard on every notebook save."""

    def __init__(
        self,
        store: CaptureStore,
        catch_up: Callable[[], None],
        saving: set[str],
        on_saved_by_others: Callable[[str], None] | None = None,
        *,
        meter: LoopMeter | None = None,
        releases: ReleaseQueue | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        #: The guard runs inside the ContentsManager's save: counted apart from it.
        self.meter = meter or LoopMeter()
        self.store = store
        self.releases = releases or ReleaseQueue(store, meter=self.meter, parent=self)
        #: Handles what the kernels sent and the server has not handled yet.
        self.catch_up = catch_up
        #: Notebooks the extension itself is saving right now (owned by the flusher).
        self.saving = saving
        #: Called with the path after a save that was not ours succeeded.
        self.on_saved_by_others = on_saved_by_others
        #: Per notebook, the save guard's report of a save not known to have succeeded.
        self._saves_in_flight: dict[str, SaveReport] = {}

    def on_pre_save(self, model: dict[str, Any], path: str, **kwargs: Any) -> None:
        """ContentsManager pre-save hook: the save guard (see :mod:`jupyter_persist.model.guard`).

        It gives cells the captured outputs a stale tab did not have, and learns which
        outputs the file will hold.
        """
        with self.meter.timing(SAVE_GUARD):
            self._check_save(model, path, kwargs.get("contents_manager"))

    def _check_save(self, model: dict[str, Any], path: str, contents_manager: Any) -> None:
        try:
            if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
                return
            cells = model["content"].get("cells")
            if not isinstance(cells, list):
                return
            path = path.strip("/")
            if path not in self.saving:
                self._catch_up_before(path)
            report = reconcile_save(self.store, path, cells, check_records=path not in self.saving)
            if report.read_back:
                self._read_back(report, path, contents_manager)
            if path not in self.saving:
                report.widgets = reconcile_widget_state(
                    model["content"],
                    self.store.widget_kernels(path),
                    self.store.widgets.written(path),
                    self.store.limits.max_rich_output_bytes,
                )
            # Committed by on_post_save, which the ContentsManager calls only when the
            # save succeeded. Keyed by path: two saves of one notebook in flight at once
            # (ours are serialized per notebook) would share the later one's report.
            self._saves_in_flight[path] = report
            # Our own save may also get output that arrived while it was being prepared.
            level = logging.DEBUG if path in self.saving else logging.INFO
            for execution in report.restored:
                self.log.log(
                    level,
                    "jupyter_persist: a save of %s lacked captured outputs of cell %s; kept them",
                    path,
                    execution.cell_id,
                )
            if report.widgets:
                self.log.info(
                    "jupyter_persist: a save of %s lacked the state of %d widget model(s); "
                    "kept the kernel's",
                    path,
                    len(report.widgets),
                )
            cleared_cells = [e.cell_id for e in report.cleared]
            for cell_id in cleared_cells + [r.cell_id for r in report.cleared_records]:
                self.log.info(
                    "jupyter_persist: outputs of cell %s of %s cleared by the user", cell_id, path
                )
        except Exception as err:
            self.log.warning("jupyter_persist: could not check a save of %s: %s", path, err)

    def _read_back(self, report: SaveReport, path: str, contents_manager: Any) -> None:
        """Give stale cells the outputs of released server-owned runs, from the file."""
        wanted = {record.cell_id for _, record in report.read_back}
        try:
            on_disk = saved_cell_outputs(contents_manager, path, wanted)
        except Exception as err:
            on_disk = {}
            self.log.warning(
                "jupyter_persist: could not read %s to keep its captured outputs in a save: %s",
                path,
                err,
            )
        for cell, record in report.read_back:
            outputs = on_disk.get(record.cell_id)
            if outputs is None or outputs_digest(outputs) != record.digest:
                self.log.warning(
                    "jupyter_persist: the captured outputs of cell %s of %s are no longer in "
                    "the file (changed outside Jupyter?); the save keeps its own",
                    record.cell_id,
                    path,
                )
                continue
            cell["outputs"] = outputs
            cell["execution_count"] = record.execution_count
            self.log.info(
                "jupyter_persist: a save of %s lacked captured outputs of cell %s; kept them",
                path,
                record.cell_id,
            )

    def on_post_save(self, model: dict[str, Any], os_path: str, **kwargs: Any) -> None:
        """ContentsManager post-save hook: the save's outputs are on disk now."""
        with self.meter.timing(SAVE_GUARD):
            try:
                path = str(model.get("path", "")).strip("/")
                report = self._saves_in_flight.pop(path, None)
                if report is not None:
                    report.commit()
                    if report.widgets:
                        self.store.widgets.wrote(path, report.widgets, only_these=False)
                    # What a client saw whole is in the file now: its outputs need not stay
                    # in memory too (the store keeps what a late message needs to find them).
                    self.releases.saved_by_client(e for e, _ in report.saved_versions)
                    for record in report.cleared_records:
                        self.store.note_cleared(record)
                if path not in self.saving and self.on_saved_by_others is not None:
                    self.on_saved_by_others(path)
            except Exception as err:
                self.log.warning("jupyter_persist: could not note a save of %s: %s", os_path, err)

    def _catch_up_before(self, path: str) -> None:
        """Handle what the kernels sent before a client's save, which it may have shown."""
        try:
            self.catch_up()
        except Exception as err:
            self.log.warning("jupyter_persist: could not catch up before saving %s: %s", path, err)
