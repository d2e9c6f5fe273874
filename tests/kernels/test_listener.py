"""Reading IOPub: decoding signed messages, merging stream runs, never dropping a burst."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq
from conftest import SAVE_INTERVAL
from helpers import SYNC_KERNEL_MANAGER, LabLikeClient, make_notebook, run_and_leave, wait_for
from jupyter_client.session import DELIM, Session
from reader_leaks import reader_processes

from jupyter_persist.kernels import readloop
from jupyter_persist.kernels.iopub import IOPubDecoder, coalesce_streams, decode
from jupyter_persist.kernels.listener import HANDLE_BYTES
from jupyter_persist.model import reducer


def wire(
    session: Session, msg_type: str, content: dict[str, object], buffers: list[bytes] | None = None
) -> list[bytes]:
    msg = session.msg(msg_type, content, parent=session.msg_header("execute_request"))
    parts: list[bytes] = session.serialize(msg)
    return parts + list(buffers or [])  # Session.send puts the buffers after the frames


def test_decodes_what_the_capture_needs() -> None:
    session = Session(key=b"secret")
    msg = decode(session, wire(session, "stream", {"name": "stdout", "text": "hi\n"}))
    assert msg is not None
    assert msg["header"]["msg_type"] == "stream"
    assert msg["parent_header"]["msg_type"] == "execute_request"
    assert msg["content"] == {"name": "stdout", "text": "hi\n"}


def test_other_message_types_are_skipped() -> None:
    session = Session(key=b"secret")
    assert decode(session, wire(session, "debug_event", {"event": "stopped"})) is None


def test_the_activity_of_a_message_is_its_types_and_a_statuss_state() -> None:
    session = Session(key=b"secret")
    activity = IOPubDecoder(session).activity

    def frames(parts: list[bytes]) -> list[zmq.Frame]:
        return [zmq.Frame(part) for part in parts]

    stream = wire(session, "stream", {"name": "stdout", "text": "x" * 100_000})
    assert activity(frames(stream)) == ("stream", "execute_request", None)
    status = wire(session, "status", {"execution_state": "idle"})
    assert activity(frames(status)) == ("status", "execute_request", "idle")
    forged = list(status)
    forged[-1] = b'{"execution_state": "busy"}'
    with pytest.raises(ValueError, match="signature"):
        activity(frames(forged))  # a status sets the state: its signature is checked


def test_comm_messages_keep_their_binary_buffers() -> None:
    session = Session(key=b"secret")
    content = {"comm_id": "c", "data": {"method": "update", "buffer_paths": [["value"]]}}
    parts = wire(session, "comm_msg", content, buffers=[b"\x00\xff" * 10])
    msg = decode(session, parts)
    assert msg is not None
    assert msg["content"] == content
    assert msg["buffers"] == [b"\x00\xff" * 10]
    stream = decode(session, wire(session, "stream", {"name": "stdout", "text": "x"}))
    assert stream is not None
    assert stream["buffers"] == []


@pytest.mark.parametrize(
    ("key", "scheme"), [(b"", "hmac-sha256"), (b"secret", "hmac-sha512"), (b"k", "hmac-md5")]
)
def test_unsigned_and_other_signature_schemes(key: bytes, scheme: str) -> None:
    """As Session.deserialize: no key, no check; the session's scheme, whichever it is."""
    session = Session(key=key, signature_scheme=scheme)
    parts = wire(session, "stream", {"name": "stdout", "text": "x"})
    assert (parts[parts.index(DELIM) + 1] == b"") == (not key)
    msg = decode(session, parts)
    assert msg is not None
    assert msg["content"]["text"] == "x"
    if key:
        other = Session(key=key, signature_scheme="hmac-sha1")
        with pytest.raises(ValueError, match="invalid signature"):
            decode(other, parts)


def test_a_bad_signature_is_refused() -> None:
    sender, receiver = Session(key=b"secret"), Session(key=b"other")
    with pytest.raises(ValueError, match="invalid signature"):
        decode(receiver, wire(sender, "stream", {"name": "stdout", "text": "x"}))


def stream(parent: str, text: str, name: str = "stdout", n: int = 0) -> dict[str, Any]:
    return {
        "header": {"msg_type": "stream", "msg_id": f"m{n}"},
        "parent_header": {"msg_id": parent, "msg_type": "execute_request"},
        "content": {"name": name, "text": text},
    }


def status(parent: str, state: str) -> dict[str, Any]:
    return {
        "header": {"msg_type": "status", "msg_id": "s"},
        "parent_header": {"msg_id": parent},
        "content": {"execution_state": state},
    }


def test_a_run_of_stream_messages_becomes_one() -> None:
    merged = list(coalesce_streams([stream("a", "1\n", n=1), stream("a", "2\n", n=2)]))
    assert len(merged) == 1
    assert merged[0]["content"] == {"name": "stdout", "text": "1\n2\n"}
    assert merged[0]["header"]["msg_id"] == "m1"


def test_runs_break_at_another_stream_execution_or_message() -> None:
    messages = [
        stream("a", "1"),
        stream("a", "2"),
        stream("a", "e", name="stderr"),
        stream("b", "3"),
        status("b", "idle"),
        stream("b", "4"),
        stream("b", "5"),
    ]
    merged = list(coalesce_streams(messages))
    assert [(m["parent_header"]["msg_id"], m["content"].get("text")) for m in merged] == [
        ("a", "12"),
        ("a", "e"),
        ("b", "3"),
        ("b", None),
        ("b", "45"),
    ]


def test_a_malformed_stream_message_is_passed_on_alone() -> None:
    bad = stream("a", "x")
    bad["content"]["text"] = None
    merged = list(coalesce_streams([stream("a", "1"), bad, stream("a", "2")]))
    assert [m["content"]["text"] for m in merged] == ["1", None, "2"]


@pytest.mark.parametrize(
    "texts",
    [
        ["0%", "\r50%", "\r100%\n", "done\n"],
        ["abc", "\b", "\bd\n"],
        ["line\r", "over", "\n\rx"],
    ],
)
def test_merged_messages_give_the_outputs_of_the_separate_ones(texts: list[str]) -> None:
    """``\r`` and ``\b`` act across message boundaries, so merging changes nothing."""
    messages = [stream("a", text, n=i) for i, text in enumerate(texts)]
    separate = reducer.OutputArea()
    for msg in messages:
        separate = reducer.apply_message(separate, msg)
    merged = reducer.OutputArea()
    for msg in coalesce_streams(messages):
        merged = reducer.apply_message(merged, msg)
    assert merged.to_json() == separate.to_json()


async def test_our_subscription_never_drops_a_burst(
    jp_serverapp: Any, jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    """A kernel publishing faster than the server reads: every line still arrives."""
    code = "for i in range(30000):\n    print(i, flush=True)\nprint('DONE', flush=True)"
    make_notebook(jp_root_dir / "burst.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("burst.ipynb")
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


@pytest.mark.parametrize(
    "jp_server_config",
    [
        {
            "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
            # The server's own watcher runs (the default; test_activity.py keeps it).
            "PersistExtension": {"save_interval": SAVE_INTERVAL, "track_kernel_activity": False},
        }
    ],
)
async def test_the_server_still_sees_the_kernel_go_idle_after_a_flood(
    caplog: pytest.LogCaptureFixture,
    jp_serverapp: Any,
    jp_root_dir: Path,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
) -> None:
    """A flood while the event loop is busy: the server still sees the kernel go ``idle``.

    jupyter_server's activity watcher keeps ZMQ's 1,000-message limit: when the loop
    falls behind during a flood, its queue overflows, it misses the kernel's final
    ``idle``, and ``GET /api/kernels`` says ``busy`` for good (an idle culler would
    never cull that kernel). Here the loop is held while a kernel prints 10,000 lines
    and finishes, which overflows it, though the final ``idle`` sometimes still gets
    through the TCP buffers; so the test then leaves the server's state at ``busy`` as
    such a watcher does, and our subscription, which drops nothing, must correct it.
    The watcher's own socket is left alone (reconnecting it can abort libzmq).
    """
    code = "for i in range(10000):\n    print(i, flush=True)\nprint('DONE', flush=True)"
    make_notebook(jp_root_dir / "flood.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("flood.ipynb")
    watcher = jp_serverapp.kernel_manager.get_kernel(kernel_id)._activity_stream
    assert watcher.socket.getsockopt(zmq.RCVHWM) == 1000
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

    async def until_idle() -> None:
        deadline = time.monotonic() + 10
        while await kernel_state() != "idle" and time.monotonic() < deadline:  # noqa: ASYNC110 (polls the server)
            await asyncio.sleep(0.2)
        assert await kernel_state() == "idle"

    await until_idle()
    # As the watcher leaves it when the final idle is among the messages it lost.
    jp_serverapp.kernel_manager.get_kernel(kernel_id).execution_state = "busy"
    await until_idle()
    missed = [r for r in caplog.records if "the server missed kernel" in r.getMessage()]
    assert missed
    assert {r.levelname for r in missed} == {"WARNING"}


async def test_a_control_request_during_a_silent_cell_does_not_look_idle(
    jp_serverapp: Any, jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    """The busy/idle around a control request answered mid-cell is not the kernel's state.

    jupyter_server ignores those statuses (``untracked_message_types``); so must the
    missed-idle correction, or it would mark a running kernel idle for the culler.
    """
    code = "import time\nprint('start', flush=True)\ntime.sleep(8)\nprint('DONE')"
    make_notebook(jp_root_dir / "silent.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("silent.ipynb")
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, code, "c")
    kernel = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    control = kernel.connect_control()
    try:
        kernel.session.send(control, "kernel_info_request")
        await asyncio.sleep(4)  # past MISSED_IDLE_AFTER, with ticks every 0.5 s
    finally:
        control.close(linger=0)
    assert capture.store.get(msg_id).running
    assert capture.listener.idle_since(kernel_id) is None
    assert kernel.execution_state == "busy"


async def test_a_flood_of_large_messages_waits_in_the_socket(
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1 MB prints as fast as the kernel sends: the received backlog stays bounded, and
    the event loop handles it in small steps."""
    code = (
        "chunk = ('x' * 99 + '\\n') * 10_000\nprint('start', flush=True)\n"
        "for i in range(80):\n    print(chunk, end='', flush=True)\nprint('DONE', flush=True)"
    )
    make_notebook(jp_root_dir / "chunks.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("chunks.ipynb")
    listener = capture.listener
    reader = listener._reader
    take, handled, handle_batch = reader.take, reader.handled, listener._handle_batch
    peak = 0
    steps = [0]  # bytes handled by each step of the event loop's handling

    def take_noting_the_backlog(max_bytes: int | None = None) -> Any:
        # The backlog is largest just before the event loop takes what arrived (a
        # sampling coroutine could miss it: the loop often takes a batch as it lands).
        nonlocal peak
        peak = max(peak, reader.backlog_bytes)
        return take(max_bytes)

    def handled_in_step(nbytes: int) -> None:
        steps[-1] += nbytes
        handled(nbytes)

    def handle_step(size: int) -> None:
        steps.append(0)
        handle_batch(size)

    monkeypatch.setattr(reader, "take", take_noting_the_backlog)
    monkeypatch.setattr(reader, "handled", handled_in_step)
    monkeypatch.setattr(listener, "_handle_batch", handle_step)
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, code, "c")
    execution = capture.store.get(msg_id)
    await wait_for(lambda: not execution.running, timeout=120)
    assert execution.area.to_json()[0]["text"].endswith("x\nDONE\n")
    assert 0 < peak <= readloop.BACKLOG_BYTES + readloop.READ_BYTES + 2_000_000
    # A step of the event loop takes a batch of about 512 kB: here one 1 MB message.
    assert 1_000_000 < max(steps) < HANDLE_BYTES + readloop.BATCH_BYTES + 1_100_000


async def test_an_error_while_handling_does_not_stop_the_capture(
    caplog: pytest.LogCaptureFixture,
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The slice that fails is logged; the rest of what was received is handled on."""
    code = (
        "import time\nprint('\\n'.join(str(i) for i in range(20)), flush=True)\n"
        "time.sleep(3)\nprint('end', flush=True)"
    )
    make_notebook(jp_root_dir / "error.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("error.ipynb")
    handle_batch = capture.listener._handle_batch
    failed = False

    def fail_at_the_lines(size: int) -> None:
        nonlocal failed
        received = capture.listener._received
        texts = (m["content"].get("text", "") for _, msgs, _ in received for m in msgs)
        if not failed and any("19\n" in text for text in texts):
            failed = True  # then the kernel is quiet for 3 s: nothing else would come
            raise RuntimeError("unexpected")
        handle_batch(size)

    monkeypatch.setattr(capture.listener, "_handle_batch", fail_at_the_lines)
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, code, "c", wait_text="19")
    execution = capture.store.get(msg_id)
    await wait_for(
        lambda: "19\n" in "".join(o.get("text", "") for o in execution.area.to_json()), timeout=2
    )
    assert failed
    assert "error handling IOPub messages" in caplog.text
    await wait_for(lambda: not execution.running, timeout=30)
    assert execution.area.to_json()[0]["text"] == "".join(f"{i}\n" for i in range(20)) + "end\n"


@pytest.mark.parametrize(
    "jp_server_config",
    [
        {
            "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
            # The kernel's activity kept, to see it handed back to the server meanwhile.
            "PersistExtension": {"save_interval": SAVE_INTERVAL, "track_kernel_activity": True},
        }
    ],
)
async def test_a_reader_that_was_killed_is_started_again(
    caplog: pytest.LogCaptureFixture,
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
) -> None:
    """The reader process killed (the OOM killer, an admin): the periodic check logs it and
    starts it again with every subscription, and capture goes on."""
    code = "print('one', flush=True)\nprint('two', flush=True)"
    make_notebook(jp_root_dir / "again.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("again.ipynb")
    iopub = capture.listener._reader
    assert await capture.listener.wait_live(kernel_id, 30), "no live subscription"
    killed = iopub.pid
    assert killed is not None
    psutil.Process(killed).kill()
    kernel = capture.kernel_manager.get_kernel(kernel_id)
    assert kernel_id in capture.listener.activity.kernel_ids
    await wait_for(lambda: iopub.running and iopub.pid != killed, timeout=10)  # every 1 s
    assert "the IOPub reader stopped; starting it again" in caplog.text
    # The new reader may miss messages until it receives: the server's watcher is back.
    assert kernel._activity_stream is not None
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, code, "c", wait_text="two")
    assert kernel_id in capture.listener.activity.kernel_ids  # taken over again once live
    execution = capture.store.get(msg_id)
    await wait_for(lambda: not execution.running, timeout=30)
    assert execution.area.to_json()[0]["text"] == "one\ntwo\n"


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    "jp_server_config",
    [
        {"ServerApp": {"jpserver_extensions": {"jupyter_persist": True}}},
        # With the activity kept, each subscription also has its activity lane.
        {
            "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
            "PersistExtension": {"track_kernel_activity": True},
        },
    ],
    ids=["default", "activity_kept"],
)
async def test_no_process_or_socket_leaks_over_50_kernel_starts_and_stops(
    jp_fetch: Any, capture: Any
) -> None:
    async def cycle() -> None:
        response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({}))
        kernel_id = json.loads(response.body)["id"]
        await wait_for(lambda: kernel_id in capture.listener.kernel_ids, timeout=30)
        assert await capture.listener.wait_live(kernel_id, 30)
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
        await wait_for(lambda: kernel_id not in capture.listener.kernel_ids, timeout=30)

    await cycle()  # the first start creates what the server keeps (contexts, pools)
    before = open_descriptors()
    (reader,) = reader_processes()
    reader_before = reader.num_fds()
    for _ in range(50):
        await cycle()
    assert reader_processes() == [reader]
    assert capture.listener._reader._subscriptions == {}
    assert capture.listener.activity.kernel_ids == set()
    await asyncio.sleep(1)  # sockets close asynchronously in libzmq
    assert open_descriptors() <= before + 5, (before, open_descriptors())
    assert reader.num_fds() <= reader_before + 5, (reader_before, reader.num_fds())


@pytest.mark.filterwarnings("ignore:The synchronous MappingKernelManager:DeprecationWarning")
@pytest.mark.parametrize("jp_server_config", [SYNC_KERNEL_MANAGER])
async def test_a_nudge_leaves_nothing_on_an_event_loop_and_ends_with_its_subscription(
    jp_fetch: Any, capture: Any
) -> None:
    """A synchronous kernel manager's sockets live on the loop of jupyter_core's runner
    thread, which outlives the server: a nudge must not register its socket there (an
    abandoned one stayed registered after its socket closed, and the next socket with the
    same descriptor number failed: "fd added twice"), and it ends when its kernel's
    subscription closes instead of nudging on until its timeout."""
    # pytest-jupyter never runs the server's _post_start, and this kernel manager emits no
    # kernel events (which start the capture otherwise): start it as a server would.
    capture.start()
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({}))
    kernel_id = json.loads(response.body)["id"]
    await wait_for(lambda: kernel_id in capture.listener.kernel_ids, timeout=30)
    assert await capture.listener.wait_live(kernel_id, 30)
    kernel = capture.listener.kernel_manager.get_kernel(kernel_id)
    process = psutil.Process(kernel.provisioner.pid)
    process.suspend()  # it answers no nudge now
    try:
        await asyncio.sleep(0.5)  # what it published before arrives first
        capture.listener.mark_restarting(kernel_id)
        # With the server's own activity watcher, handed back until the new process is read.
        registered_before = set(kernel.loop.handlers)
        waiting = asyncio.ensure_future(capture.listener.wait_live(kernel_id, 30))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        assert set(kernel.loop.handlers) == registered_before
        capture.listener.detach(kernel_id)
        assert await asyncio.wait_for(waiting, 2) is False
    finally:
        process.resume()
