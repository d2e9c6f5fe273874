"""A plain-text log per notebook, as a person reads it, appended live for ``tail -f``.

Each execution starts with a header line (time, execution count, cell id); stream text
follows line by line once each line is final, with ``\\r``/``\\b`` applied as JupyterLab
does (a progress bar logs its last state); other outputs are logged as their text,
tracebacks without ANSI colour codes. It is fed every message before the size caps
apply, so it holds the whole output. Files rotate at a size, keeping one old file.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets.config import LoggingConfigurable

from .reducer import process_text
from .store import Execution

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class _Pending:
    """What an execution printed since the last flush, and its unfinished line."""

    items: list[tuple[str, str]] = field(default_factory=list)  # ("stream"|"text", text)
    partial: str = ""
    started: bool = False


def _fold(line: str) -> str:
    """A line as JupyterLab shows it: ``\\r`` and ``\\b`` applied."""
    return process_text(0, line)[0] if ("\r" in line or "\b" in line) else line


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
    """Appends executions' outputs to per-notebook text files under ``directory``."""

    def __init__(self, directory: Path, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.directory = directory
        self.max_bytes = max_bytes
        self._pending: dict[str, _Pending] = {}

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
        if msg_type == "stream":
            item = ("stream", str(content.get("text", "")))
        elif msg_type in ("display_data", "execute_result", "error"):
            item = ("text", output_text({"output_type": msg_type, **content}))
        else:
            return
        self._pending.setdefault(execution.msg_id, _Pending()).items.append(item)

    def note(self, execution: Execution, text: str) -> None:
        """Add a line of our own (such as "waiting for input") to an execution's log."""
        self._pending.setdefault(execution.msg_id, _Pending()).items.append(("text", text))

    def flush(self, executions: list[Execution]) -> None:
        """Append to the notebooks' logs the lines that became final."""
        chunks: dict[str, list[str]] = {}
        for execution in executions:
            pending = self._pending.get(execution.msg_id)
            if pending is None or execution.path is None or execution.cell_id is None:
                continue
            text = self._render(execution, pending)
            if not execution.running:
                del self._pending[execution.msg_id]
            if text:
                chunks.setdefault(execution.path, []).append(text)
        for path, texts in chunks.items():
            self._write(self.file_for(path), "".join(texts))

    def forget(self, execution: Execution) -> None:
        """Drop what is pending for an execution that goes to no notebook."""
        self._pending.pop(execution.msg_id, None)

    def _render(self, execution: Execution, pending: _Pending) -> str:
        parts = []
        if not pending.started:
            pending.started = True
            stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
            count = execution.area.execution_count
            prompt = count if count is not None else " "
            parts.append(f"\n=== {stamp}  In [{prompt}]  cell {execution.cell_id} ===\n")
        for kind, text in pending.items:
            if kind == "stream":
                lines = (pending.partial + text).split("\n")
                pending.partial = lines.pop()
                parts.extend(_fold(line) + "\n" for line in lines)
            else:
                if pending.partial:
                    parts.append(_fold(pending.partial) + "\n")
                    pending.partial = ""
                parts.append(text)
        pending.items.clear()
        if not execution.running and pending.partial:
            parts.append(_fold(pending.partial) + "\n")
            pending.partial = ""
        return "".join(parts)

    def _write(self, file: Path, text: str) -> None:
        data = ANSI_ESCAPE.sub("", text).encode("utf-8", "replace")
        try:
            if file.exists() and file.stat().st_size + len(data) > self.max_bytes:
                os.replace(file, file.with_suffix(".log.1"))
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as err:
            self.log.warning("jupyter_persist: cannot write the text log %s: %s", file, err)
