"""Size caps, so a cell that prints without end cannot exhaust memory or the notebook.

Pure, used by the reducer. A stream keeps its head and its tail with a marker between
them that says how much was left out; a rich output over its cap is replaced by a
marker. Nothing disappears silently: the text log keeps the full stream text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nbformat import NotebookNode


@dataclass(frozen=True)
class Limits:
    """Per-output caps (see the ``PersistExtension`` traits of the same names)."""

    stream_head_chars: int = 100_000
    stream_tail_chars: int = 400_000
    max_rich_output_bytes: int = 5_000_000
    #: Where the whole text can be read, for the marker.
    text_log_hint: str = "in the notebook's text log"


def omission_marker(omitted: int, limits: Limits) -> str:
    """The line standing for ``omitted`` characters taken out of a stream."""
    return (
        f"\n[... jupyter-persist left out {omitted:,} characters here to keep the notebook "
        f"small; the whole text is {limits.text_log_hint} ...]\n"
    )


def trim_stream(text: str, cursor: int, omitted: int, limits: Limits) -> tuple[str, int, int]:
    """Keep the head and the tail of a stream's text; return (text, cursor, omitted).

    ``omitted`` is how many characters were already taken out (its marker follows the
    head). Trims only once the tail is a quarter over its cap, so the cost stays
    proportional to the text that arrives; never cuts text before the cursor.
    """
    head = limits.stream_head_chars
    body_start = head + (len(omission_marker(omitted, limits)) if omitted else 0)
    rest = len(text) - body_start
    if rest <= limits.stream_tail_chars + limits.stream_tail_chars // 4:
        return text, cursor, omitted
    cut = rest - limits.stream_tail_chars
    if cursor < body_start + cut:
        return text, cursor, omitted
    omitted += cut
    marker = omission_marker(omitted, limits)
    trimmed = text[:head] + marker + text[body_start + cut :]
    return trimmed, cursor - (body_start + cut) + head + len(marker), omitted


def cap_rich_output(output: NotebookNode, limits: Limits) -> NotebookNode:
    """The output itself, or a marker output in its place when its data is over the cap."""
    data = output.get("data")
    if not isinstance(data, dict):
        return output
    size = sum(_size(value) for value in data.values())
    if size <= limits.max_rich_output_bytes:
        return output
    marker = NotebookNode(output)
    marker["data"] = {
        "text/plain": (
            f"[jupyter-persist left out a {', '.join(sorted(data))} output of {size:,} bytes: "
            f"over PersistExtension.max_rich_output_bytes ({limits.max_rich_output_bytes:,})]"
        )
    }
    marker["metadata"] = {}
    return marker


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_size(item) for item in value)
    return len(str(value))


def held_size(outputs: Iterable[Mapping[str, Any]]) -> int:
    """Characters of outputs' text, data and tracebacks: about the bytes holding them takes."""
    total = 0
    for output in outputs:
        for key in ("text", "traceback"):
            if key in output:
                total += _size(output[key])
        data = output.get("data")
        if isinstance(data, Mapping):
            total += sum(_size(value) for value in data.values())
    return total


def output_message_size(msg_type: str, content: dict[str, Any]) -> int:
    """Characters of output an IOPub message carries (before any cap), for status reports."""
    if msg_type == "stream":
        return len(content.get("text") or "")
    if msg_type == "error":
        return sum(_size(line) for line in content.get("traceback") or [])
    data = content.get("data")
    if isinstance(data, dict):
        return sum(_size(value) for value in data.values())
    return 0
