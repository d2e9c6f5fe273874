"""Which versions of a notebook file the extension wrote itself, on top of whose version.

A tab that was away while the extension wrote its notebook (its kernel connection cut
by a sleeping laptop or a dropped network) still holds the file's old modification time
and hash. JupyterLab compares them with the file's at the tab's next save and, seeing
a difference, asks "File Changed: Overwrite or Revert?". When every change since the
tab's version is one of ours, the tab may take the file's current version as its own:
our writes only ever change outputs and execution counts, and the save guard gives a
save that lacks captured outputs the outputs back. Then the tab saves with no dialog.

Per notebook, this keeps one *lineage*: the version someone else left on disk before
our first write (the *origin*), our latest writes, and a token naming the chain of our
writes, which a tab that adopted one of them sends back. A write by anyone else
breaks the chain; our next write starts a new one. Pure: no I/O.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

#: Notebooks whose lineage is kept, the ones written longest ago dropped first.
MAX_LINEAGES = 1024
#: Our writes remembered per chain. A tab that loaded the file while we wrote it holds
#: one of our recent writes (a page reopened mid-run loads the file as a write lands);
#: one that loaded an older one still takes the chain when it sends the token back.
CHAIN_VERSIONS = 32


@dataclass(frozen=True)
class FileVersion:
    """A version of a file as the ContentsManager describes it (what JupyterLab compares)."""

    last_modified: datetime | None
    size: int | None = None
    hash: str | None = None

    @classmethod
    def of(cls, model: Any) -> FileVersion:
        """The version a ContentsManager model describes (missing fields are None)."""
        if not isinstance(model, dict):
            return cls(None)
        modified = model.get("last_modified")
        size = model.get("size")
        digest = model.get("hash")
        if isinstance(modified, str):  # a ContentsManager that sends times as text
            modified = parse_time(modified)
        return cls(
            modified if isinstance(modified, datetime) else None,
            size if isinstance(size, int) else None,
            digest if isinstance(digest, str) and digest else None,
        )

    def is_file(self, other: FileVersion) -> bool:
        """The same bytes on disk: equal hashes where both have one, else equal times.

        JupyterLab compares the same way: the hash when the server gives one, else the
        modification time.
        """
        if self.hash is not None and other.hash is not None:
            return self.hash == other.hash
        return self.last_modified is not None and self.last_modified == other.last_modified

    def is_our_write(self, written: FileVersion) -> bool:
        """Whether this is the file as we wrote it: same time and size (no hash needed)."""
        return (
            self.last_modified is not None
            and self.last_modified == written.last_modified
            and self.size == written.size
        )


def parse_time(value: str) -> datetime | None:
    """An ISO 8601 time as the contents API sends it (``...Z``); None if unreadable."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


@dataclass
class Lineage:
    """Our chain of writes of one notebook."""

    #: The file as someone else (a tab, an editor, git) left it before our first write.
    origin: FileVersion
    #: The file as each of our latest writes left it, oldest first.
    written: deque[FileVersion]
    #: Names this chain for tabs that took one of its versions as their own.
    token: str

    @property
    def latest(self) -> FileVersion:
        """The file as our latest write left it."""
        return self.written[-1]

    def holds(self, tab: FileVersion) -> bool:
        """Whether the tab's version is where the chain started or one of our writes."""
        return tab.is_file(self.origin) or any(tab.is_file(v) for v in self.written)


class WrittenVersions:
    """The lineage of our writes, per notebook path."""

    def __init__(self, max_lineages: int = MAX_LINEAGES) -> None:
        self.max_lineages = max_lineages
        self._lineages: OrderedDict[str, Lineage] = OrderedDict()

    def wrote(self, path: str, before: FileVersion | None, after: FileVersion) -> None:
        """We saved ``path``: the file was ``before`` (None: our own latest write), is ``after``.

        A ``before`` that is not our latest write means someone else wrote the file in
        between: a new chain starts from it.
        """
        lineage = self._lineages.pop(path, None)
        continues = lineage is not None and (before is None or before.is_our_write(lineage.latest))
        if lineage is not None and continues:
            lineage.written.append(after)
        elif before is not None:
            lineage = Lineage(before, deque([after], maxlen=CHAIN_VERSIONS), uuid.uuid4().hex)
        else:
            lineage = None  # our own write whose chain was forgotten: origin unknown
        if lineage is not None:
            self._lineages[path] = lineage
            while len(self._lineages) > self.max_lineages:
                self._lineages.popitem(last=False)

    def renamed(self, old_path: str, new_path: str) -> None:
        """The notebook moved; its lineage goes with it."""
        lineage = self._lineages.pop(old_path, None)
        if lineage is not None:
            self._lineages[new_path] = lineage

    def lineage(self, path: str) -> Lineage | None:
        """The chain of our writes of ``path``, if we wrote it."""
        return self._lineages.get(path)

    def only_ours_since(
        self, path: str, tab: FileVersion, tab_token: str, disk: FileVersion
    ) -> Lineage | None:
        """The lineage when every change from the tab's version to ``disk`` is one of ours.

        That holds when the file on disk is our latest write and the tab's version is
        where our chain started or one of its writes (the tab loaded it, or took it and
        sends the chain's ``token`` back). Otherwise None: someone else changed the
        file, and JupyterLab's "File Changed" question is the right one.
        """
        lineage = self._lineages.get(path)
        if lineage is None or not disk.is_our_write(lineage.latest):
            return None
        if tab_token and tab_token == lineage.token:
            return lineage
        if tab.is_file(disk) or lineage.holds(tab):
            return lineage
        return None
