"""The extension's files on disk, found without a server: crash journals and text logs.

Both are named after the notebook's API path (relative to the server's root), which a
user on a terminal does not type: :func:`candidate_api_paths` turns the file path they
give into every API path it could have had.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .journal import Journal, JournaledCell, fold
from .textlog import TextLog


def candidate_api_paths(notebook: str, roots: Iterable[str] = ()) -> list[str]:
    """API paths a notebook file may have had, most likely first.

    Relative to each known server root first, then every tail of its absolute path
    (``/home/ana/proj/a.ipynb`` → ``home/ana/proj/a.ipynb`` … ``a.ipynb``), and the
    argument itself (it may already be an API path).
    """
    absolute = Path(os.path.abspath(os.path.expanduser(notebook)))
    candidates: list[str] = []
    for root in roots:
        try:
            candidates.append(absolute.relative_to(os.path.abspath(root)).as_posix())
        except ValueError:
            continue
    parts = absolute.parts[1:]
    candidates.extend("/".join(parts[i:]) for i in range(len(parts)))
    candidates.append(notebook.strip("/"))
    return list(dict.fromkeys(c for c in candidates if c and c != "."))


@dataclass
class JournalFile:
    """A journal file and what it holds."""

    file: Path
    notebooks: list[str]
    size: int
    modified: float
    #: The records could not all be read (see the journal's WARNING).
    damaged: bool = False


def journal_files(journal: Journal) -> list[JournalFile]:
    """Every journal in the journal directory, with the notebooks its records name."""
    found = []
    for file in journal.files():
        try:
            stat = file.stat()
            raw_lines = sum(1 for line in file.read_bytes().splitlines() if line.strip())
        except OSError:
            continue
        records = journal.read(file)
        notebooks = list(dict.fromkeys(str(r.get("path")) for r in records))
        found.append(
            JournalFile(file, notebooks, stat.st_size, stat.st_mtime, len(records) < raw_lines)
        )
    return found


def first_existing(
    file_for: Callable[[str], Path], candidates: list[str]
) -> tuple[str, Path] | None:
    """The first candidate API path whose file (``file_for(path)``) exists, and that file."""
    for api_path in candidates:
        file = file_for(api_path)
        if file.is_file():
            return api_path, file
    return None


def find_journal(journal: Journal, candidates: list[str]) -> tuple[str, Path] | None:
    """The first candidate API path that has a journal, and that journal."""
    return first_existing(journal.file_for, candidates)


def journaled_cells(journal: Journal, file: Path, api_path: str) -> list[JournaledCell]:
    """The latest journaled outputs of the cells of one notebook."""
    return [cell for cell in fold(journal.read(file)).values() if cell.path == api_path]


def find_text_log(text_log: TextLog, candidates: list[str]) -> tuple[str, Path] | None:
    """The first candidate API path that has a text log, and that log."""
    return first_existing(text_log.file_for, candidates)
