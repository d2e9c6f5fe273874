"""Decoding IOPub messages as a signed jupyter_client Session sends them."""

from __future__ import annotations

import asyncio
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
