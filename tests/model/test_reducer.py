"""The reducer against real ipykernel recordings and JupyterLab 4.6's stream rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import RECORDINGS_FILE
from nbformat import ValidationError

from jupyter_persist.model.reducer import OutputArea, apply_message, process_text, update_display

RECORDINGS: dict[str, list[dict[str, Any]]] = json.loads(RECORDINGS_FILE.read_text())


def msg(msg_type: str, **content: Any) -> dict[str, Any]:
    return {
        "header": {"msg_type": msg_type},
        "parent_header": {"msg_id": "m"},
        "content": content,
    }


def run(messages: list[dict[str, Any]], area: OutputArea | None = None) -> OutputArea:
    area = area or OutputArea()
    for message in messages:
        if message["header"]["msg_type"] == "update_display_data":
            area = update_display(
                area, message["content"]["transient"]["display_id"], message["content"]
            )
        else:
            area = apply_message(area, message)
    return area


# -- process_text: JupyterLab 4.6 OutputAreaModel's cursor semantics -----------------------


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        (["hello"], "hello"),
        (["a\n", "b\n"], "a\nb\n"),
        (["10%\r", "20%\r", "30%"], "30%"),
        (["abcdef\rXY"], "XYcdef"),
        (["abcdef\rXY\n"], "XYcdef\n"),
        (["first\nsecond\rTH"], "first\nTHcond"),
        (["abc\b\bX"], "aX"),
        (["12345", "\b\b\bZ"], "12Z"),
        (["line\n\bkept"], "line\nkept"),
        (["\b\b\bstart"], "start"),
        # JupyterLab 4.6 removes the character under the cursor too when backspacing
        # mid-line; the saved file must match what it keeps.
        (["ab\rX\b"], ""),
        (["x\r\n", "y"], "x\ny"),
        (["a\r", "\r", "b"], "b"),
    ],
)
def test_process_text(chunks: list[str], expected: str) -> None:
    text, cursor = "", 0
    for chunk in chunks:
        text, cursor = process_text(cursor, chunk, text)
    assert text == expected


def test_ten_thousand_step_progress_bar_stores_one_line() -> None:
    messages = [
        msg("stream", name="stdout", text=f"\r{i:5d}/10000 [{'#' * (i // 500)}]")
        for i in range(10001)
    ]
    messages.append(msg("stream", name="stdout", text="\n"))
    area = run(messages)
    assert len(area.outputs) == 1
    assert area.outputs[0]["text"] == "10000/10000 [" + "#" * 20 + "]\n"


# -- recorded sequences ----------------------------------------------------------------


def outputs_of(name: str, cell: int = 0) -> list[dict[str, Any]]:
    messages = [m for m in RECORDINGS[name] if m["parent_header"]["msg_id"] == f"cell-{cell}"]
    return run(messages).to_json()


def test_recorded_streams_merge_only_consecutive_same_name() -> None:
    outputs = outputs_of("streams")
    assert [(o["output_type"], o["name"]) for o in outputs] == [
        ("stream", "stdout"),
        ("stream", "stderr"),
        ("stream", "stdout"),
    ]
    assert outputs[0]["text"] == "out 1\nout 2\n"
    assert outputs[1]["text"] == "err 1\nerr 2\n"
    assert outputs[2]["text"] == "out 3\n"


def test_recorded_progress_bar_folds() -> None:
    assert len(RECORDINGS["progress_cr"]) > 2000
    assert outputs_of("progress_cr") == [
        {"output_type": "stream", "name": "stdout", "text": "step 2000/2000\ndone\n"}
    ]


def test_recorded_backspace() -> None:
    assert outputs_of("backspace") == [
        {"output_type": "stream", "name": "stdout", "text": "aX\n12Z\nline\nkept\n"}
    ]


def test_recorded_update_display_replaces_in_place() -> None:
    outputs = outputs_of("display_updates")
    assert [o["data"]["text/plain"] for o in outputs] == ["'third'", "'plain'"]
    assert all(o["output_type"] == "display_data" for o in outputs)
    assert all("transient" not in o for o in outputs)


def test_recorded_clear_output_wait() -> None:
    area = OutputArea()
    for message in RECORDINGS["clear_wait"]:
        area = apply_message(area, message)
        if message["header"]["msg_type"] == "clear_output":
            # Nothing disappears until the next output arrives.
            assert area.clear_pending
    assert area.to_json() == [{"output_type": "stream", "name": "stdout", "text": "iteration 4\n"}]


def test_recorded_clear_output_now() -> None:
    assert outputs_of("clear_now") == [
        {"output_type": "stream", "name": "stdout", "text": "stays\n"}
    ]


def test_recorded_execute_result_and_count() -> None:
    messages = RECORDINGS["execute_result"]
    area = run(messages)
    assert area.execution_count == 1
    assert area.to_json() == [
        {"output_type": "stream", "name": "stdout", "text": "side\n"},
        {
            "output_type": "execute_result",
            "data": {"text/plain": "42"},
            "metadata": {},
            "execution_count": 1,
        },
    ]


def test_recorded_markdown_display() -> None:
    outputs = outputs_of("markdown")
    assert outputs[0]["data"]["text/markdown"] == "# Title"


def test_recorded_error() -> None:
    outputs = outputs_of("error")
    assert [o["output_type"] for o in outputs] == ["stream", "error"]
    assert outputs[1]["ename"] == "ZeroDivisionError"
    assert outputs[1]["traceback"]


# -- clear_output, display ids and edge cases -----------------------------------------------


def test_clear_wait_then_update_display_does_not_trigger_clear() -> None:
    area = run(
        [
            msg(
                "display_data", data={"text/plain": "a"}, metadata={}, transient={"display_id": "d"}
            ),
            msg("clear_output", wait=True),
        ]
    )
    area = update_display(area, "d", {"data": {"text/plain": "b"}, "metadata": {}})
    assert area.clear_pending
    assert area.to_json()[0]["data"] == {"text/plain": "b"}
    area = apply_message(area, msg("stream", name="stdout", text="next"))
    assert area.to_json() == [{"output_type": "stream", "name": "stdout", "text": "next"}]


def test_clear_forgets_display_ids() -> None:
    area = run(
        [
            msg(
                "display_data", data={"text/plain": "a"}, metadata={}, transient={"display_id": "d"}
            ),
            msg("clear_output", wait=False),
            msg("stream", name="stdout", text="x"),
        ]
    )
    assert update_display(area, "d", {"data": {"text/plain": "b"}, "metadata": {}}) is area


def test_stream_after_other_output_starts_new_output() -> None:
    area = run(
        [
            msg("stream", name="stdout", text="a"),
            msg("display_data", data={"text/plain": "x"}, metadata={}),
            msg("stream", name="stdout", text="b"),
        ]
    )
    assert [o["output_type"] for o in area.outputs] == ["stream", "display_data", "stream"]


def test_stream_after_clear_wait_starts_fresh() -> None:
    area = run(
        [
            msg("stream", name="stdout", text="old\r"),
            msg("clear_output", wait=True),
            msg("stream", name="stdout", text="new"),
        ]
    )
    assert area.to_json() == [{"output_type": "stream", "name": "stdout", "text": "new"}]


def test_unknown_message_types_change_nothing() -> None:
    area = run([msg("stream", name="stdout", text="a")])
    for msg_type in (
        "comm_msg",
        "comm_open",
        "status",
        "execute_reply",
        "shutdown_reply",
        "whatever",
    ):
        assert apply_message(area, msg(msg_type, data={})) is area


@pytest.mark.parametrize(
    "bad",
    [
        msg("stream", name="stdout"),
        msg("stream", name=None, text="x"),
        msg("display_data", metadata={}),
        msg("error", ename="E"),
        msg("execute_result", data={"text/plain": "x"}),
        {"header": {}, "content": {}},
    ],
)
def test_malformed_messages_raise_for_the_caller_to_log(bad: dict[str, Any]) -> None:
    area = OutputArea()
    with pytest.raises((KeyError, TypeError, ValueError, ValidationError)):
        apply_message(area, bad)
    assert area == OutputArea()


def test_apply_never_mutates_its_argument() -> None:
    area = run([msg("stream", name="stdout", text="a")])
    snapshot = area.to_json()
    apply_message(area, msg("stream", name="stdout", text="b"))
    apply_message(area, msg("clear_output", wait=False))
    assert area.to_json() == snapshot


def test_execute_input_sets_count() -> None:
    area = apply_message(OutputArea(), msg("execute_input", code="1", execution_count=7))
    assert area.execution_count == 7
