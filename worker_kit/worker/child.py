"""The handler process of process isolation (`run_child([FD])`, started by isolation.Child).

The worker (worker_kit.worker.isolation) starts this process with one end of a socket pair
as FD. It imports the handler module itself (so a model loaded at import, or a GPU
initialised, belongs to this process alone) and runs one job at a time with the same
`execution.Run` as the thread mode, so every kind of handler, streaming, progress and
interrupts behave the same. What the handler yields or reports goes to the worker over the
socket; the worker keeps the connection to the service, the leases and the reporting.

Messages are msgpack maps, `t` naming the kind (see isolation.py for the worker's side):
worker -> child: init {spec}, run {id, input, attempt, policy, webhook}, stop;
child -> worker: ready {pid} or error {message}, item {kind, data}, result {state, output,
error, detail, settled, optional}, settled (when the handler's code ended after its result).
The socket closing means the worker is gone or done with this process: it exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import runpy
import signal
import socket
import sys
import traceback
from typing import Any

import msgpack

from ..job import JobState
from ..logs import configure_logging
from ..protocol import pack
from .execution import Job, Run
from .registry import Handler, default_registry

log = logging.getLogger("worker_kit.worker")

#: The run_name a handler file is loaded under: not "__main__", so its `worker_kit.start()`
#: guard does not start a second worker here.
HANDLER_RUN_NAME = "__worker_kit_handler__"
#: Set in a handler process's environment (the handler may read it).
CHILD_VAR = "WORKER_KIT_HANDLER_PROCESS"


class StartCalled(BaseException):
    """Raised by `worker_kit.start()` in a handler process: a handler file that calls start()
    at its top level, unguarded (as the hosted SDK's examples do), has registered its handler
    by then; the rest of the file is what start() would never have returned to."""

    def __init__(self, handler: Any) -> None:
        super().__init__("worker_kit.start() in a handler process")
        self.handler = handler


class Channel:
    """msgpack messages over an asyncio stream pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=2**31 - 1)

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(msgpack.packb(message, use_bin_type=True))

    async def drain(self) -> None:
        await self.writer.drain()

    async def recv(self) -> dict[str, Any] | None:
        """The next message, or None once the other side closed the socket."""
        while True:
            for message in self._unpacker:
                return message
            try:
                data = await self.reader.read(1 << 16)
            except ConnectionError:  # the other side is gone: the same as closing
                return None
            if not data:
                return None
            self._unpacker.feed(data)


class PipeSink:
    """execution.Sink that forwards a job's chunks and progress to the worker."""

    buffered = 0

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def add(self, kind: str, packed_data: bytes) -> None:
        self.channel.send({"t": "item", "kind": kind, "data": packed_data})

    async def wait_room(self) -> None:
        await self.channel.drain()  # the socket's buffer is the backlog: the worker reads as it sends


def load_handler(spec: dict[str, Any]) -> Handler:
    """Import the handler's module (by name, else run its file) and find the handler in it."""
    for entry in reversed(spec.get("sys_path") or []):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    namespace: dict[str, Any] = {}
    try:
        if spec.get("module"):
            namespace = vars(importlib.import_module(spec["module"]))
        else:
            namespace = runpy.run_path(spec["file"], run_name=HANDLER_RUN_NAME)
    except StartCalled as called:  # the file's own start() names its handler, or the registry has it
        if called.handler is not None:
            return default_registry.get(called.handler)
    with contextlib.suppress(Exception):
        return default_registry.get(spec["name"])
    target: Any = None
    for i, part in enumerate(spec["qualname"].split(".")):
        target = namespace.get(part) if i == 0 else getattr(target, part, None)
    if not callable(target):
        raise LookupError(f"no handler {spec['qualname']!r} in {spec.get('module') or spec['file']}")
    return Handler(fn=target, name=spec["name"], return_aggregate_stream=spec.get("aggregate", False))


class ChildServer:
    """Runs the jobs the worker sends, one at a time."""

    def __init__(self, channel: Channel, handler: Handler) -> None:
        self.channel = channel
        self.handler = handler
        self.run: Run | None = None
        self._validate = None
        if handler.input_schema is not None:
            from ..validation import validate

            self._validate = validate

    async def serve(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        while True:
            message = await self.channel.recv()
            if message is None:
                return
            if message["t"] == "run":
                task = asyncio.get_running_loop().create_task(self._run(message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif message["t"] == "stop" and self.run is not None:
                self.run.interrupt()

    async def _run(self, m: dict[str, Any]) -> None:
        job = Job(m["id"], m["input"], attempt=m["attempt"], policy=m["policy"], webhook=m["webhook"])
        run = self.run = Run(self.handler, job, PipeSink(self.channel), self._validate)
        run.start()
        outcome = await run.result
        output = None
        if outcome.state is JobState.COMPLETED and outcome.output is not None:
            try:
                output = pack(outcome.output)
            except Exception as exc:
                error = f"result is not serialisable: {type(exc).__name__}: {exc}"
                outcome.state, outcome.error = JobState.FAILED, error
                outcome.error_detail = {"type": "SerializationError", "message": error}
        settled = run.settled.done()  # usually: then one message says both
        self.channel.send({"t": "result", "state": outcome.state, "output": output, "error": outcome.error,
                           "detail": outcome.error_detail, "settled": settled,
                           "optional": outcome.output_optional})
        await run.settled
        self.run = None
        if not settled:
            self.channel.send({"t": "settled"})


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the worker dies, even a kill -9 of it while a
    handler here is stuck in C (the socket's end is noticed only by a live event loop)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the worker died before the line above
            os._exit(1)


async def main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    channel = Channel(reader, writer)
    init = await channel.recv()
    if init is None:
        return
    configure_logging(level=init.get("log_level", "INFO"), fmt=init.get("log_format", "text"))
    try:
        handler = load_handler(init["spec"])
    except BaseException as exc:
        lines = traceback.format_exception(exc)
        channel.send({"t": "error", "message": f"{type(exc).__name__}: {exc}", "traceback": "".join(lines)})
        await channel.drain()
        return
    channel.send({"t": "ready", "pid": os.getpid()})
    await ChildServer(channel, handler).serve()


def run_child(argv: list[str]) -> None:
    _die_with_parent()
    # Ctrl-C in a terminal reaches the whole process group: the worker drains, it decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ[CHILD_VAR] = "1"
    from .entrypoint import _new_loop

    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(main(int(argv[0])))
    # Once the worker is gone, leave at once: a handler thread may still be running.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

