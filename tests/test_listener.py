"""Decoding IOPub messages as a signed jupyter_client Session sends them."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from helpers import LabLikeClient, make_notebook, wait_for
from jupyter_client.session import Session

from jupyter_persist.listener import decode


def wire(session: Session, msg_type: str, content: dict[str, object]) -> list[bytes]:
    msg = session.msg(msg_type, content, parent=session.msg_header("execute_request"))
    return session.serialize(msg)


def test_decodes_what_the_capture_needs() -> None:
    session = Session(key=b"secret")
    msg = decode(session, wire(session, "stream", {"name": "stdout", "text": "hi\n"}))
    assert msg is not None
    assert msg["header"]["msg_type"] == "stream"
    assert msg["parent_header"]["msg_type"] == "execute_request"
    assert msg["content"] == {"name": "stdout", "text": "hi\n"}


def test_other_message_types_are_skipped_undecoded() -> None:
    session = Session(key=b"secret")
    assert decode(session, wire(session, "comm_msg", {"data": {}})) is None


def test_a_bad_signature_is_refused() -> None:
    sender, receiver = Session(key=b"secret"), Session(key=b"other")
    with pytest.raises(ValueError, match="invalid signature"):
        decode(receiver, wire(sender, "stream", {"name": "stdout", "text": "x"}))


async def test_our_subscription_never_drops_a_burst(
    jp_serverapp: Any, jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    """A kernel publishing faster than the server reads: every line still arrives."""
    code = "for i in range(30000):\n    print(i, flush=True)\nprint('DONE', flush=True)"
    make_notebook(jp_root_dir / "burst.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("burst.ipynb")
    subscription = capture.listener._subscriptions[kernel_id]
    assert subscription.stream.socket.getsockopt(zmq.RCVHWM) == 0
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    msg_id = await client.execute(code, cell_id="c")
    # Hold the server's event loop so that the burst piles up in the socket queues.
    await asyncio.sleep(0.5)
    time.sleep(3)  # noqa: ASYNC251 (blocking on purpose: the loop must not read)
    execution = capture.store.get(msg_id)
    await wait_for(lambda: not execution.running, timeout=120)
    client.close()
    text = execution.area.to_json()[0]["text"]
    assert text == "".join(f"{i}\n" for i in range(30000)) + "DONE\n"


async def test_the_server_still_sees_the_kernel_go_idle_after_a_flood(
    jp_serverapp: Any,
    jp_root_dir: Path,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
) -> None:
    """A flood while the event loop is busy: the server still sees the kernel go ``idle``.

    jupyter_server's activity watcher kept ZMQ's 1,000-message limit: when the loop
    fell behind during a flood (the extension's work adds to it), its queue overflowed,
    it missed the kernel's final ``idle``, and ``GET /api/kernels`` said ``busy`` for
    good (an idle culler would never cull that kernel). Here the loop is held while a
    kernel prints 10,000 lines and finishes; without the lifted limit this fails.
    """
    code = "for i in range(10000):\n    print(i, flush=True)\nprint('DONE', flush=True)"
    make_notebook(jp_root_dir / "flood.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("flood.ipynb")
    watcher = jp_serverapp.kernel_manager.get_kernel(kernel_id)._activity_stream
    await wait_for(lambda: watcher.socket.getsockopt(zmq.RCVHWM) == 0, what="the lifted limit")
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    msg_id = await client.execute(code, cell_id="c")
    client.close()  # detached, as a closed laptop
    await asyncio.sleep(0.2)
    time.sleep(6)  # noqa: ASYNC251 (blocking on purpose: the kernel finishes meanwhile)
    await wait_for(lambda: capture.store.get(msg_id) is not None, timeout=30)
    execution = capture.store.get(msg_id)
    await wait_for(lambda: not execution.running, timeout=120)
    assert execution.area.to_json()[0]["text"].endswith("9999\nDONE\n")

    async def kernel_state() -> str:
        response = await jp_fetch("api", "kernels", kernel_id)
        return str(json.loads(response.body)["execution_state"])

    deadline = time.monotonic() + 10
    while await kernel_state() != "idle" and time.monotonic() < deadline:  # noqa: ASYNC110 (polls the server)
        await asyncio.sleep(0.2)
    assert await kernel_state() == "idle"
