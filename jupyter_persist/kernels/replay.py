"""Bound the server's replay buffer of a kernel whose last client has left.

jupyter_server keeps every message a kernel sends after its last client disconnects,
to replay them if a client reconnects with the same session id (a reloaded page has a
new one, so usually nobody ever does). A kernel printing for hours grows the server by
the size of everything it printed. The extension keeps every output itself, so the
server's copy only needs the newest messages: enough for a quick same-session
reconnect to see what it missed right before it comes back.

With a collaboration room open, the extension writes what the tab missed into the room
before the tab reconnects; the tab then gets those outputs through the room, and the
buffer leaves them out of the replay (the tab would add them a second time).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import zmq

#: IOPub messages that change a cell's outputs.
OUTPUT_MSG_TYPES = frozenset(
    {"stream", "display_data", "update_display_data", "execute_result", "error", "clear_output"}
)


class BoundedReplayBuffer(deque[tuple[Any, ...]]):
    """A replay buffer that drops its oldest messages beyond ``max_bytes`` (0: never).

    Stands in for the ``list`` jupyter_server appends ``(channel, msg_parts)`` to; the
    server only appends, takes its length and iterates over it, which a deque does.
    Iterating leaves out the output messages of the executions in ``skip_outputs_of``.

    A message is kept as one tuple, its channel then its parts as bytes, and handed out
    as the server appended it: the garbage collector stops tracking such a tuple at its
    first pass, and every whole-heap collection would otherwise go through two
    containers per buffered message. 20 detached kernels printing 100 lines a second
    buffer 120,000 messages a minute; 240,000 messages held as lists took 41 ms of every
    full collection on an idle core (as tuples: 4 ms), and on a machine short of CPU a
    collection of the server's heap held the event loop 227–876 ms.
    """

    def __init__(
        self,
        max_bytes: int,
        kernel_id: str,
        log: logging.Logger | logging.LoggerAdapter[Any],
        messages: Iterable[tuple[str, list[Any]]] = (),
        session: Any = None,
    ) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.kernel_id = kernel_id
        self.log = log
        #: The kernel's ``jupyter_client`` Session, which reads the messages' frames.
        self.session = session
        #: Message ids of executions whose outputs a collaboration room holds already.
        self.skip_outputs_of: frozenset[str] = frozenset()
        self.size = 0
        self.dropped = 0
        self._sizes: deque[int] = deque()
        self.extend(messages)

    def __iter__(self) -> Iterator[tuple[str, list[Any]]]:  # type: ignore[override]
        if not self.skip_outputs_of or self.session is None:
            for channel, *parts in super().__iter__():
                yield channel, parts
            return
        skipped = 0
        for channel, *parts in super().__iter__():
            if self._in_room(parts, channel):
                skipped += 1
            else:
                yield channel, parts
        if skipped:
            self.log.info(
                "jupyter_persist: kernel %s: left %d output message(s) out of the replay; "
                "the collaboration room holds those outputs",
                self.kernel_id,
                skipped,
            )

    def _in_room(self, parts: list[Any], channel: str) -> bool:
        if channel != "iopub":
            return False
        try:
            _, frames = self.session.feed_identities(parts)
            header = self.session.unpack(frames[1])
            parent = self.session.unpack(frames[2])
        except Exception:
            return False
        return (
            header.get("msg_type") in OUTPUT_MSG_TYPES
            and parent.get("msg_id") in self.skip_outputs_of
        )

    def extend(self, messages: Iterable[tuple[str, list[Any]]]) -> None:  # type: ignore[override]
        for message in messages:
            self.append(message)

    def append(self, message: tuple[str, list[Any]]) -> None:  # type: ignore[override]
        channel, parts = message
        kept = (channel, *(part if isinstance(part, bytes) else _as_bytes(part) for part in parts))
        size = _message_size(kept[1:])
        super().append(kept)
        self._sizes.append(size)
        self.size += size
        while self.max_bytes and self.size > self.max_bytes and len(self) > 1:
            self.popleft()
            self.size -= self._sizes.popleft()
            if not self.dropped:
                self.log.info(
                    "jupyter_persist: kernel %s: the server's replay buffer for its "
                    "disconnected client passed %s bytes; dropping its oldest messages "
                    "(jupyter_persist keeps every output)",
                    self.kernel_id,
                    self.max_bytes,
                )
            self.dropped += 1


def bound_replay_buffer(
    kernel_manager: Any,
    kernel_id: str,
    session_key: str,
    max_bytes: int,
    *,
    log: logging.Logger | logging.LoggerAdapter[Any],
    session: Any = None,
) -> bool:
    """Swap the replay buffer jupyter_server just started for ``kernel_id`` for our own.

    Bounded to ``max_bytes`` (0: unbounded, as the server's). Returns whether it did.
    Does nothing when the server is not buffering for this session
    (``buffer_offline_messages`` off, other connections still open) or when it keeps its
    buffers differently from jupyter_server 2 (``_kernel_buffers[kernel_id]["buffer"]``
    being a list).
    """
    info = _buffer_info(kernel_manager, kernel_id, session_key)
    if info is None or not isinstance(info.get("buffer"), list):
        return False
    info["buffer"] = BoundedReplayBuffer(max_bytes, kernel_id, log, info["buffer"], session)
    return True


def buffer_to_replay(
    kernel_manager: Any, kernel_id: str, session_key: str
) -> BoundedReplayBuffer | None:
    """Our replay buffer that a client reconnecting with ``session_key`` is about to get."""
    info = _buffer_info(kernel_manager, kernel_id, session_key)
    buffer = info.get("buffer") if info is not None else None
    return buffer if isinstance(buffer, BoundedReplayBuffer) else None


def _buffer_info(kernel_manager: Any, kernel_id: str, session_key: str) -> dict[str, Any] | None:
    buffers = getattr(kernel_manager, "_kernel_buffers", None)
    if not isinstance(buffers, dict) or kernel_id not in buffers or not session_key:
        return None
    info = buffers[kernel_id]
    if not isinstance(info, dict) or info.get("session_key") != session_key:
        return None
    return info


def _as_bytes(part: Any) -> Any:
    """A ``zmq.Frame`` (a socket read without copying) or a buffer as bytes; else as it is."""
    if isinstance(part, zmq.Frame):
        return part.bytes
    if isinstance(part, (bytearray, memoryview)):
        return bytes(part)
    return part


def _message_size(parts: tuple[Any, ...]) -> int:
    size = 0
    for part in parts:
        try:
            size += len(part)
        except TypeError:
            size += 1
    return size
