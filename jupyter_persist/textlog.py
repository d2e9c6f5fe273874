"""A plain-text log per notebook, as a person reads it, appended live for ``tail -f``.

Each execution starts with a header line (time, execution count, cell id); stream text
follows line by line once each line is final (``\\r`` progress is already folded by the
reducer, so a progress bar logs its last state); other outputs are logged as their text,
tracebacks without ANSI colour codes. Files rotate at a size, keeping one old file.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets.config import LoggingConfigurable

from .store import Execution

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class _Logged:
    """How much of an execution's outputs is in the log already."""

    outputs: int = 0  # outputs fully logged
    chars: int = 0  # characters of the next (stream) output logged
    outputs_seen: tuple[Any, ...] = ()


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
        self._logged: dict[str, _Logged] = {}
        #: Version of each execution as last logged, to skip what did not change.
        self._versions: dict[str, tuple[int, bool]] = {}

    def file_for(self, notebook_path: str) -> Path:
        """``<name>-<hash>.log``: readable, and unique whatever the notebook's folder."""
        stem = SAFE_NAME.sub("_", Path(notebook_path).stem)[:60] or "notebook"
        digest = hashlib.sha256(notebook_path.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        return self.directory / f"{stem}-{digest}.log"

    def append(self, executions: list[Execution]) -> None:
        """Log what is new and final in each execution's outputs."""
        chunks: dict[str, list[str]] = {}
        for execution in executions:
            if execution.path is None or execution.cell_id is None:
                continue
            if self._versions.get(execution.msg_id) == (execution.version, execution.running):
                continue
            self._versions[execution.msg_id] = (execution.version, execution.running)
            text = self._new_text(execution)
            if text:
                chunks.setdefault(execution.path, []).append(text)
        for path, texts in chunks.items():
            self._write(self.file_for(path), "".join(texts))

    def _new_text(self, execution: Execution) -> str:
        logged = self._logged.get(execution.msg_id)
        parts = []
        if logged is None:
            logged = self._logged[execution.msg_id] = _Logged()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
            count = execution.area.execution_count
            prompt = count if count is not None else " "
            parts.append(f"\n=== {stamp}  In [{prompt}]  cell {execution.cell_id} ===\n")
        outputs = execution.area.outputs
        seen = logged.outputs_seen[: logged.outputs]
        if logged.outputs > len(outputs) or outputs[: logged.outputs] != seen:
            logged.outputs, logged.chars = 0, 0  # cleared (clear_output): log anew
        while logged.outputs < len(outputs):
            output = outputs[logged.outputs]
            last = logged.outputs == len(outputs) - 1
            if output.get("output_type") == "stream":
                text = output.get("text", "")
                final = len(text) if (not last or not execution.running) else text.rfind("\n") + 1
                if final > logged.chars:
                    parts.append(text[logged.chars : final])
                    logged.chars = final
                if last and execution.running:
                    break
                if text and not text.endswith("\n"):
                    parts.append("\n")
            elif last and execution.running and output.get("output_type") == "display_data":
                break  # may still be updated; logged when the next output comes or at the end
            else:
                parts.append(output_text(output))
            logged.outputs += 1
            logged.chars = 0
        logged.outputs_seen = outputs
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
