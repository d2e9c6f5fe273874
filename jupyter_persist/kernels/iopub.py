"""IOPub messages off the wire: lean decoding, and merging runs of stream messages.

Pure functions, no sockets: the listener reads ZMQ sockets and a gateway's websockets
(:mod:`.gateway`) and calls these.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from jupyter_client.jsonutil import json_default
from jupyter_client.session import DELIM, Session
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)

if TYPE_CHECKING:
    import zmq

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
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
#: Message types whose binary buffers are kept (widget state, e.g. an image's bytes).
BUFFERED_MSG_TYPES = frozenset({"comm_open", "comm_msg"})


class IOPubDecoder:
    """Checks the signatures of one kernel's IOPub messages and decodes what the capture needs.

    Leaner than ``Session.deserialize``, which jupyter_server runs beside it for every
    message: no date parsing, no replay history (an IOPub SUB socket only receives), the
    parent header and content only decoded for the message types we use, and the
    signature computed in one call over the joined parts (the session's traits and
    ``hmac`` object are looked up once, not per message: a third of the cost, measured).
    """

    def __init__(self, session: Session) -> None:
        self._key: bytes = session.key if session.auth is not None else b""
        self._digest = session.signature_scheme.split("-", 1)[1]
        self._unpack = session.unpack

    def __call__(self, parts: list[bytes]) -> dict[str, Any] | None:
        """The message's fields the capture needs, None if it needs none; ValueError if
        invalid."""
        try:
            fed = parts[parts.index(DELIM) + 1 :]
        except ValueError:
            raise ValueError("no message delimiter") from None
        if len(fed) < 5:
            raise ValueError("too few message parts")
        self._check_signature(fed[:5])
        unpack = self._unpack
        header = unpack(fed[1])
        msg_type = header.get("msg_type")
        if msg_type not in WANTED_MSG_TYPES:
            return None
        return {
            "header": header,
            "parent_header": unpack(fed[2]),
            "content": unpack(fed[4]),
            "buffers": fed[5:] if msg_type in BUFFERED_MSG_TYPES else [],
        }

    def _check_signature(self, signed: list[bytes]) -> None:
        """ValueError unless ``signed`` (signature, header, parent, metadata, content)
        carries the session's signature (no key: nothing to check)."""
        if self._key:
            expected = hmac.digest(self._key, b"".join(signed[1:5]), self._digest).hex()
            if not hmac.compare_digest(signed[0], expected.encode()):
                raise ValueError("invalid signature")

    def activity(self, parts: Sequence[zmq.Frame | bytes]) -> tuple[Any, Any, Any]:
        """(msg_type, the parent's msg_type, a status's execution_state or None): what
        jupyter_server's activity rules read of a message; ValueError if invalid.

        Parts as ZMQ frames, not copied (a stream message's content can be megabytes
        and is never read), or as bytes. Only a status is checked against its
        signature, since only a status sets the kernel's state; another message's
        headers, read unchecked, can only move ``last_activity``, as any message on
        the kernel's IOPub port does.
        """
        fed: Sequence[zmq.Frame | bytes] | None = None
        for index, part in enumerate(parts):
            if len(part) == len(DELIM) and _bytes(part) == DELIM:
                fed = parts[index + 1 :]
                break
        if fed is None:
            raise ValueError("no message delimiter")
        if len(fed) < 5:
            raise ValueError("too few message parts")
        unpack = self._unpack
        header = unpack(_bytes(fed[1]))
        parent = unpack(_bytes(fed[2]))
        msg_type = header.get("msg_type")
        parent_type = parent.get("msg_type") if isinstance(parent, dict) else None
        if msg_type != "status":
            return msg_type, parent_type, None
        signed = [_bytes(part) for part in fed[:5]]
        self._check_signature(signed)
        content = unpack(signed[4])
        state = content.get("execution_state") if isinstance(content, dict) else None
        return msg_type, parent_type, state


def _bytes(part: zmq.Frame | bytes) -> bytes:
    return part if isinstance(part, bytes) else part.bytes


def message_topic(first_part: zmq.Frame | bytes) -> bytes:
    """A message's ZMQ topic, given its first part (the one ZMQ filters subscriptions
    on): empty for a message sent with no identity."""
    first = _bytes(first_part)
    return b"" if first == DELIM else first


def lane_prefix(status_topic: bytes) -> bytes | None:
    """What a kernel's activity lane subscribes to once it has seen a status under
    ``status_topic``: the topic up to its first ``.``, that included (None: no narrower
    subscription, everything stays subscribed).

    ipykernel publishes statuses under ``kernel.<ident>.status``, and under
    ``kernel.<ident>.`` also execute inputs and results, errors, debug events and
    shutdowns, where prints, displays and widget messages go under ``stream.stdout``,
    ``display_data``, ``comm-<id>``...: so ``kernel.`` keeps every status, of this
    process and of the next one after a restart (a new ident), and leaves a flood of
    prints out.
    """
    if not status_topic:
        return None
    head, dot, _ = status_topic.partition(b".")
    return head + dot


def decode(session: Session, parts: list[bytes]) -> dict[str, Any] | None:
    """One message's fields the capture needs (see :class:`IOPubDecoder`)."""
    return IOPubDecoder(session)(parts)


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


def decode_frame(frame: str | bytes, protocol: str | None) -> tuple[str, dict[str, Any] | None]:
    """(channel, message) of a frame from the gateway; the message is None to skip it.

    Decoded as :func:`~jupyter_persist.kernels.iopub.decode` decodes a ZMQ message:
    IOPub messages of the types the capture needs, buffers kept for comm messages.
    Both wire protocols: ``v1.kernel.websocket.jupyter.org`` (binary frames) and the
    legacy one (JSON text, binary frames for messages with buffers).
    """
    if protocol == V1_PROTOCOL and isinstance(frame, bytes):
        channel, parts = deserialize_msg_from_ws_v1(frame)
        if channel != "iopub" or len(parts) < 4:
            return channel, None
        header = json.loads(parts[0])
        msg_type = header.get("msg_type")
        if msg_type not in WANTED_MSG_TYPES:
            return channel, None
        return channel, {
            "header": header,
            "parent_header": json.loads(parts[1]),
            "content": json.loads(parts[3]),
            "buffers": [bytes(b) for b in parts[4:]] if msg_type in BUFFERED_MSG_TYPES else [],
        }
    msg = deserialize_binary_message(frame) if isinstance(frame, bytes) else json.loads(frame)
    channel = str(msg.get("channel", ""))
    header = msg.get("header") or {}
    msg_type = header.get("msg_type")
    if channel != "iopub" or msg_type not in WANTED_MSG_TYPES:
        return channel, None
    buffers = msg.get("buffers") or []
    return channel, {
        "header": header,
        "parent_header": msg.get("parent_header") or {},
        "content": msg.get("content") or {},
        "buffers": [bytes(b) for b in buffers] if msg_type in BUFFERED_MSG_TYPES else [],
    }


def encode_request(session: Session, msg_type: str, channel: str, protocol: str | None) -> Any:
    """A request from us to the kernel, in the websocket's protocol."""
    msg = session.msg(msg_type)
    if protocol == V1_PROTOCOL:
        parts = [session.pack(msg[key]) for key in ("header", "parent_header", "metadata")]
        parts.append(session.pack(msg["content"]))
        return serialize_msg_to_ws_v1(parts, channel)
    msg["channel"] = channel
    return json.dumps(msg, default=json_default)


def mentions(frame: str | bytes, word: str) -> bool:
    """A cheap look at a frame's start (where its header is) before parsing it."""
    if isinstance(frame, bytes):
        return word.encode() in frame[:4096]
    return word in frame[:4096]
