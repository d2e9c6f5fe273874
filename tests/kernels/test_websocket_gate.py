"""While the websocket gate holds a client back, the server counts it as it would without us."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from helpers import SYNC_KERNEL_MANAGER, wait_for


async def connections(jp_fetch: Any, kernel_id: str) -> int:
    response = await jp_fetch("api", "kernels", kernel_id, method="GET")
    count: int = json.loads(response.body)["connections"]
    return count


@pytest.fixture
def held_gate(capture: Any, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """The gate waits for this event, as it waits for a slow kernel's first message."""
    release = asyncio.Event()
    until_capturing = capture.client_events.until_capturing

    async def held(kernel_id: str) -> None:
        await release.wait()
        await until_capturing(kernel_id)

    monkeypatch.setattr(capture.client_events, "until_capturing", held)
    return release


async def start_kernel(jp_fetch: Any) -> str:
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id: str = json.loads(response.body)["id"]
    return kernel_id


async def test_a_client_held_at_the_gate_is_counted_as_connected(
    jp_fetch: Any, jp_ws_fetch: Any, held_gate: asyncio.Event
) -> None:
    kernel_id = await start_kernel(jp_fetch)
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    assert await connections(jp_fetch, kernel_id) == 1  # as jupyter_server counts it at once
    held_gate.set()
    await asyncio.sleep(0.5)
    assert await connections(jp_fetch, kernel_id) == 1  # handed over, not counted twice
    ws.close()

    for _ in range(100):  # the server notices the close on its next event-loop turns
        if await connections(jp_fetch, kernel_id) == 0:
            break
        await asyncio.sleep(0.1)
    assert await connections(jp_fetch, kernel_id) == 0


async def test_a_client_gone_while_held_ends_uncounted(
    jp_fetch: Any, jp_ws_fetch: Any, held_gate: asyncio.Event
) -> None:
    """Tornado reads the close only once the handler's ``open`` returns, gate or not."""
    kernel_id = await start_kernel(jp_fetch)
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    assert await connections(jp_fetch, kernel_id) == 1
    ws.close()
    held_gate.set()
    await wait_for_count(jp_fetch, kernel_id, 0)
    await asyncio.sleep(0.5)
    assert await connections(jp_fetch, kernel_id) == 0  # not -1: counted out once


async def wait_for_count(jp_fetch: Any, kernel_id: str, expected: int) -> None:
    for _ in range(100):  # the server notices a close on its next event-loop turns
        if await connections(jp_fetch, kernel_id) == expected:
            return
        await asyncio.sleep(0.1)
    assert await connections(jp_fetch, kernel_id) == expected


async def test_state_and_activity_while_a_client_connects_are_the_servers_own(
    jp_fetch: Any, jp_ws_fetch: Any, capture: Any
) -> None:
    """The gate's kernel_info nudges, like the server's own, leave the kernel's
    ``execution_state`` alone (the server does not track kernel_info statuses) and move
    ``last_activity`` only forward, as every IOPub message does."""
    kernel_id = await start_kernel(jp_fetch)
    seen: list[tuple[str, str]] = []

    async def sample() -> None:
        while True:
            response = await jp_fetch("api", "kernels", kernel_id, method="GET")
            model = json.loads(response.body)
            seen.append((model["execution_state"], model["last_activity"]))
            await asyncio.sleep(0.005)

    sampler = asyncio.ensure_future(sample())
    try:
        ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
        await asyncio.sleep(0.5)
        # the nudges' statuses settle "starting" into "idle"; a busy machine takes longer
        await wait_for(
            lambda: bool(seen) and seen[-1][0] == "idle", timeout=20, what="the kernel idle"
        )
    finally:
        sampler.cancel()
    ws.close()
    assert kernel_id in capture.listener.kernel_ids  # the gate did wait for our subscription
    states = {state for state, _ in seen}
    assert states <= {"starting", "idle"}, states
    activity = [stamp for _, stamp in seen]
    assert activity == sorted(activity)  # ISO 8601 in UTC: ordered as text
    assert len(seen) > 10


@pytest.mark.filterwarnings("ignore:The synchronous MappingKernelManager:DeprecationWarning")
@pytest.mark.parametrize("jp_server_config", [SYNC_KERNEL_MANAGER])
async def test_a_client_held_while_its_kernel_shuts_down_opens_no_channels(
    jp_fetch: Any, jp_ws_fetch: Any, capture: Any, held_gate: asyncio.Event
) -> None:
    """The gate opening after a shutdown closes the websocket and connects nothing: a
    synchronous kernel manager's channels live on jupyter_core's runner loop, which
    outlives the server, and channels nothing closes stayed registered there, so that a
    later socket given the same descriptor failed ("fd N added twice", seen in
    jupyter_server's own session tests)."""
    capture.start()  # pytest-jupyter never runs _post_start; a server would start it
    kernel_id = await start_kernel(jp_fetch)
    kernel = capture.listener.kernel_manager.get_kernel(kernel_id)
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    registered_before = set(kernel.loop.handlers)
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    held_gate.set()
    assert await asyncio.wait_for(ws.read_message(), 10) is None  # closed by the server
    await asyncio.sleep(0.2)
    assert set(kernel.loop.handlers) <= registered_before
