"""Turn IOPub messages into nbformat outputs, deciding what JupyterLab's output area decides.

This module is pure: no I/O, no server, no logging. Every function takes an
:class:`OutputArea` and returns a new one; the argument is never mutated, so a
caller can keep the previous state or compare before and after.

The reference is JupyterLab 4.6's ``OutputAreaModel`` (``packages/outputarea/src/model.ts``)
and ``OutputArea._onIOPub`` (``widget.ts``), plus the kernel connection's display-id
handling in ``@jupyterlab/services``: what those keep in their model is what JupyterLab
saves, so it is what we save.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from nbformat import NotebookNode
from nbformat.v4 import output_from_msg

from .caps import Limits, cap_rich_output, trim_stream

#: Message types that add an output to the area.
OUTPUT_MSG_TYPES = frozenset({"stream", "display_data", "execute_result", "error"})

_CONTROL_CHARS = re.compile(r"[\n\b\r]")
DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class OutputArea:
    """The outputs of one execution of one cell, and the state needed to extend them.

    ``display_ids`` runs parallel to ``outputs``: the transient display id each output
    was created with (nbformat does not store it, JupyterLab keeps it beside the model).
    """

    outputs: tuple[NotebookNode, ...] = ()
    display_ids: tuple[str | None, ...] = ()
    execution_count: int | None = None
    #: Name of the stream the last output belongs to, or "" when the last output is not
    #: a stream that the next one may join (JupyterLab's ``_lastStreamName``).
    last_stream_name: str = ""
    #: Cursor position inside the last stream's text (JupyterLab's ``_streamIndex``).
    stream_cursor: int = 0
    #: Set by ``clear_output(wait=True)``: clear when the next output arrives.
    clear_pending: bool = False
    #: Characters the caps took out of the last stream (see :mod:`jupyter_persist.model.caps`).
    stream_omitted: int = 0

    def to_json(self) -> list[dict[str, Any]]:
        """Return the outputs as plain nbformat dictionaries (copies)."""
        return [_plain(output) for output in self.outputs]


def normalized_outputs(outputs: Any) -> list[dict[str, Any]] | None:
    """Outputs as the reducer builds them (multi-line strings joined, no transient data).

    Returns None when ``outputs`` is not a list of output dictionaries.
    """
    if not isinstance(outputs, list):
        return None
    result = []
    for output in outputs:
        if not isinstance(output, dict):
            return None
        plain = {key: value for key, value in output.items() if key != "transient"}
        if isinstance(plain.get("text"), list):
            plain["text"] = "".join(plain["text"])
        if isinstance(plain.get("data"), dict):
            plain["data"] = {
                mime: "".join(value) if isinstance(value, list) else value
                for mime, value in plain["data"].items()
            }
        result.append(plain)
    return result


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(value) for value in node]
    return node


def process_text(cursor: int, new_text: str, text: str = "") -> tuple[str, int]:
    """Write ``new_text`` into ``text`` at ``cursor`` as JupyterLab's stream model does.

    Ordinary characters overwrite from the cursor on; ``\\r`` moves the cursor to the
    start of its line; ``\\b`` removes the character before the cursor (and, as
    JupyterLab 4.6 does, the one under it) unless that would cross a newline; ``\\n``
    appends a newline at the end of the text and moves the cursor there.
    Returns the new text and cursor.
    """
    if "\b" not in new_text and "\r" not in new_text and "\n" not in new_text:
        text = text[:cursor] + new_text + text[cursor + len(new_text) :]
        return text, cursor + len(new_text)
    # Past the last \r and \b, with the cursor at the end, the rest is a plain append:
    # no copy of the whole text per line of a large chunk.
    last_move = max(new_text.rfind("\r"), new_text.rfind("\b"))
    start = 0
    while True:
        if start > last_move and cursor == len(text):
            text += new_text[start:]
            return text, len(text)
        match = _CONTROL_CHARS.search(new_text, start)
        end = match.start() if match else len(new_text)
        chunk = new_text[start:end]
        text = text[:cursor] + chunk + text[cursor + len(chunk) :]
        cursor += len(chunk)
        if match is None:
            return text, cursor
        start = end + 1
        char = new_text[end]
        if char == "\b":
            if cursor > 0 and text[cursor - 1] != "\n":
                text = text[: cursor - 1] + text[cursor + 1 :]
                cursor -= 1
        elif char == "\r":
            line_start = text.rfind("\n", 0, cursor) + 1
            cursor = line_start
        else:
            text += "\n"
            cursor = len(text)


def _cleared(area: OutputArea) -> OutputArea:
    return replace(
        area,
        outputs=(),
        display_ids=(),
        last_stream_name="",
        stream_cursor=0,
        clear_pending=False,
        stream_omitted=0,
    )


def apply_message(
    area: OutputArea, msg: dict[str, Any], limits: Limits = DEFAULT_LIMITS
) -> OutputArea:
    """Return the area after one IOPub message addressed to this execution.

    ``update_display_data`` is not handled here (it targets outputs anywhere in the
    notebook): use :func:`update_display`. Messages of other types return ``area``
    unchanged. Raises ``KeyError``/``TypeError``/``ValueError`` (or nbformat's
    ``ValidationError``) on a malformed message; the caller decides how to report it.
    """
    msg_type = msg["header"]["msg_type"]
    content = msg["content"]
    if msg_type == "execute_input":
        count = content.get("execution_count")
        return replace(area, execution_count=count if isinstance(count, int) else None)
    if msg_type == "clear_output":
        if content.get("wait", False):
            return replace(area, clear_pending=True, last_stream_name="")
        return _cleared(area)
    if msg_type not in OUTPUT_MSG_TYPES:
        return area
    if area.clear_pending:
        area = _cleared(area)
    if msg_type == "stream":
        return _add_stream(area, content["name"], content["text"], limits)
    output = cap_rich_output(output_from_msg(msg), limits)
    transient = content.get("transient") or {}
    display_id = transient.get("display_id") if isinstance(transient, dict) else None
    return replace(
        area,
        outputs=(*area.outputs, output),
        display_ids=(*area.display_ids, display_id if isinstance(display_id, str) else None),
        last_stream_name="",
    )


def _add_stream(area: OutputArea, name: str, new_text: str, limits: Limits) -> OutputArea:
    if not isinstance(name, str) or not isinstance(new_text, str):
        raise TypeError("stream name and text must be strings")
    if area.outputs and name == area.last_stream_name:
        text, cursor = process_text(area.stream_cursor, new_text, area.outputs[-1]["text"])
        text, cursor, omitted = trim_stream(text, cursor, area.stream_omitted, limits)
        merged = NotebookNode(output_type="stream", name=name, text=text)
        return replace(
            area,
            outputs=(*area.outputs[:-1], merged),
            stream_cursor=cursor,
            stream_omitted=omitted,
        )
    text, cursor = process_text(0, new_text)
    text, cursor, omitted = trim_stream(text, cursor, 0, limits)
    output = NotebookNode(output_type="stream", name=name, text=text)
    return replace(
        area,
        outputs=(*area.outputs, output),
        display_ids=(*area.display_ids, None),
        last_stream_name=name,
        stream_cursor=cursor,
        stream_omitted=omitted,
    )


def update_display(
    area: OutputArea,
    display_id: str,
    content: dict[str, Any],
    limits: Limits = DEFAULT_LIMITS,
) -> OutputArea:
    """Replace every output created with ``display_id`` by the new display data.

    This is what ``update_display_data`` does, and also what a second ``display_data``
    with an already-used display id does to the earlier outputs before it is itself
    appended. Returns ``area`` itself when no output carries the id.
    """
    if display_id not in area.display_ids:
        return area
    message = {"header": {"msg_type": "display_data"}, "content": {**content}}
    replacement = cap_rich_output(output_from_msg(message), limits)
    outputs = tuple(
        replacement if output_id == display_id else output
        for output, output_id in zip(area.outputs, area.display_ids, strict=True)
    )
    return replace(area, outputs=outputs)
