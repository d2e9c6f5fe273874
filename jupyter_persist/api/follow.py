"""What a page following a notebook is sent: its captured executions, then their changes.

The page's frontend extension (``src/``) puts these outputs into the cells of executions
it did not start: JupyterLab shows only the output of executions a page started itself,
so a page reopened while a cell runs would otherwise show that cell empty until the
run ends. The outputs are the reducer's own, so what the page shows is what the file
gets. Pure: reads the store, no I/O.

Messages (JSON):

- ``{"type": "snapshot", "collaborative": bool, "executions": [change, ...]}`` first;
- ``{"type": "update", "executions": [change, ...], "gone": [cell id, ...]}`` after,
  only when something changed.

A change describes one cell's latest execution: ``msg_id``, ``cell_id``,
``execution_count``, ``running``, ``client_session`` (the ``header.session`` of its
``execute_request``: JupyterLab's ``kernel.clientId``), ``written`` (its outputs are in
the file), and its outputs as a diff against what the page was sent before for the
same ``msg_id``: ``keep`` outputs kept, the first ``keep_text`` UTF-16 code units of the
next (stream) output kept, as JavaScript counts them, then ``tail`` (see
:func:`.journal.output_diff`). A new execution of a cell starts from no outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model.store import CaptureStore, Execution, Released
from ..storage.journal import output_diff


@dataclass(frozen=True)
class _Sent:
    msg_id: str
    version: int
    running: bool
    execution_count: int | None
    outputs: tuple[Any, ...]


def describe(execution: Execution) -> dict[str, Any]:
    """An execution as the REST API shows it (whole outputs)."""
    return {
        "msg_id": execution.msg_id,
        "cell_id": execution.cell_id,
        "outputs": execution.area.to_json(),
        "execution_count": execution.area.execution_count,
        "running": execution.running,
        "client_session": execution.client_session,
        "written": not execution.dirty,
    }


def describe_released(record: Released, outputs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A released run as the REST API shows it, with its outputs as the file holds them.

    ``outputs`` is None when its cell is no longer in the file.
    """
    return {
        "msg_id": record.msg_id,
        "cell_id": record.cell_id,
        "outputs": outputs,
        "execution_count": record.execution_count,
        "running": False,
        "client_session": record.client_session,
        "written": True,
        "released": True,
    }


class FollowView:
    """One follow socket's view of a notebook: what it was sent, and what to send next."""

    def __init__(self, store: CaptureStore, path: str) -> None:
        self.store = store
        self.path = path
        self._sent: dict[str, _Sent] = {}
        self._started = False

    def next_message(self, collaborative: bool = False) -> dict[str, Any] | None:
        """The snapshot on the first call; then the changes since, or None if none."""
        current = {str(e.cell_id): e for e in self.store.latest_of(self.path)}
        changes = [
            self._change(cell_id, execution)
            for cell_id, execution in sorted(current.items(), key=lambda item: item[1].seq)
            if self._changed(cell_id, execution)
        ]
        gone = sorted(set(self._sent) - set(current))
        for cell_id in gone:
            del self._sent[cell_id]
        if not self._started:
            self._started = True
            return {"type": "snapshot", "collaborative": collaborative, "executions": changes}
        if not changes and not gone:
            return None
        return {"type": "update", "executions": changes, "gone": gone}

    def _changed(self, cell_id: str, execution: Execution) -> bool:
        sent = self._sent.get(cell_id)
        return sent is None or sent != self._state(execution)

    @staticmethod
    def _state(execution: Execution) -> _Sent:
        return _Sent(
            execution.msg_id,
            execution.version,
            execution.running,
            execution.area.execution_count,
            execution.area.outputs,
        )

    def _change(self, cell_id: str, execution: Execution) -> dict[str, Any]:
        sent = self._sent.get(cell_id)
        before = sent.outputs if sent is not None and sent.msg_id == execution.msg_id else ()
        state = self._state(execution)
        keep, keep_text, tail = output_diff(before, state.outputs)
        if keep_text:
            keep_text = utf16_length(before[keep]["text"][:keep_text])
        self._sent[cell_id] = state
        return {
            "msg_id": execution.msg_id,
            "cell_id": cell_id,
            "keep": keep,
            "keep_text": keep_text,
            "tail": tail,
            "execution_count": state.execution_count,
            "running": state.running,
            "client_session": execution.client_session,
            "written": not execution.dirty,
        }


def utf16_length(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, as JavaScript strings count it."""
    return len(text.encode("utf-16-le")) // 2
