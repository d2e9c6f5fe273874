"""The GIL switch interval while the ContentsManager reads or saves a notebook for us."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import make_notebook
from jupyter_server.services.contents.filemanager import AsyncFileContentsManager

from jupyter_persist.storage.switching import SwitchInterval
from jupyter_persist.storage.writer import CellUpdate, NotebookWriter

STREAM = {"output_type": "stream", "name": "stdout", "text": "hello\n"}


@pytest.fixture(autouse=True)
def interpreter_default() -> Iterator[float]:
    """Every test starts and ends with the interval it found (Python's default, 5 ms)."""
    before = sys.getswitchinterval()
    yield before
    assert sys.getswitchinterval() == before, "the interval was not given back"
    sys.setswitchinterval(before)


def test_shortened_while_a_call_runs_and_given_back_after(interpreter_default: float) -> None:
    switching = SwitchInterval(interpreter_default / 5)
    with switching.shortened():
        assert sys.getswitchinterval() == pytest.approx(interpreter_default / 5)
        with switching.shortened():  # a second notebook's write overlapping the first
            pass
        assert sys.getswitchinterval() == pytest.approx(interpreter_default / 5)
    assert sys.getswitchinterval() == interpreter_default


def test_given_back_when_the_call_fails(interpreter_default: float) -> None:
    switching = SwitchInterval(interpreter_default / 5)
    with pytest.raises(OSError), switching.shortened():
        raise OSError("disk full")
    assert sys.getswitchinterval() == interpreter_default


def test_an_interval_set_by_someone_else_meanwhile_stays(interpreter_default: float) -> None:
    with SwitchInterval(interpreter_default / 5).shortened():
        sys.setswitchinterval(interpreter_default / 2)
    assert sys.getswitchinterval() == pytest.approx(interpreter_default / 2)
    sys.setswitchinterval(interpreter_default)


def test_given_back_when_the_interpreter_rounded_ours(interpreter_default: float) -> None:
    """The interpreter keeps whole microseconds: 123.4567 µs reads back as 123 µs."""
    with SwitchInterval(0.0001234567).shortened():
        assert sys.getswitchinterval() == pytest.approx(0.000123)
    assert sys.getswitchinterval() == interpreter_default


@pytest.mark.parametrize("factor", [0.0, 1.0, 2.0])
def test_zero_or_no_shorter_leaves_the_interval_alone(
    interpreter_default: float, factor: float
) -> None:
    with SwitchInterval(interpreter_default * factor).shortened():
        assert sys.getswitchinterval() == interpreter_default


class RecordingContentsManager(AsyncFileContentsManager):
    """The server's own file ContentsManager, noting the interval it runs under."""

    seen: list[tuple[str, float]]

    async def get(self, path: str, content: bool = True, **kwargs: Any) -> Any:
        self.seen.append(("get", sys.getswitchinterval()))
        return await super().get(path, content=content, **kwargs)

    async def save(self, model: dict[str, Any], path: str = "") -> Any:
        self.seen.append(("save", sys.getswitchinterval()))
        return await super().save(model, path)


async def test_the_contents_manager_reads_and_saves_under_the_shorter_interval(
    tmp_path: Path, interpreter_default: float
) -> None:
    contents_manager = RecordingContentsManager(root_dir=str(tmp_path))
    contents_manager.seen = []
    writer = NotebookWriter(switch_interval=0.001, contents_manager=contents_manager)
    make_notebook(tmp_path / "nb.ipynb", [("a", "print('hello')")])
    result = await writer.merge("nb.ipynb", {"a": CellUpdate([STREAM], 1)})
    assert result.saved
    # The save asks for the saved file's model (a get) itself.
    assert [call for call, _ in contents_manager.seen] == ["get", "save", "get"]
    assert all(interval == pytest.approx(0.001) for _, interval in contents_manager.seen)
    assert sys.getswitchinterval() == interpreter_default
