"""A tab that comes back: may it take the notebook file's current version as its own?

While a tab's kernel connection was cut, the extension wrote the notebook; the tab
still holds the version it loaded or last saved, and JupyterLab would ask "File
Changed" at its next save. The extension's frontend asks here first, before each save
and whenever its version changes (see ``src/versions.ts``). When every change since the
tab's version is one of our writes (see :mod:`.versions`), the answer carries the file's
current modification time and hash for the tab to take, and our writes of the notebook
pause for :data:`TAB_SAVE_HOLD` seconds, so that the version the tab takes is still the
one on disk when its save checks it. Our writes change only outputs and execution counts,
and the save guard gives a save that lacks captured outputs the outputs back: nothing of
ours or the user's is lost by the save that follows.
"""

from __future__ import annotations

import logging
from typing import Any

from jupyter_client.jsonutil import json_default

from ..kernels.clients import AttachedClients
from .flusher import Flusher
from .versions import FileVersion
from .writer import NotebookWriter

#: Seconds our writes of a notebook pause after a returning tab was told to take its version.
TAB_SAVE_HOLD = 10.0


async def check_tab_version(
    writer: NotebookWriter,
    flusher: Flusher,
    clients: AttachedClients,
    path: str,
    tab: FileVersion,
    *,
    token: str = "",
    log: logging.Logger | None = None,
) -> dict[str, Any]:
    """The answer to a tab holding version ``tab`` of ``path`` (``token``: the chain it took).

    ``{"path", "only_ours": bool, "last_modified", "hash", "hash_algorithm", "token"}``:
    with ``only_ours`` true, the file on disk differs from the tab's version by our
    writes alone, and the tab may take the version described. Raises the
    ContentsManager's ``HTTPError`` (404) when the file does not exist.
    """
    answer: dict[str, Any] = {"path": path, "only_ours": False}
    if writer.versions.lineage(path) is None:
        return answer  # never written by us: nothing to take
    async with flusher.no_write(path):
        model = await writer.get_model(path, content=False)
        disk = FileVersion.of(model)
        lineage = writer.versions.only_ours_since(path, tab, token, disk)
        if lineage is None:
            return answer
        clients.hold_for_save(path, TAB_SAVE_HOLD)
    if log is not None and not tab.is_file(disk):
        log.info(
            "jupyter_persist: a tab of %s takes the file as we wrote it, and saves over it",
            path,
        )
    answer.update(
        only_ours=True,
        last_modified=json_default(model["last_modified"]),
        hash=model.get("hash"),
        hash_algorithm=model.get("hash_algorithm"),
        token=lineage.token,
    )
    return answer
