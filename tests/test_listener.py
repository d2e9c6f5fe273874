"""Decoding IOPub messages as a signed jupyter_client Session sends them."""

from __future__ import annotations

import pytest
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
