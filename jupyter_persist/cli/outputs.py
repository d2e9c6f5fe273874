"""``jupyter persist log`` and ``jupyter persist show``: a notebook's outputs in a terminal."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
from traitlets import Bool, Float, Unicode

from ..storage.ondisk import find_journal, find_text_log, journaled_cells
from ..storage.recovery import plan_restore
from ..storage.textlog import ANSI_ESCAPE, output_text
from ..storage.writer import merge_outputs
from .base import CommandError, PersistCommand


class LogApp(PersistCommand):
    """Print a notebook's text log, or follow it as ``tail -f`` does."""

    name = "jupyter persist log"
    description = """Print the text log of a notebook: every output of its cells as text,
    with a header line per execution, kept in full even where the notebook keeps only
    the head and tail of a long output. With -f, keep printing what is appended."""
    examples = "jupyter persist log train.ipynb\njupyter persist log -f train.ipynb"

    follow = Bool(False, config=True, help="Keep printing what is appended, like `tail -f`.")
    poll_interval = Float(0.5, config=True, help="Seconds between checks for new text (-f).")
    flags = {
        "f": ({"LogApp": {"follow": True}}, "Keep printing what is appended, like `tail -f`."),
        "follow": ({"LogApp": {"follow": True}}, "Same as -f."),
    }

    def run(self) -> None:
        """Print (and follow) the log."""
        notebook = self.notebook_argument()
        text_log = self.text_log()
        if text_log is None:
            raise CommandError("the text log is off (PersistExtension.text_log = False)")
        found = find_text_log(text_log, self.candidates(notebook, self.running_servers()))
        if found is None:
            raise CommandError(f"no text log for {notebook} in {text_log.directory}")
        _, file = found
        where = self._print_from(file, (None, 0))
        while self.follow:
            time.sleep(self.poll_interval)
            where = self._print_from(file, where)

    def _print_from(self, file: Path, where: tuple[int | None, int]) -> tuple[int | None, int]:
        """Print the log from ``where`` (the file's inode, a byte offset) on; return the end.

        The server rotates a log by renaming it to ``.log.1`` and starting a new file: a
        new inode, or a file shorter than the offset, is read from its start.
        """
        inode, position = where
        try:
            with file.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                if stat.st_ino != inode or stat.st_size < position:
                    position = 0
                handle.seek(position)
                data = handle.read()
        except FileNotFoundError:
            return None, 0  # being rotated: the new file starts again from 0
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()
        return stat.st_ino, position + len(data)


class ShowApp(PersistCommand):
    """Print a notebook's outputs as text: the file, merged with any newer journal."""

    name = "jupyter persist show"
    description = """Print the outputs of a notebook's code cells as text, as the notebook
    file holds them merged with any newer crash journal (outputs the server captured but
    has not written yet), so a run can be checked over SSH without a browser."""
    examples = "jupyter persist show train.ipynb\njupyter persist show train.ipynb --cell 3"

    cell = Unicode(
        "",
        config=True,
        help="Only this cell: its number in the notebook (1 is the first cell), or its id.",
    )
    aliases = {"cell": "ShowApp.cell", "state-dir": "PersistExtension.state_dir"}

    def run(self) -> None:
        """Print the outputs."""
        notebook_file = self.notebook_argument()
        notebook = read_notebook(notebook_file)
        found = find_journal(self.journal(), self.candidates(notebook_file, self.running_servers()))
        if found is not None:
            api_path, journal_file = found
            self.reading(journal_file)
            journaled = journaled_cells(self.journal(), journal_file, api_path)
            if journaled:
                plan = plan_restore(notebook, modified_time(notebook_file), journaled)
                if plan.changed_since is None:
                    merge_outputs(notebook, plan.updates)
                    print(f"(merged with the journal {journal_file})\n")
                else:
                    print(f"(the journal {journal_file} is older than the file: not shown)\n")
        cells = select_cells(notebook.cells, self.cell)
        color = sys.stdout.isatty()
        for number, cell in cells:
            print("\n".join(cell_lines(number, cell, color)))


def read_notebook(file: str) -> Any:
    """Read a notebook file, or fail with one line saying why."""
    try:
        return nbformat.read(file, as_version=4)
    except FileNotFoundError:
        raise CommandError(f"{file} does not exist") from None
    except Exception as err:  # nbformat raises many kinds for a file that is not a notebook
        raise CommandError(f"{file} is not a readable notebook: {err}") from None


def select_cells(cells: list[Any], wanted: str) -> list[tuple[int, Any]]:
    """(number, cell) of the cells to show: every cell, or the one named by number or id."""
    numbered = list(enumerate(cells, start=1))
    if not wanted:
        return [(n, c) for n, c in numbered if c.get("cell_type") == "code"]
    if wanted.isdigit():
        number = int(wanted)
        if not 1 <= number <= len(cells):
            raise CommandError(f"--cell {wanted}: the notebook has {len(cells)} cells")
        return [numbered[number - 1]]
    matches = [(n, c) for n, c in numbered if c.get("id") == wanted]
    if not matches:
        raise CommandError(f"--cell {wanted}: no cell has that number or id")
    return matches


def cell_lines(number: int, cell: Any, color: bool) -> list[str]:
    """A cell's header and its outputs as text."""
    count = cell.get("execution_count")
    source = cell.get("source", "")
    first = (source if isinstance(source, str) else "".join(source)).strip().split("\n")[0]
    header = f"── cell {number} · In [{count if count is not None else ' '}] · {first[:60]}"
    lines = [header]
    for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
        if output.get("output_type") == "stream":
            text = output.get("text", "")
            text = text if isinstance(text, str) else "".join(text)
        else:
            text = output_text(output)
        if not color:
            text = ANSI_ESCAPE.sub("", text)
        lines.append(text.rstrip("\n"))
    return lines


def modified_time(file: str) -> datetime:
    """A file's modification time (to compare with the journal's records)."""
    return datetime.fromtimestamp(os.path.getmtime(file), tz=timezone.utc)
