"""What the server records besides the notebooks: the crash journal and the text log."""

from __future__ import annotations

from typing import Any

from tornado.ioloop import PeriodicCallback
from traitlets.config import LoggingConfigurable

from ..meter import LoopMeter
from ..model.progress import progress_line
from ..model.store import CaptureStore, Execution
from ..model.widgets import view_model_ids
from .journal import Journal
from .recovery import restore_journals
from .textlog import TextLog
from .writer import NotebookWriter

#: Seconds of the event loop thread's CPU time a periodic journal append holds at most,
#: about (one run's record may take longer): the loop answers requests between two steps.
JOURNAL_STEP = 0.005


class Recorder(LoggingConfigurable):
    """Appends to the journal and the text log every ``interval`` seconds.

    On start it first merges the journals a previous server left behind. A notebook's
    journal is deleted once all its executions have ended and their outputs are on disk.
    """

    def __init__(
        self,
        store: CaptureStore,
        writer: NotebookWriter,
        journal: Journal,
        text_log: TextLog | None,
        interval: float,
        *,
        meter: LoopMeter | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.meter = meter or LoopMeter()
        self.store = store
        self.writer = writer
        self.journal = journal
        self.text_log = text_log
        self.interval = interval
        self._loop: PeriodicCallback | None = None
        self._stopped = False
        self._journaled_paths: set[str] = set()
        #: Why the last journal append failed; None once one succeeds.
        self._journal_error: str | None = None
        #: Executions whose widgets changed since the text log last showed their bars.
        self._widgets_changed: dict[str, Execution] = {}
        #: Per execution with progress bars, the line each bar (by model id) last got.
        self._bar_lines: dict[str, tuple[Execution, dict[str, str]]] = {}

    async def start(self) -> None:
        """Restore old journals, then record every ``interval`` seconds."""
        try:
            self.journal.ensure_directory()
            if self.text_log is not None:
                self.text_log.ensure_directory()
            await restore_journals(self.journal, self.writer, self.log)
        except OSError as err:
            self.log.warning(
                "jupyter_persist: journal unavailable (%s); outputs not journaled", err
            )
            return
        if not self._stopped:
            self._loop = PeriodicCallback(self._timed_tick, self.interval * 1000)
            self._loop.start()

    def stop(self) -> None:
        """Stop the periodic recording (a last :meth:`tick` is the caller's)."""
        self._stopped = True
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def feed(self, execution: Execution, msg: dict[str, Any]) -> None:
        """Pass an output message to the text log, which keeps what the caps leave out."""
        if self.text_log is not None:
            self.text_log.feed(execution, msg)

    def note(self, execution: Execution, text: str) -> None:
        """Add a line of our own to an execution's text log."""
        if self.text_log is not None:
            self.text_log.note(execution, text)

    def note_input_request(self, kernel_id: str, execution: Execution | None, prompt: str) -> None:
        """A kernel asks for input and no client is attached to answer: log it, note it."""
        where = f"cell {execution.cell_id} of {execution.path}" if execution else "a cell"
        self.log.info(
            "jupyter_persist: %s on kernel %s is waiting for input (%r) and no client "
            "is attached to answer",
            where,
            kernel_id,
            prompt,
        )
        if execution is not None:
            self.note(execution, f"[waiting for input: {prompt!r}]\n")

    def widgets_changed(self, execution: Execution) -> None:
        """A widget state changed by ``execution`` changed: its progress bars may have moved."""
        if self.text_log is not None:
            self._widgets_changed[execution.msg_id] = execution

    def _log_progress_bars(self) -> None:
        """Give the text log a line for each progress bar that moved since its last line.

        One line per bar per tick at most: ``jupyter persist log -f`` follows a widget
        bar (``tqdm.auto``) at the journal's pace, as a plain tqdm bar writes lines
        when its output is not a terminal.
        """
        changed, self._widgets_changed = self._widgets_changed, {}
        for execution in changed.values():
            models = self.store.widgets.models_of(execution.kernel_id)
            _, logged = self._bar_lines.setdefault(execution.msg_id, (execution, {}))
            for root in view_model_ids(execution.area.outputs):
                line = progress_line(root, models)
                if line is not None and logged.get(root) != line:
                    self.note(execution, line + "\n")
                    logged[root] = line
        for msg_id, (execution, _) in list(self._bar_lines.items()):
            if not execution.running:
                del self._bar_lines[msg_id]

    def forget(self, execution: Execution) -> None:
        """Drop what is pending for an execution that goes to no notebook."""
        if self.text_log is not None:
            self.text_log.forget(execution)

    def _timed_tick(self) -> Any:
        return self.meter.timed("journal", self.tick_in_steps())

    def tick(self) -> None:
        """Append what changed; drop the journals of notebooks whose outputs are all saved."""
        if not self.journal.directory.is_dir():
            return
        try:
            try:
                self.journal.append(self._pending_runs())
            except OSError as err:
                self._journal_failed(err)
            else:
                self._journal_works()
            self._after_append()
        except Exception:
            self.log.exception("jupyter_persist: error writing the journal or the text log")

    async def tick_in_steps(self) -> None:
        """:meth:`tick`, the journal's encoding in steps of at most about ``JOURNAL_STEP``."""
        if not self.journal.directory.is_dir():
            return
        try:
            runs = self._pending_runs()
            # Their notebooks may get records before a run is written and released during
            # the steps: whichever tick comes next then looks at their journals.
            self._journaled_paths |= {str(e.path) for e in runs}
            try:
                written = await self.journal.append_in_steps(runs, JOURNAL_STEP)
            except OSError as err:
                self._journal_failed(err)
            else:
                if written is not None:  # else another tick ended it, and says how it went
                    self._journal_works()
            if self._stopped:
                return  # the server's last tick (stop's) did the rest; the text log closes
            self._after_append()
        except Exception:
            self.log.exception("jupyter_persist: error writing the journal or the text log")

    def _pending_runs(self) -> list[Execution]:
        return [e for e in self.store.executions() if _pending(e)]

    def _after_append(self) -> None:
        """The text log's turn; the journals of notebooks with nothing pending go.

        Looked at after the append, not before: during an append in steps a run may have
        got new output (its notebook's journal stays) or been written (it may go).
        """
        held = list(self.store.executions())
        if self.text_log is not None:
            self._log_progress_bars()
            self.text_log.flush(held)
        current = {str(e.path) for e in held if e.path is not None and e.placed}
        pending = {str(e.path) for e in held if _pending(e)}
        for path in (self._journaled_paths | current) - pending:
            self.journal.remove(path)
        self._journaled_paths = pending

    def _journal_failed(self, err: OSError) -> None:
        """One WARNING while appends fail (a full disk would otherwise log every second)."""
        if self._journal_error is None:
            self.log.warning(
                "jupyter_persist: cannot write the crash journal (%s); outputs are kept in "
                "memory and still written to the notebooks; trying again every %s s",
                err,
                self.interval,
            )
        self._journal_error = str(err)

    def _journal_works(self) -> None:
        if self._journal_error is not None:
            self.log.info("jupyter_persist: the crash journal can be written again")
            self._journal_error = None


def _pending(execution: Execution) -> bool:
    """A notebook cell's run not on disk yet: what the journal keeps.

    A written run the store keeps (no client saw it) would otherwise be journaled afresh
    and its journal removed again at every tick, as long as its kernel lives.
    """
    return (
        execution.path is not None and execution.placed and (execution.dirty or execution.running)
    )
