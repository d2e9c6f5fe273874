"""Finding a notebook's journal and text log from the file path a user types."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_persist.storage.journal import Journal
from jupyter_persist.storage.ondisk import (
    candidate_api_paths,
    find_journal,
    find_text_log,
    journal_files,
)
from jupyter_persist.storage.textlog import TextLog


def test_candidates_put_known_server_roots_first(tmp_path: Path) -> None:
    notebook = tmp_path / "proj" / "sub" / "a.ipynb"
    candidates = candidate_api_paths(str(notebook), roots=[str(tmp_path / "proj")])
    assert candidates[0] == "sub/a.ipynb"
    assert candidates[-1] == "a.ipynb"
    assert str(notebook.relative_to("/")) in candidates
    assert len(candidates) == len(set(candidates))


def test_candidates_of_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    candidates = candidate_api_paths("nb.ipynb")
    assert "nb.ipynb" in candidates
    assert f"{tmp_path.name}/nb.ipynb" in candidates
    assert candidates.index(f"{tmp_path.name}/nb.ipynb") < candidates.index("nb.ipynb")


def test_finds_the_files_of_the_most_specific_path(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journals")
    journal.ensure_directory()
    journal.file_for("proj/a.ipynb").write_text("")
    journal.file_for("a.ipynb").write_text("")
    candidates = candidate_api_paths("/srv/proj/a.ipynb")
    assert find_journal(journal, candidates) == ("proj/a.ipynb", journal.file_for("proj/a.ipynb"))
    logs = TextLog(tmp_path / "logs", max_bytes=1000)
    logs.ensure_directory()
    assert find_text_log(logs, candidates) is None
    logs.file_for("a.ipynb").write_text("")
    assert find_text_log(logs, candidates) == ("a.ipynb", logs.file_for("a.ipynb"))


def test_journal_files_name_their_notebooks_and_damage(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journals")
    journal.ensure_directory()
    good = '{"path": "a.ipynb", "cell": "c", "exec": "m", "keep": 0, "keep_text": 0, "tail": []}\n'
    journal.file_for("a.ipynb").write_text(good + good)
    journal.file_for("b.ipynb").write_text(good.replace("a.ipynb", "b.ipynb") + "{cut")
    found = {f.notebooks[0]: f for f in journal_files(journal)}
    assert not found["a.ipynb"].damaged
    assert found["b.ipynb"].damaged
