"""A crash journal: every output change, appended within ``journal_interval`` of happening.

One append-only JSON-lines file per notebook under the state directory. Each record
holds an execution's outputs as a diff against its previous record (the outputs it kept,
the characters of the next stream it kept, and the new tail), so the bytes written grow
with the new output, not with the size of the cell or the notebook. After a crash the
records are folded back into outputs and merged into the notebooks.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbformat import NotebookNode
from traitlets.config import LoggingConfigurable

from ..model.caps import held_size
from ..model.store import Execution

JOURNAL_SUFFIX = ".journal.jsonl"


def output_diff(old: tuple[Any, ...], new: tuple[Any, ...]) -> tuple[int, int, list[Any]]:
    """Describe ``new`` as (outputs kept from ``old``, stream characters kept, new tail).

    ``old[:keep]`` is unchanged; when ``keep_text`` > 0 the first tail output is a stream
    whose text continues ``old[keep]``'s first ``keep_text`` characters.
    """
    keep = 0
    while keep < len(old) and keep < len(new) and old[keep] is new[keep]:
        keep += 1
    while keep < len(old) and keep < len(new) and old[keep] == new[keep]:
        keep += 1
    tail = [dict(output) for output in new[keep:]]
    keep_text = 0
    if keep < len(old) and tail and _same_stream(old[keep], tail[0]):
        old_text, new_text = old[keep]["text"], tail[0]["text"]
        keep_text = common_prefix_length(old_text, new_text)
        tail[0]["text"] = new_text[keep_text:]
    return keep, keep_text, tail


def common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix of ``a`` and ``b``.

    Slice comparisons run in C: a stream that grew (the common case) costs one
    comparison; otherwise a bisection, instead of a Python loop per character.
    """
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low]; a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle
    return low


def apply_diff(old: list[dict[str, Any]], keep: int, keep_text: int, tail: list[Any]) -> list[Any]:
    """Rebuild outputs from the previous ones and a diff made by :func:`output_diff`."""
    if keep > len(old):
        raise ValueError("journal record keeps more outputs than its execution had")
    outputs = [*old[:keep], *(dict(output) for output in tail)]
    if keep_text:
        if keep >= len(old) or len(outputs) <= keep or not _same_stream(old[keep], outputs[keep]):
            raise ValueError("journal record continues a stream that is not there")
        outputs[keep]["text"] = old[keep]["text"][:keep_text] + outputs[keep]["text"]
    return outputs


def _same_stream(a: Any, b: Any) -> bool:
    return (
        a.get("output_type") == "stream" == b.get("output_type")
        and a.get("name") == b.get("name")
        and isinstance(a.get("text"), str)
        and isinstance(b.get("text"), str)
    )


def _record(
    execution: Execution, path: str, keep: int, keep_text: int, tail: list[Any]
) -> dict[str, Any]:
    """One journal line: an execution's outputs as a diff against its previous line."""
    return {
        "t": time.time(),
        "path": path,
        "cell": execution.cell_id,
        "exec": execution.msg_id,
        "kernel": execution.kernel_id,
        "count": execution.area.execution_count,
        "keep": keep,
        "keep_text": keep_text,
        "tail": tail,
    }


@dataclass
class JournaledCell:
    """The latest journaled state of one notebook cell."""

    path: str
    cell_id: str
    msg_id: str
    outputs: list[dict[str, Any]]
    execution_count: int | None
    time: float


def fold(records: list[dict[str, Any]]) -> dict[tuple[str, str], JournaledCell]:
    """Fold journal records into the latest outputs of each (notebook, cell)."""
    by_execution: dict[str, JournaledCell] = {}
    cells: dict[tuple[str, str], JournaledCell] = {}
    for record in records:
        msg_id = record["exec"]
        previous = by_execution.get(msg_id)
        before = previous.outputs if previous else []
        outputs = apply_diff(before, record["keep"], record["keep_text"], record["tail"])
        cell = JournaledCell(
            record["path"], record["cell"], msg_id, outputs, record.get("count"), record["t"]
        )
        by_execution[msg_id] = cell
        cells[(cell.path, cell.cell_id)] = cell
    return cells


class Journal(LoggingConfigurable):
    """Appends execution diffs to per-notebook journal files; reads them back."""

    def __init__(self, directory: Path, compact_bytes: int = 4_000_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.directory = directory
        #: A journal is compacted when it grows past this, or twice its last compacted size.
        self.compact_bytes = compact_bytes
        self._compact_at: dict[str, int] = {}
        #: Per execution: the outputs and path as last journaled.
        self._journaled: dict[str, tuple[tuple[NotebookNode, ...], str, int]] = {}
        #: Notebooks whose last append failed: their journal is rewritten whole next.
        self._failed: set[str] = set()
        #: The steps of an append in steps, between two of them (``append_in_steps``).
        self._in_progress: Generator[None, None, int] | None = None

    def ensure_directory(self) -> None:
        """Create the journal directory, owner-only."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)

    def file_for(self, notebook_path: str) -> Path:
        """The journal file of a notebook (named by a hash: paths may hold anything)."""
        digest = hashlib.sha256(notebook_path.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return self.directory / f"{digest}{JOURNAL_SUFFIX}"

    def append(self, executions: list[Execution]) -> int:
        """Append a record for each execution whose outputs changed since its last one.

        ``executions``: every execution the store holds with a notebook cell; what the
        journal remembers of any other is dropped. Returns the number of bytes written.
        """
        self.stop_appending()
        steps = self._append_steps(executions, None)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return int(done.value)

    def stop_appending(self) -> None:
        """End an append in steps that is between two steps; the next append does the rest.

        Whatever else changes the journal (an append, a removal, a compaction) does this
        first, so nothing changes it between two steps: each step's records are on disk
        (or their notebook is marked failed) before it yields, and what the append had
        not come to yet is encoded afresh, from the current outputs, by the next one.
        """
        steps, self._in_progress = self._in_progress, None
        if steps is not None:
            steps.close()

    async def append_in_steps(self, executions: list[Execution], step_seconds: float) -> int | None:
        """:meth:`append`, giving the event loop back after about each ``step_seconds``.

        Returns the bytes written, or None if another call ended the steps first
        (:meth:`stop_appending`): whether the append failed is then the next one's to say.
        """
        self.stop_appending()
        steps = self._append_steps(executions, step_seconds)
        self._in_progress = steps
        try:
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    return int(done.value)
                await asyncio.sleep(0)
                if self._in_progress is not steps:
                    return None
        finally:
            if self._in_progress is steps:  # an error, or the task cancelled
                self.stop_appending()

    def _append_steps(
        self, executions: list[Execution], step_seconds: float | None
    ) -> Generator[None, None, int]:
        """The work of an append, pausing (yielding) after each ``step_seconds`` (None: never).

        Encoding what 16 runs of 400 kB printed in a second held the event loop 50-90 ms
        in one piece; a step is about one run's record. Counted in the loop thread's CPU
        time, not wall time: on a machine with no free core a step of 5 ms of wall time
        holds less work, and each of the steps then waits a whole turn of a busy loop.
        """
        lines: dict[str, list[str]] = {}
        written = 0
        failure: OSError | None = None
        #: Notebooks whose journal failed in this append: tried again at the next one.
        failed_now: set[str] = set()
        started = time.thread_time()
        for execution in executions:
            if execution.path is None or execution.cell_id is None:
                continue
            area = execution.area
            last = self._journaled.get(execution.msg_id)
            if last is not None and last[2] == execution.version:
                continue
            old = last[0] if last is not None and last[1] == execution.path else ()
            keep, keep_text, tail = output_diff(old, area.outputs)
            record = _record(execution, execution.path, keep, keep_text, tail)
            line = json.dumps(record, ensure_ascii=False, default=str)
            lines.setdefault(execution.path, []).append(line)
            self._journaled[execution.msg_id] = (area.outputs, execution.path, execution.version)
            if step_seconds is not None and time.thread_time() - started >= step_seconds:
                step_written, step_failure = self._write_lines(lines, executions, failed_now)
                written += step_written
                failure = failure or step_failure
                lines = {}
                yield
                started = time.thread_time()
        # What the store no longer holds (a cell run again replaced it) needs no diff base:
        # kept, every run of a cell would stay in memory until the notebook's journal goes.
        current = {execution.msg_id for execution in executions}
        for msg_id in [m for m in self._journaled if m not in current]:
            del self._journaled[msg_id]
        step_written, step_failure = self._write_lines(
            lines, executions, failed_now, retry_failed=True
        )
        written += step_written
        failure = failure or step_failure
        if failure is not None:
            raise failure
        return written

    def _write_lines(
        self,
        lines: dict[str, list[str]],
        executions: list[Execution],
        failed_now: set[str],
        retry_failed: bool = False,
    ) -> tuple[int, OSError | None]:
        """Append each notebook's new lines; a journal that failed before is rewritten whole.

        ``retry_failed``: also those with no new lines. Notebooks in ``failed_now`` (which
        this adds to) are left for the next append.
        """
        written = 0
        failure: OSError | None = None
        retried = sorted(self._failed - lines.keys()) if retry_failed else []
        for path in [*lines, *retried]:
            if path in failed_now:
                continue
            file = self.file_for(path)
            try:
                if path in self._failed:
                    # A record went missing or was cut short: its successors would hold
                    # only what changed since it, so start over from whole records.
                    written += self._compact(path, _of_notebook(executions, path))
                    self._failed.discard(path)
                    continue
                data = ("\n".join(lines[path]) + "\n").encode("utf-8", "surrogatepass")
                written += _write_all(self._append_bytes(file, data), data, file)
                size = file.stat().st_size
                if size > self._compact_at.get(path, self.compact_bytes):
                    self._compact_if_half_stale(path, _of_notebook(executions, path), size)
            except OSError as err:
                self._failed.add(path)
                failed_now.add(path)
                failure = failure or err
        return written, failure

    def _compact_if_half_stale(
        self, notebook_path: str, executions: list[Execution], size: int
    ) -> None:
        """Compact when at least half of the file is records a compaction would drop.

        A journal of many runs that each printed once (150 cells of 400 kB, none saved
        yet) holds little to drop: rewriting its 60 MB held the event loop 460 ms, for
        nothing. It is looked at again at twice its size.
        """
        current = sum(held_size(e.area.outputs) for e in executions if e.cell_id is not None)
        if size > 2 * current:
            self._compact(notebook_path, executions)
        else:
            self._compact_at[notebook_path] = 2 * size

    def compact(self, notebook_path: str, executions: list[Execution]) -> int:
        """Rewrite a notebook's journal as one full record per current execution.

        The journal then holds only what rebuilds the current outputs, so it never grows
        without bound however long a cell prints. Returns the bytes written. The old
        journal stays in place if the new one cannot be written whole.
        """
        self.stop_appending()
        return self._compact(notebook_path, executions)

    def _compact(self, notebook_path: str, executions: list[Execution]) -> int:
        records = []
        for execution in sorted(executions, key=lambda e: e.seq):
            if execution.cell_id is None:
                continue
            area = execution.area
            record = _record(execution, notebook_path, 0, 0, [dict(o) for o in area.outputs])
            records.append(json.dumps(record, ensure_ascii=False, default=str))
            self._journaled[execution.msg_id] = (area.outputs, notebook_path, execution.version)
        file = self.file_for(notebook_path)
        temporary = file.with_suffix(".compacting")
        data = "".join(line + "\n" for line in records).encode("utf-8", "surrogatepass")
        temporary.unlink(missing_ok=True)
        try:
            _write_all(self._append_bytes(temporary, data), data, temporary)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        os.replace(temporary, file)
        self._compact_at[notebook_path] = max(self.compact_bytes, 2 * len(data))
        self.log.debug("jupyter_persist: compacted %s to %d bytes", file, len(data))
        return len(data)

    def _append_bytes(self, file: Path, data: bytes) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        fd = os.open(file, flags, 0o600)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)

    def read(self, file: Path) -> list[dict[str, Any]]:
        """The valid records of a journal file, in order; a corrupt tail is dropped."""
        records = []
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    record = json.loads(raw.decode("utf-8", "surrogatepass"))
                    if not isinstance(record, dict) or not isinstance(record.get("tail"), list):
                        raise ValueError("not a journal record")
                    records.append(record)
                except (ValueError, UnicodeDecodeError) as err:
                    self.log.warning(
                        "jupyter_persist: journal %s is damaged at line %d (%s); "
                        "recovering the %d records before it",
                        file,
                        number,
                        err,
                        len(records),
                    )
                    break
        return records

    def remove(self, notebook_path: str) -> None:
        """Delete a notebook's journal (its outputs are all on disk)."""
        self.stop_appending()
        self.file_for(notebook_path).unlink(missing_ok=True)
        self._failed.discard(notebook_path)
        self._compact_at.pop(notebook_path, None)
        for msg_id in [m for m, (_, path, _) in self._journaled.items() if path == notebook_path]:
            del self._journaled[msg_id]

    def files(self) -> list[Path]:
        """Every journal file in the directory."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"*{JOURNAL_SUFFIX}"))


def _of_notebook(executions: list[Execution], notebook_path: str) -> list[Execution]:
    return [e for e in executions if e.path == notebook_path]


def _write_all(count: int, data: bytes, file: Path) -> int:
    """``count``, if it is all of ``data``; raises otherwise (a full disk's short write)."""
    if count < len(data):
        raise OSError(errno.ENOSPC, f"wrote {count} of {len(data)} bytes", str(file))
    return count
