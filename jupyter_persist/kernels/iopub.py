"""IOPub messages off the wire: lean decoding, and merging runs of stream messages.

Pure functions, no sockets: the listener reads the socket and calls these.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from typing import Any

from jupyter_client.session import Session

#: IOPub message types whose content the capture needs; the rest are skipped unparsed.
WANTED_MSG_TYPES = frozenset(
    {
        "stream",
        "display_data",
        "update_display_data",
        "execute_result",
        "error",
        "clear_output",
        "execute_input",
        "status",
        "comm_open",
        "comm_msg",
        "comm_close",
    }
)
#: Message types whose binary buffers are kept (widget state, e.g. an image's bytes).
BUFFERED_MSG_TYPES = frozenset({"comm_open", "comm_msg"})


def decode(session: Session, parts: list[bytes]) -> dict[str, Any] | None:
    """Check a message's signature and decode what the capture needs; None to skip it.

    Leaner than ``Session.deserialize``, which this runs beside for every IOPub message:
    no date parsing, no replay history (an IOPub SUB socket only receives), and the
    parent header and content are only decoded for the message types we use.
    """
    _, fed = session.feed_identities(parts)  # copies: every part is bytes
    if len(fed) < 5:
        raise ValueError("too few message parts")
    signature: Any = fed[0]
    if session.auth is not None and not hmac.compare_digest(signature, session.sign(fed[1:5])):
        raise ValueError("invalid signature")
    header = session.unpack(fed[1])
    msg_type = header.get("msg_type")
    if msg_type not in WANTED_MSG_TYPES:
        return None
    return {
        "header": header,
        "parent_header": session.unpack(fed[2]),
        "content": session.unpack(fed[4]),
        "buffers": list(fed[5:]) if msg_type in BUFFERED_MSG_TYPES else [],
    }


def _stream_key(msg: dict[str, Any]) -> tuple[str, str] | None:
    """(parent msg_id, stream name) of a well-formed stream message, else None."""
    if msg["header"].get("msg_type") != "stream":
        return None
    parent = msg.get("parent_header")
    content = msg.get("content")
    if not isinstance(parent, dict) or not isinstance(content, dict):
        return None
    msg_id, name, text = parent.get("msg_id"), content.get("name"), content.get("text")
    if not isinstance(msg_id, str) or not isinstance(name, str) or not isinstance(text, str):
        return None
    return msg_id, name


def coalesce_streams(messages: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Merge each run of consecutive stream messages of one execution and stream into one.

    JupyterLab appends a stream message to the previous output when it is of the same
    stream, and interprets ``\\r`` and ``\\b`` across message boundaries, so one message
    carrying the concatenated text gives the same outputs (once a stream is over its
    size caps, the cut between head and tail may fall a little elsewhere). A kernel printing with
    ``flush=True`` sends one message per line: merged, the capture handles a backlog of
    them at the cost of one. The merged message keeps the first one's header.
    """
    run: dict[str, Any] | None = None
    run_key: tuple[str, str] | None = None
    texts: list[str] = []
    for msg in messages:
        key = _stream_key(msg)
        if key is not None and key == run_key:
            texts.append(msg["content"]["text"])
            continue
        if run is not None:
            yield _joined(run, texts)
        if key is None:
            run, run_key, texts = None, None, []
            yield msg
        else:
            run, run_key, texts = msg, key, [msg["content"]["text"]]
    if run is not None:
        yield _joined(run, texts)


def _joined(first: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    if len(texts) == 1:
        return first
    return {**first, "content": {**first["content"], "text": "".join(texts)}}
