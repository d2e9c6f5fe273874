"""What the extension is capturing right now, as plain data (for the REST API and the CLI)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..kernels.lookup import find_kernel
from ..model.caps import held_size

if TYPE_CHECKING:
    from ..capture import CaptureManager


def iso_time(timestamp: float | None) -> str | None:
    """A POSIX time as ISO 8601 in UTC, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


async def capture_status(capture: CaptureManager) -> dict[str, Any]:
    """The extension's configuration and, per notebook being captured, its state.

    A notebook is listed when a notebook session has a kernel the extension listens to,
    or when outputs of one of its executions are held in memory.
    """
    sessions = await capture.locator.notebook_paths()  # kernel id → notebook path
    listened = capture.listener.kernel_ids
    notebooks: dict[str, dict[str, Any]] = {}

    def entry(path: str) -> dict[str, Any]:
        if path not in notebooks:
            notebooks[path] = {
                "path": path,
                "kernels": {},
                "running_cells": [],
                "executions": 0,
                "unwritten_executions": 0,
                "unplaced_executions": 0,
                "released_executions": 0,
                "captured_chars": 0,
                "held_bytes": 0,
                "last_write": iso_time(capture.flusher.last_written.get(path)),
                "journal": _existing(capture.recorder.journal.file_for(path)),
                "text_log": _existing(
                    capture.recorder.text_log.file_for(path) if capture.recorder.text_log else None
                ),
            }
        return notebooks[path]

    for kernel_id, path in sessions.items():
        if kernel_id in listened:
            entry(path)["kernels"][kernel_id] = _kernel(capture, kernel_id)
    for execution in capture.store.executions():
        if execution.path is None or execution.notebookless:
            continue
        item = entry(execution.path)
        item["kernels"].setdefault(execution.kernel_id, _kernel(capture, execution.kernel_id))
        item["executions"] += 1
        item["captured_chars"] += execution.received_chars
        item["held_bytes"] += held_size(execution.area.outputs)
        if execution.running and execution.cell_id is not None:
            item["running_cells"].append(execution.cell_id)
        if execution.unplaced:
            item["unplaced_executions"] += 1
        elif execution.dirty and execution.cell_id is not None:
            item["unwritten_executions"] += 1
    for record in capture.store.released_runs():
        item = entry(record.path)
        item["kernels"].setdefault(record.kernel_id, _kernel(capture, record.kernel_id))
        item["released_executions"] += 1
        item["captured_chars"] += record.received_chars
    for item in notebooks.values():
        item["kernels"] = list(item["kernels"].values())
    return {
        "version": __version__,
        "state_dir": capture.state_dir,
        "journal_dir": str(capture.recorder.journal.directory),
        "text_log_dir": capture.text_log_dir or None,
        "config": {
            "save_interval": capture.save_interval,
            "journal_interval": capture.journal_interval,
            "max_write_share": capture.max_write_share,
            "gil_switch_interval": capture.gil_switch_interval,
            "replay_buffer_max_bytes": capture.replay_buffer_max_bytes,
            "stream_head_chars": capture.limits.stream_head_chars,
            "stream_tail_chars": capture.limits.stream_tail_chars,
            "max_rich_output_bytes": capture.limits.max_rich_output_bytes,
            "iopub_reader": capture.iopub_reader,
            "reader_nice": capture.reader_nice,
            "trim_memory": capture.trim_memory,
            "freeze_startup_objects": capture.freeze_startup_objects,
            "track_kernel_activity": capture.track_kernel_activity,
        },
        "iopub_reader": capture.listener.reader_state(),
        "kernels_listened_to": len(listened),
        "kernels_activity_kept": len(capture.listener.activity.kernel_ids),
        "event_loop": capture.meter.snapshot(),
        "memory": capture.heap.snapshot(),
        "notebooks": [notebooks[path] for path in sorted(notebooks)],
    }


def _kernel(capture: CaptureManager, kernel_id: str) -> dict[str, Any]:
    kernel = find_kernel(capture.kernel_manager, kernel_id)
    state = kernel.execution_state if kernel is not None else "gone"
    return {
        "id": kernel_id,
        "execution_state": state,
        "client_attached": capture.clients.any(kernel_id),
    }


def _existing(path: Any) -> str | None:
    return str(path) if path is not None and path.exists() else None
