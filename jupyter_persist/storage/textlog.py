"""A plain-text log per notebook, as a person reads it, appended live for ``tail -f``.

Each execution starts with a header line (time, execution count, cell id); stream text
follows line by line once each line is final, with ``\\r``/``\\b`` applied as JupyterLab
does (a progress bar logs its last state); other outputs are logged as their text,
tracebacks without ANSI colour codes. It is fed every message before the size caps
apply, so it holds the whole output. Files rotate at a size, keeping one old file.

In the server, a thread of its own appends to the files: a flood's text goes to disk
as fast as it comes, and a write the kernel's page cache makes wait (writeback of a
flood) must not hold the event loop.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets.config import LoggingConfigurable

from ..model.reducer import process_text
from ..model.store import Execution

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


#: Rendered text an execution may hold before it is written without waiting for a tick.
WRITE_AT_BYTES = 1 << 20
#: Characters handed to the writing thread and not written yet past which the event
#: loop waits for it (a disk slower than the kernels' output): nothing is dropped.
QUEUED_CHARS = 64 << 20


@dataclass
class _Pending:
    """An execution's rendered text not yet written, and its unfinished last line."""

    #: Whose text it is (for the header, and to write it once the store let it go).
    execution: Execution
    rendered: list[str] = field(default_factory=list)
    size: int = 0
    #: The last line so far, with \r and \b applied, and the cursor in it.
    line: str = ""
    cursor: int = 0
    started: bool = False

    def add(self, text: str) -> None:
        self.rendered.append(text)
        self.size += len(text)

    def add_stream(self, text: str) -> None:
        # The cursor never leaves the last line, so the lines before it are final.
        line, cursor = process_text(self.cursor, text, self.line)
        cut = line.rfind("\n") + 1
        if cut:
            self.add(line[:cut])
            line, cursor = line[cut:], cursor - cut
        self.line, self.cursor = line, cursor

    def end_line(self) -> None:
        if self.line:
            self.add(self.line + "\n")
            self.line, self.cursor = "", 0


def output_text(output: dict[str, Any]) -> str:
    """The text a person would read for one non-stream output."""
    kind = output.get("output_type")
    if kind == "error":
        lines = [ANSI_ESCAPE.sub("", str(line)) for line in output.get("traceback") or []]
        text = "\n".join(lines) or f"{output.get('ename')}: {output.get('evalue')}"
    else:
        data = output.get("data") or {}
        plain = data.get("text/plain")
        if isinstance(plain, list):
            plain = "".join(plain)
        text = plain if isinstance(plain, str) else f"<{', '.join(sorted(data)) or 'no'} output>"
    return text if text.endswith("\n") else text + "\n"


class TextLog(LoggingConfigurable):
    """Appends executions' outputs to per-notebook text files under ``directory``.

    ``in_thread``: the files are written by a thread of the log's own, in order; call
    :meth:`wait` to know that what was handed over is on disk, :meth:`close` at the end.
    """

    def __init__(
        self, directory: Path, max_bytes: int, in_thread: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.directory = directory
        self.max_bytes = max_bytes
        self._pending: dict[str, _Pending] = {}
        self._in_thread = in_thread
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        #: Characters handed to the thread and not written yet, and a condition on it.
        self._queued = 0
        self._written = threading.Condition()

    def ensure_directory(self) -> None:
        """Create the log directory owner-only (an existing one is left as it is)."""
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, mode=0o700)
            os.chmod(self.directory, 0o700)  # mkdir's mode is reduced by the umask

    def file_for(self, notebook_path: str) -> Path:
        """``<name>-<hash>.log``: readable, and unique whatever the notebook's folder."""
        stem = SAFE_NAME.sub("_", Path(notebook_path).stem)[:60] or "notebook"
        digest = hashlib.sha256(notebook_path.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        return self.directory / f"{stem}-{digest}.log"

    def feed(self, execution: Execution, msg: dict[str, Any]) -> None:
        """Take note of one output message of an execution (every one, before any cap)."""
        msg_type = msg["header"]["msg_type"]
        content = msg["content"]
        if msg_type not in ("stream", "display_data", "execute_result", "error"):
            return
        pending = self._pending_of(execution)
        if msg_type == "stream":
            pending.add_stream(str(content.get("text", "")))
        else:
            pending.end_line()
            pending.add(output_text({"output_type": msg_type, **content}))
        path = _log_path(execution)
        if pending.size >= WRITE_AT_BYTES and path is not None:
            # A flood is written as it comes, not held for a whole tick.
            self._write(path, self._take(execution, pending, ended=False))

    def note(self, execution: Execution, text: str) -> None:
        """Add a line of our own (such as "waiting for input") to an execution's log."""
        pending = self._pending_of(execution)
        pending.end_line()
        pending.add(text)

    def _pending_of(self, execution: Execution) -> _Pending:
        pending = self._pending.get(execution.msg_id)
        if pending is None:
            pending = self._pending[execution.msg_id] = _Pending(execution)
        return pending

    def flush(self, executions: list[Execution]) -> None:
        """Append to the notebooks' logs the lines that became final.

        ``executions``: every execution the store holds. What is pending for any other
        (a run of a cell that the next run replaced before a tick wrote its end) is
        written as ended, and let go.
        """
        chunks: dict[str, list[str]] = {}
        held = {execution.msg_id for execution in executions}
        for msg_id, pending in list(self._pending.items()):
            execution = pending.execution
            ended = msg_id not in held or not execution.running
            path = _log_path(execution)
            if path is None:
                if msg_id not in held:
                    del self._pending[msg_id]  # never placed: goes to no log
                continue
            text = self._take(execution, pending, ended)
            if ended:
                del self._pending[msg_id]
            if text:
                chunks.setdefault(path, []).append(text)
        for path, texts in chunks.items():
            self._write(path, "".join(texts))

    def forget(self, execution: Execution) -> None:
        """Drop what is pending for an execution that goes to no notebook."""
        self._pending.pop(execution.msg_id, None)

    def _take(self, execution: Execution, pending: _Pending, ended: bool) -> str:
        """The text to append now: header first time, final lines, last line at the end."""
        parts = []
        if not pending.started:
            pending.started = True
            stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
            count = execution.area.execution_count
            prompt = count if count is not None else " "
            cell = (
                f"cell {execution.cell_id}"
                if execution.cell_id is not None
                else "no cell (not placed: see the server log)"
            )
            parts.append(f"\n=== {stamp}  In [{prompt}]  {cell} ===\n")
        if ended:
            pending.end_line()
        parts.extend(pending.rendered)
        pending.rendered.clear()
        pending.size = 0
        return "".join(parts)

    def _write(self, notebook_path: str, text: str) -> None:
        if not self._in_thread:
            self._append(notebook_path, text)
            return
        with self._written:
            while self._queued >= QUEUED_CHARS and self._thread_alive():
                self._written.wait(1.0)
            self._queued += len(text)
        if not self._thread_alive():
            self._thread = threading.Thread(
                target=self._run, name="jupyter-persist-textlog", daemon=True
            )
            self._thread.start()
        self._queue.put((notebook_path, text))

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            notebook_path, text = item
            try:
                self._append(notebook_path, text)
            except Exception:  # never end the thread: what follows must still be written
                self.log.exception("jupyter_persist: error writing the text log")
            finally:
                with self._written:
                    self._queued -= len(text)
                    self._written.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until everything handed to the writing thread is written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._written:
            while self._queued and self._thread_alive():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._written.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what the thread holds, then end it (more writes would start a new one)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._queue.put(None)
        thread.join(timeout)
        if thread.is_alive():
            self.log.warning(
                "jupyter_persist: the text log's last %d characters were not written in %.0f s",
                self._queued,
                timeout,
            )

    def _append(self, notebook_path: str, text: str) -> None:
        file = self.file_for(notebook_path)
        if "\x1b" in text:
            text = ANSI_ESCAPE.sub("", text)
        data = text.encode("utf-8", "replace")
        try:
            if file.exists() and file.stat().st_size + len(data) > self.max_bytes:
                os.replace(file, file.with_suffix(".log.1"))
            if not file.exists():
                # Names the notebook: the file name only holds a hash of its path.
                data = title_line(notebook_path).encode("utf-8", "replace") + data
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as err:
            self.log.warning("jupyter_persist: cannot write the text log %s: %s", file, err)


TITLE_PREFIX = "# jupyter-persist text log of "


def _log_path(execution: Execution) -> str | None:
    """The notebook whose log an execution's text goes to now, if any.

    Also when it could not be placed in a cell: the log is then the only file that
    holds its outputs. Not while its cell is still being looked up.
    """
    if execution.cell_id is None and not execution.unplaced:
        return None
    return execution.path


def title_line(notebook_path: str) -> str:
    """The first line of a notebook's text log."""
    return f"{TITLE_PREFIX}{notebook_path}\n"


def notebook_of_log(file: Path) -> str | None:
    """The notebook path a text log names in its first line, if it does."""
    try:
        with file.open("rb") as handle:
            first = handle.readline(4096).decode("utf-8", "replace")
    except OSError:
        return None
    if first.startswith(TITLE_PREFIX) and first.endswith("\n"):
        return first[len(TITLE_PREFIX) : -1]
    return None
