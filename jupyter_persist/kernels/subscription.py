"""A server-side IOPub subscription: the socket, opened as jupyter_client opens one.

Made with the kernel manager's own connection info, exactly as jupyter_server's
activity watcher does, so it works for every kernel the manager starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import zmq
from jupyter_client.session import Session

from .readloop import open_socket


@dataclass(eq=False)
class Subscription:
    """One kernel's IOPub subscription, and what the listener knows of it.

    Made on the event loop from the kernel's connection info; its socket is opened, read
    and closed by the IOPub reader (:mod:`.readloop`), in a process of its own.
    """

    kernel_id: str
    session: Session
    ports: tuple[Any, ...]
    url: str
    #: The connection file's CURVE keys (secret, public), if the kernel uses them.
    curve: tuple[Any, Any] | None = None
    #: The kernel's shell channel, where a nudge sends its requests.
    shell_url: str = ""
    #: Set at the first message received: from then on nothing the kernel publishes is
    #: missed (a SUB socket connects asynchronously and drops what comes before).
    live: asyncio.Event = field(default_factory=asyncio.Event)
    #: When the kernel's latest status message, if it said ``idle``, was handled.
    idle_since: float | None = None
    #: Tell the listener at the next message received.
    signal_live: bool = True
    #: Set once the listener let go of it.
    closed: bool = False
    #: The IOPub reader's name for it (None until added to the reader).
    reader_id: bytes | None = None

    def renudge(self) -> None:
        """The kernel restarted: not live until a message of the new process arrives."""
        self.live.clear()
        self.signal_live = True

    def note_status(self, msg: dict[str, Any], kernel_manager: Any) -> None:
        """Follow the kernel's state as jupyter_server's activity watcher does.

        Like it, only statuses of tracked requests count: the busy/idle around a
        control request (an interrupt, a debugger request) answered while a cell runs
        must not make the kernel look idle.
        """
        parent, content = msg.get("parent_header"), msg.get("content")
        if not isinstance(parent, dict) or not isinstance(content, dict):
            return
        tracked = getattr(kernel_manager, "track_message_type", None)
        if callable(tracked) and not tracked(parent.get("msg_type", "")):
            return
        state = content.get("execution_state")
        self.idle_since = time.monotonic() if state == "idle" else None


def subscription_for(kernel_id: str, kernel: Any, ports: tuple[Any, ...]) -> Subscription:
    """A kernel's subscription; raises while the kernel has no connection info yet."""
    session = Session(config=kernel.session.config, key=kernel.session.key)
    curve = None
    if getattr(kernel, "curve_publickey", None) is not None:
        curve = (kernel.curve_secretkey, kernel.curve_publickey)
    return Subscription(
        kernel_id, session, ports, kernel._make_url("iopub"), curve, kernel._make_url("shell")
    )


async def nudge_until_live(
    context: zmq.Context[zmq.Socket[bytes]], subscription: Subscription, timeout: float
) -> bool:
    """Wait until the subscription receives messages; False on timeout or once it closed.

    Like jupyter_server's own websocket "nudge": kernel_info requests make the kernel
    publish on IOPub until our socket gets something, so we know it is connected.
    The shell socket is a plain one of ``context``, not the kernel manager's
    ``connect_shell()``: for a synchronous kernel manager that is a ZMQStream on the
    loop of jupyter_core's runner thread, which outlives the server, and a nudge
    abandoned with its server would leave its closed socket registered there, and a
    later socket given the same descriptor number fails ("fd added twice").
    """
    if subscription.live.is_set():
        return True
    shell = open_socket(context, zmq.DEALER, subscription.shell_url, subscription.curve)
    deadline = time.monotonic() + timeout
    try:
        while (
            not subscription.live.is_set()
            and not subscription.closed
            and time.monotonic() < deadline
        ):
            # A DEALER that connected has a queue for its peer at once: never blocks.
            subscription.session.send(shell, "kernel_info_request")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(subscription.live.wait(), 0.2)
    finally:
        shell.close(linger=0)
    return subscription.live.is_set()
