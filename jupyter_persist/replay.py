"""Bound the server's replay buffer of a kernel whose last client has left.

jupyter_server keeps every message a kernel sends after its last client disconnects,
to replay them if a client reconnects with the same session id (a reloaded page has a
new one, so usually nobody ever does). A kernel printing for hours grows the server by
the size of everything it printed. The extension keeps every output itself, so the
server's copy only needs the newest messages: enough for a quick same-session
reconnect to see what it missed right before it comes back.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any


class BoundedReplayBuffer(deque[tuple[str, list[Any]]]):
    """A replay buffer that drops its oldest messages beyond ``max_bytes``.

    Stands in for the ``list`` jupyter_server appends ``(channel, msg_parts)`` to; the
    server only appends, takes its length and iterates over it, which a deque does.
    """

    def __init__(
        self,
        max_bytes: int,
        kernel_id: str,
        log: logging.Logger | logging.LoggerAdapter[Any],
        messages: Iterable[tuple[str, list[Any]]] = (),
    ) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.kernel_id = kernel_id
        self.log = log
        self.size = 0
        self.dropped = 0
        self._sizes: deque[int] = deque()
        for message in messages:
            self.append(message)

    def append(self, message: tuple[str, list[Any]]) -> None:
        size = _message_size(message)
        super().append(message)
        self._sizes.append(size)
        self.size += size
        while self.size > self.max_bytes and len(self) > 1:
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
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> bool:
    """Swap the replay buffer jupyter_server just started for ``kernel_id`` for a bounded one.

    Returns whether it did. Does nothing when bounding is off (``max_bytes`` 0), when the
    server is not buffering for this session (``buffer_offline_messages`` off, other
    connections still open) or when the server keeps its buffers differently from
    jupyter_server 2 (``_kernel_buffers[kernel_id]["buffer"]`` being a list).
    """
    buffers = getattr(kernel_manager, "_kernel_buffers", None)
    if max_bytes <= 0 or not isinstance(buffers, dict) or kernel_id not in buffers:
        return False
    info = buffers[kernel_id]
    if not isinstance(info, dict) or info.get("session_key") != session_key:
        return False
    messages = info.get("buffer")
    if not isinstance(messages, list):
        return False
    info["buffer"] = BoundedReplayBuffer(max_bytes, kernel_id, log, messages)
    return True


def _message_size(message: tuple[str, list[Any]]) -> int:
    size = 0
    for part in message[1]:
        try:
            size += len(part)
        except TypeError:
            size += 1
    return size
