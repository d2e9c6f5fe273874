"""The Jupyter Server extension: configuration, wiring and lifecycle."""

from __future__ import annotations

import os
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Integer, TraitError, Unicode, default, validate

from .api.handlers import HANDLERS
from .capture import CaptureManager
from .gcpauses import freeze_startup_objects
from .kernels.lifecycle import KERNEL_ACTIONS_SCHEMA
from .kernels.websocket import SETTINGS_KEY, SINK_SETTINGS_KEY, compose_connection_class
from .model.caps import Limits
from .routing.locator import CONTENTS_SCHEMA


class PersistExtension(ExtensionApp):
    """Keeps every notebook output on the server, whether or not a browser is connected."""

    name = "jupyter_persist"
    load_other_extensions = True

    save_interval = Float(
        5.0,
        config=True,
        help="""Seconds between writes of a notebook's captured outputs while no client is
        attached to its kernel. The first write happens at most this long after the last
        client leaves; later ones every this many seconds while output keeps arriving, and
        at once when an execution ends. Must be greater than 0.""",
    )

    journal_interval = Float(
        1.0,
        config=True,
        help="""Seconds between appends to the crash journal. Every output change reaches
        the journal (and the operating system) at most this long after it happened, so a
        server killed with SIGKILL loses at most this much output. Must be greater than 0.""",
    )

    state_dir = Unicode(
        config=True,
        help="""Directory for the extension's state: the crash journals (in `journals/`).
        Created owner-only (0700). Default: `jupyter_persist` in the Jupyter data
        directory (`jupyter --data-dir`).""",
    )

    text_log = Bool(
        True,
        config=True,
        help="""Keep a plain-text log of each notebook's outputs, appended live (follow it
        with `tail -f`): a header line per execution (time, execution count, cell id),
        stream text with progress bars folded, tracebacks without colour codes.""",
    )

    text_log_dir = Unicode(
        config=True,
        help="""Directory of the text logs, one `<notebook name>-<hash>.log` per notebook,
        created owner-only. Default: `logs` in `state_dir`.""",
    )

    text_log_max_bytes = Integer(
        10_000_000,
        config=True,
        help="""Size in bytes at which a text log is rotated: the file is renamed to
        `<name>.log.1` (replacing the previous one) and a new one started.""",
    )

    stream_head_chars = Integer(
        100_000,
        config=True,
        help="""Characters kept from the start of a stream output (stdout, stderr) once it
        grows over its cap. With `stream_tail_chars` this bounds what one stream output
        takes in memory and in the notebook; the characters in between are replaced by a
        marker line saying how many were left out (the text log keeps them all).""",
    )

    stream_tail_chars = Integer(
        400_000,
        config=True,
        help="""Characters kept from the end of a stream output once it grows over its
        cap (see `stream_head_chars`). Trimming starts when the part after the head
        exceeds this by a quarter.""",
    )

    max_rich_output_bytes = Integer(
        5_000_000,
        config=True,
        help="""Largest rich output (display data, execute result) kept, counted as the
        characters of all its MIME representations. A larger one is replaced by a
        marker output that names its types and size.""",
    )

    max_write_share = Float(
        0.05,
        config=True,
        help="""Largest share of time spent writing any one notebook. After a write that
        took t seconds of CPU, the notebook is not written again for t × (1/share − 1)
        seconds, even if `save_interval` is shorter: small notebooks are written every
        `save_interval`, a 50 MB one (about a second per write) every ~20 s. The CPU
        counted is the server's threads' (the event loop's steps of the write, the
        ContentsManager's worker threads meanwhile), not the wall time, which also counts
        the waits for a busy machine's cores or a slow disk (the wall time where threads'
        CPU clocks cannot be read). The pause
        holds while a cell of the notebook runs, and for the write at the end of a run
        with no client attached (cells run one after the other into a big notebook):
        the notebook is written at the first tick at which none of its cells runs. The
        crash journal still records every output within `journal_interval`. Between 0
        (exclusive) and 1; 1 turns the pause off.""",
    )

    gil_switch_interval = Float(
        0.001,
        config=True,
        help="""Seconds of the interpreter's GIL switch interval (`sys.setswitchinterval`)
        while the server's ContentsManager reads or saves a notebook for the extension;
        the interval in force before (Python's default is 0.005) comes back once it is
        done. jupyter_server serializes a notebook in a worker thread with Python's
        pure-Python JSON encoder (seconds for tens of MB), and each time the event loop
        gives up the GIL while answering a request, it waits up to this long to get it
        back: measured, `GET /api/status` p99 while 150 runs of 400 kB were saved into
        a 60 MB notebook 52 → 40 ms. 0, or a value not below the interval in force,
        leaves the interval alone.""",
    )

    replay_buffer_max_bytes = Integer(
        8 * 1024 * 1024,
        config=True,
        help="""Bytes of kernel messages the server keeps, after the last client of a kernel
        disconnects, to replay to a client that reconnects with the same session id; the
        oldest are dropped beyond this. jupyter_server itself keeps every message
        (`MappingKernelManager.buffer_offline_messages`), which grows the server by the
        size of everything a kernel prints while nobody is connected; the extension keeps
        every output itself, so only the newest are needed. 0 leaves the server's buffer
        unbounded.""",
    )

    freeze_startup_objects = Bool(
        True,
        config=True,
        help="""Leave the objects that exist once the server has started out of Python's
        garbage collections (`gc.collect()` then `gc.freeze()`, once, when the server's
        event loop starts). Some 235,000 objects of jupyter_server, its imports and
        extensions live until the process ends, and a whole-heap collection went
        through all of them: 90 ms of an idle core, and 0.6–2 s on a machine short of
        CPU, during which the event loop waits (18–90 ms with them frozen and the
        replay buffers' messages untracked). Frozen objects are still freed when their
        last reference goes. Off: collections go through the whole heap, as a server
        without the extension does.""",
    )
    track_kernel_activity = Bool(
        False,
        config=True,
        help="""Keep each local kernel's `last_activity` and `execution_state` (what
        `GET /api/kernels` reports and the idle culler decides on) by the rules of
        jupyter_server's activity watcher, and stop that watcher while the extension's
        subscription is live. The watcher deserializes every message on the server's
        event loop, dates parsed: with many kernels printing, it and its socket took
        60-80% of the loop's time, with or without the extension (docs/benchmarks.md).
        The extension's reader process stands in for it, off the loop, with a second
        subscription per kernel bounded as the watcher's socket is and narrowed to the
        kernel's statuses' topic, so that the state does not wait for the capture's
        backlog; the other messages move last_activity from the capture. The server's
        watcher is started again whenever the subscription may miss messages (a kernel
        restart, a new reader, the subscription's end). Off by default: with a client
        attached to a kernel printing as fast as it can, the kernel ran slower with it
        on, as it does on a plain server without its watcher: a server with spare CPU
        reads the kernel's messages sooner, and the kernel then sends them one write at
        a time (docs/benchmarks.md). Off: the server's watcher runs for every kernel, as
        without the extension.""",
    )
    trim_memory = Bool(
        True,
        config=True,
        help="""Give memory the server freed back to the operating system once output
        stopped arriving (the first `save_interval` tick with no new message) after
        output arrived, runs were released or notebooks written (glibc's `malloc_trim`,
        on a worker thread; a few ms for a heap of hundreds of MB). The C
        allocator otherwise keeps the holes large outputs leave, and the server's RSS
        can stay up to twice what it holds. Also fixes glibc's mmap threshold (32 MB)
        and trim threshold (8 MB) at start, unless the environment sets them
        (`MALLOC_*_`, `GLIBC_TUNABLES`): a trim leaves the top of a thread's arena,
        where the ContentsManager parses notebooks, and glibc's own threshold keeps up
        to 64 MB there. Does nothing where the C library has no `malloc_trim` (musl,
        macOS). The IOPub reader process trims its own heap too, at the end of a quiet
        second after 8 MB or more were read. Off: RSS keeps the allocator's high-water
        mark, the server's and the reader's.""",
    )

    iopub_reader = Enum(
        ["process", "thread"],
        "process",
        config=True,
        help="""Where kernels' IOPub messages are received, checked and decoded before the
        server's event loop takes them in batches: "process", a process of the
        extension's own (`python -m jupyter_persist.kernels.readloop`), on another core
        and off the server's GIL, started with the first kernel and ended with the
        server; "thread", a thread of the server (for where processes cannot be
        started; it shares the server's GIL). Where ZMQ has no IPC transport, "process"
        falls back to "thread" with a warning.""",
    )

    reader_nice = Integer(
        10,
        config=True,
        help="""How much lower than the server's the CPU priority of the IOPub reader
        process's reading thread is (a nice increment, 0 to 19; Linux only, where a
        thread's nice value is its own). The reader copies every kernel's output a
        second time; on a machine with no free core (a kernel printing 200 MB/s on
        two cores), at the server's priority it takes CPU time the server's event loop
        waits for: measured, `GET /api/status` p99 during a flood of 1 MB prints
        47–136 ms at 0, 18–43 ms at 10. With the kernel's scheduler grouping processes
        by session (autogroup, on by default in most distributions; kernels start in
        sessions of their own) this ranks the reader below the server's own threads
        only; without it, below the kernels too. The reader still gets its share;
        its sockets queue without a limit meanwhile, and the thread that receives
        into those queues keeps the server's priority, so nothing is dropped. 0
        leaves the priority alone;
        not used in "thread" mode (a lower-priority thread holding the GIL would make
        the event loop wait).""",
    )

    @validate("max_write_share")
    def _validate_share(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if not 0 < value <= 1:
            raise TraitError(f"PersistExtension.max_write_share must be in (0, 1], got {value!r}")
        return value

    @validate("gil_switch_interval")
    def _validate_switch_interval(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if value != 0 and value < 1e-6:
            # The interpreter keeps whole microseconds: less would be 0, a switch at
            # every chance.
            raise TraitError(
                f"PersistExtension.gil_switch_interval must be 0 or >= 1e-6 s, got {value!r}"
            )
        return value

    @validate("reader_nice")
    def _validate_reader_nice(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if not 0 <= value <= 19:
            raise TraitError(f"PersistExtension.reader_nice must be 0 to 19, got {value!r}")
        return value

    @validate("replay_buffer_max_bytes")
    def _validate_replay_bound(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if value < 0:
            raise TraitError(
                f"PersistExtension.replay_buffer_max_bytes must be >= 0, got {value!r}"
            )
        return value

    @validate("stream_head_chars", "stream_tail_chars", "max_rich_output_bytes")
    def _validate_cap(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if value < 1000:
            name = proposal["trait"].name
            raise TraitError(f"PersistExtension.{name} must be at least 1000, got {value!r}")
        return value

    @default("text_log_dir")
    def _default_text_log_dir(self) -> str:
        return os.path.join(self.state_dir, "logs")

    @default("state_dir")
    def _default_state_dir(self) -> str:
        return os.path.join(jupyter_data_dir(), "jupyter_persist")

    @validate("save_interval", "journal_interval")
    def _validate_interval(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if not value > 0:
            name = proposal["trait"].name
            raise TraitError(f"PersistExtension.{name} must be > 0 seconds, got {value!r}")
        return value

    def initialize_settings(self) -> None:
        """Build the capture manager and put it where the kernel websockets find it."""
        serverapp = self.serverapp
        assert serverapp is not None
        self.capture = CaptureManager(
            parent=self,
            log=serverapp.log,
            kernel_manager=serverapp.kernel_manager,
            session_manager=serverapp.session_manager,
            contents_manager=serverapp.contents_manager,
            save_interval=self.save_interval,
            journal_interval=self.journal_interval,
            state_dir=self.state_dir,
            text_log_dir=self.text_log_dir if self.text_log else "",
            text_log_max_bytes=self.text_log_max_bytes,
            max_write_share=self.max_write_share,
            gil_switch_interval=self.gil_switch_interval,
            replay_buffer_max_bytes=self.replay_buffer_max_bytes,
            iopub_reader=self.iopub_reader,
            reader_nice=self.reader_nice,
            trim_memory=self.trim_memory,
            freeze_startup_objects=self.freeze_startup_objects,
            track_kernel_activity=self.track_kernel_activity,
            # The collaboration extension adds itself to these settings as it loads.
            web_settings=serverapp.web_app.settings,
            limits=Limits(
                stream_head_chars=self.stream_head_chars,
                stream_tail_chars=self.stream_tail_chars,
                max_rich_output_bytes=self.max_rich_output_bytes,
                text_log_hint=(
                    f"in the notebook's text log in {self.text_log_dir}"
                    if self.text_log
                    else "not kept (PersistExtension.text_log is off)"
                ),
            ),
        )
        configured = self.settings.get("kernel_websocket_connection_class")
        if configured is None:
            configured = serverapp.kernel_websocket_connection_class
        composed = compose_connection_class(configured)
        self.settings["kernel_websocket_connection_class"] = composed
        self.settings[SETTINGS_KEY] = self.capture
        self.settings[SINK_SETTINGS_KEY] = self.capture.client_events
        # Composes with an admin's own ContentsManager.pre_save_hook, which runs first.
        serverapp.contents_manager.register_pre_save_hook(self.capture.save_hooks.on_pre_save)
        serverapp.contents_manager.register_post_save_hook(self.capture.save_hooks.on_post_save)
        event_logger = serverapp.event_logger
        assert event_logger is not None
        event_logger.add_listener(
            schema_id=KERNEL_ACTIONS_SCHEMA, listener=self.capture.kernels.on_kernel_action
        )
        event_logger.add_listener(
            schema_id=CONTENTS_SCHEMA, listener=self.capture.locator.on_contents_event
        )
        serverapp.log.info(
            "jupyter_persist: capturing kernel outputs; %s; websocket class %s",
            "; ".join(f"{name}={value}" for name, value in self.effective_config().items()),
            f"{configured.__module__}.{configured.__qualname__}",
        )

    def effective_config(self) -> dict[str, Any]:
        """Every setting of the extension, as in effect (for the start line of the log)."""
        return {name: getattr(self, name) for name in sorted(self.class_own_traits(config=True))}

    def initialize_handlers(self) -> None:
        """Add the REST API (``/api/persist/...``)."""
        self.handlers.extend(HANDLERS)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Start the flush loop once the server's event loop runs."""
        self.capture.start()
        if self.freeze_startup_objects:
            frozen = freeze_startup_objects()
            if frozen is not None:
                self.log.info(
                    "jupyter_persist: %d objects of the server's start left out of garbage "
                    "collections (freeze_startup_objects)",
                    frozen,
                )

    async def stop_extension(self) -> None:
        """Write what is still unwritten and release every kernel subscription."""
        capture = getattr(self, "capture", None)
        if capture is not None:
            await capture.stop()
