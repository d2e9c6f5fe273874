"""``jupyter persist restore`` and ``jupyter persist clean``: the state files, by hand."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from jupyter_server.services.contents.fileio import atomic_writing
from traitlets import Bool, Float, Unicode

from ..storage.ondisk import find_journal, journal_files, journaled_cells
from ..storage.recovery import plan_restore
from ..storage.textlog import notebook_of_log
from ..storage.writer import merge_outputs
from .base import CommandError, PersistCommand, RunningServer, size
from .outputs import modified_time, read_notebook


class RestoreApp(PersistCommand):
    """Merge a notebook's crash journal into it, offline."""

    name = "jupyter persist restore"
    description = """Merge the outputs a crash journal holds into their notebook, as the
    server does when it starts: only outputs and execution counts change, never sources
    or metadata. Refuses a notebook it cannot parse, a notebook saved with other outputs
    after the journal's last record (unless --force), and one a running server is
    capturing (the server writes it itself). With --to, writes a merged copy instead and
    keeps the journal."""
    examples = (
        "jupyter persist restore train.ipynb\n"
        "jupyter persist restore train.ipynb --to train-restored.ipynb"
    )

    to = Unicode("", config=True, help="Write the merged notebook to this file instead.")
    force = Bool(
        False,
        config=True,
        help="Restore even over a notebook saved after the journal (and replace --to).",
    )
    aliases = {"to": "RestoreApp.to", "state-dir": "PersistExtension.state_dir"}
    flags = {"force": ({"RestoreApp": {"force": True}}, "Restore even over newer changes.")}

    def run(self) -> None:
        """Restore."""
        notebook_file = self.notebook_argument()
        servers = self.running_servers()
        journal = self.journal()
        found = find_journal(journal, self.candidates(notebook_file, servers))
        if found is None:
            raise CommandError(f"no journal for {notebook_file} in {journal.directory}")
        api_path, journal_file = found
        capturing = capturing_server(servers, notebook_file)
        if capturing is not None:
            raise CommandError(
                f"{notebook_file} is being captured by the server at {capturing.url}, which "
                "writes it and its journal itself"
            )
        target = Path(self.to or notebook_file)
        if self.to and target.exists() and not self.force:
            raise CommandError(f"{target} exists; add --force to replace it")
        notebook = read_notebook(notebook_file)
        self.reading(journal_file)
        journaled = journaled_cells(journal, journal_file, api_path)
        if not journaled:
            raise CommandError(f"the journal {journal_file} holds no outputs of {notebook_file}")
        plan = plan_restore(notebook, modified_time(notebook_file), journaled)
        if plan.changed_since is not None and not self.to and not self.force:
            raise CommandError(
                f"{notebook_file} was saved after the journal's last record "
                f"({plan.last_record.astimezone():%Y-%m-%d %H:%M:%S}) with other outputs; "
                "restoring would undo that: use --to to write a merged copy, or --force"
            )
        merged = merge_outputs(notebook, plan.updates)
        with atomic_writing(str(target), encoding="utf-8") as handle:
            nbformat.write(notebook, handle)
        print(f"Restored {len(plan.differs)} cell(s) into {target}.")
        if merged.missing:
            print(
                f"{len(merged.missing)} journaled cell(s) are no longer in the notebook; "
                f"their outputs stay in {journal_file}.",
                file=sys.stderr,
            )
        elif not self.to:
            journal_file.unlink(missing_ok=True)
            print(f"Removed the journal {journal_file}.")


class CleanApp(PersistCommand):
    """Remove journals and text logs of notebooks that are gone, or older than some days."""

    name = "jupyter persist clean"
    description = """Remove the crash journals and text logs of notebooks that no longer
    exist under --root-dir, and, with --older-than, those not changed for that many days.
    Lists what it would remove; deletes only with --yes. Never touches the files of a
    notebook a running server is capturing."""
    examples = "jupyter persist clean\njupyter persist clean --older-than 30 --yes"

    older_than = Float(0, config=True, help="Also remove files not modified for this many days.")
    yes = Bool(False, config=True, help="Delete (without it, only list what would go).")
    root_dir = Unicode(
        config=True,
        help="""Folder the notebooks' paths are relative to (the server's root). Default:
        ServerApp.root_dir from the server's config, else the current folder.""",
    )
    aliases = {
        "older-than": "CleanApp.older_than",
        "root-dir": "CleanApp.root_dir",
        "state-dir": "PersistExtension.state_dir",
    }
    flags = {"yes": ({"CleanApp": {"yes": True}}, "Delete the files listed.")}

    def run(self) -> None:
        """List, and with --yes delete."""
        if self.older_than < 0:
            raise CommandError("--older-than must be 0 or more days")
        root = Path(self.root_dir or self.config.get("ServerApp", {}).get("root_dir") or ".")
        if not root.is_dir():
            raise CommandError(f"--root-dir {root} is not a folder")
        in_use = {
            notebook["path"]
            for server in self.running_servers()
            if server.status is not None
            for notebook in server.status["notebooks"]
        }
        self.progress(
            f"Checking {len(self.journal().files())} journal(s) in {self.journal().directory}..."
        )
        doomed = self._journals(root, in_use) + self._logs(root, in_use)
        for file, reason in doomed:
            print(f"{'removing' if self.yes else 'would remove'} {file}: {reason}")
            if self.yes:
                file.unlink(missing_ok=True)
        total = sum(_size(file) for file, _ in doomed)
        verb = "Removed" if self.yes else "Would remove"
        print(
            f"{verb} {len(doomed)} file(s), {size(total)} "
            f"(notebooks looked up under {root.resolve()})."
        )
        if doomed and not self.yes:
            print("Nothing was deleted: add --yes to delete these.")

    def _reason(self, root: Path, notebooks: list[str], modified: float) -> str | None:
        if notebooks and not any((root / path).exists() for path in notebooks):
            return f"{', '.join(notebooks)} no longer exists"
        age_days = (time.time() - modified) / 86400
        if self.older_than and age_days > self.older_than:
            return f"not modified for {age_days:.0f} days"
        return None

    def _journals(self, root: Path, in_use: set[str]) -> list[tuple[Path, str]]:
        found = []
        for journal in journal_files(self.journal()):
            if in_use & set(journal.notebooks):
                continue
            reason = self._reason(root, journal.notebooks, journal.modified)
            if reason:
                found.append((journal.file, f"journal; {reason}"))
        return found

    def _logs(self, root: Path, in_use: set[str]) -> list[tuple[Path, str]]:
        text_log = self.text_log()
        if text_log is None or not text_log.directory.is_dir():
            return []
        found = []
        for file in sorted(text_log.directory.glob("*.log*")):
            notebook = notebook_of_log(file)
            if notebook in in_use:
                continue
            reason = self._reason(root, [notebook] if notebook else [], _mtime(file))
            if reason:
                found.append((file, f"text log; {reason}"))
        return found


def capturing_server(servers: list[RunningServer], notebook_file: str) -> RunningServer | None:
    """The running server capturing this notebook file, if one is."""
    absolute = os.path.abspath(notebook_file)
    for server in servers:
        for notebook in (server.status or {}).get("notebooks", []):
            if os.path.abspath(os.path.join(server.root_dir, notebook["path"])) == absolute:
                return server
    return None


def _mtime(file: Path) -> float:
    try:
        return file.stat().st_mtime
    except OSError:
        return time.time()


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except OSError:
        return 0
