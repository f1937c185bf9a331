"""The handler registry: `@worker_kit.handler` records a frozen `Handler` and returns the
function unchanged, so a handler stays a plain function a user can unit-test.

This module is imported by `import worker_kit; @worker_kit.handler`, so it imports nothing
heavy: the runtime (its HTTP client, msgpack) loads only when a worker starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

from ..errors import ConfigError

#: A fixed number of concurrent jobs, or `f(current) -> int` consulted as jobs finish.
Concurrency = int | Callable[[int], int]


@dataclass(frozen=True, slots=True)
class Handler:
    """A handler function and the options it was registered with."""

    fn: Callable[..., Any]
    name: str
    #: Default execution timeout in seconds (the job's own policy wins when it sets one).
    timeout: float | None = None
    #: Jobs run at once by one worker (the worker's settings win when they set one).
    concurrency: Concurrency | None = None
    #: Checked by `worker_kit.validation.validate` before the handler runs.
    input_schema: Any = None
    #: A streaming handler's final output is the list of every item it yielded. None (the
    #: default): yes, unless that list is over the result limit, then the output is left empty;
    #: True: always (a list over the limit fails the job); False: never (chunks only on /stream).
    return_aggregate_stream: bool | None = None
    #: "process": run in a supervised child process (the worker's WORKER_KIT_ISOLATION wins).
    isolation: str | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigError(f"handler {self.name!r} is not callable: {self.fn!r}")
        if self.timeout is not None and (
            isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float) or self.timeout <= 0
        ):
            raise ConfigError(f"handler {self.name!r}: timeout must be a positive number of seconds")
        c = self.concurrency
        if c is not None and not callable(c) and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise ConfigError(f"handler {self.name!r}: concurrency must be an int >= 1 or a callable")
        if self.return_aggregate_stream is not None and not isinstance(self.return_aggregate_stream, bool):
            raise ConfigError(f"handler {self.name!r}: return_aggregate_stream must be True, False or None")
        if self.isolation not in (None, "thread", "process"):
            raise ConfigError(f"handler {self.name!r}: isolation must be 'thread' or 'process', "
                              f"got {self.isolation!r}")


def _default_name(fn: Callable[..., Any]) -> str:
    inner: Any = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    name = getattr(inner, "__name__", None)
    return name if isinstance(name, str) else type(inner).__name__


class Registry:
    """Handlers by name. The module-level `default_registry` is what `@handler` fills."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(self, entry: Handler) -> Handler:
        existing = self._handlers.get(entry.name)
        if existing is not None and not _same_function(existing.fn, entry.fn):
            raise ConfigError(
                f"two handlers are named {entry.name!r}; give one another name with @handler(name=...)"
            )
        self._handlers[entry.name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def clear(self) -> None:
        self._handlers.clear()

    def get(self, name_or_fn: str | Callable[..., Any] | Handler | None = None) -> Handler:
        if isinstance(name_or_fn, Handler):
            return name_or_fn
        if name_or_fn is None:
            if len(self._handlers) == 1:
                return next(iter(self._handlers.values()))
            if not self._handlers:
                raise ConfigError(
                    "no handler registered: decorate a function with @worker_kit.handler "
                    "or pass it as worker_kit.start(handler=fn)"
                )
            raise ConfigError(
                f"several handlers are registered ({', '.join(self.names())}): "
                "choose one with worker_kit.start(handler=...)"
            )
        if isinstance(name_or_fn, str):
            try:
                return self._handlers[name_or_fn]
            except KeyError:
                known = ", ".join(self.names()) or "none"
                raise ConfigError(f"no handler named {name_or_fn!r} (registered: {known})") from None
        if not callable(name_or_fn):
            raise ConfigError(f"a handler must be callable, got {type(name_or_fn).__name__}")
        for entry in self._handlers.values():
            if entry.fn is name_or_fn:
                return entry
        # An undecorated function passed to start(handler=fn): default options.
        return Handler(fn=name_or_fn, name=_default_name(name_or_fn))


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    # A file both imported and run as __main__ (`worker-kit work`) registers a second
    # function object with the same qualified name; that is not a clash.
    if a is b:
        return True
    qa, qb = getattr(a, "__qualname__", None), getattr(b, "__qualname__", None)
    if qa is None or qa != qb:
        return False
    ma, mb = getattr(a, "__module__", None), getattr(b, "__module__", None)
    return ma == mb or "__main__" in (ma, mb)


default_registry = Registry()


@overload
def handler(fn: Callable[..., Any], /) -> Callable[..., Any]: ...


@overload
def handler(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    concurrency: Concurrency | None = None,
    input_schema: Any = None,
    return_aggregate_stream: bool | None = None,
    isolation: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


def handler(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    concurrency: Concurrency | None = None,
    input_schema: Any = None,
    return_aggregate_stream: bool | None = None,
    isolation: str | None = None,
) -> Any:
    """Register a job handler: `@handler` or `@handler(name=..., timeout=30, ...)`.

    The handler receives a `worker_kit.Job` and may be a plain function, a coroutine
    function, a generator or an async generator (each yielded item is streamed, and the list of
    them is the job's output; see `Handler.return_aggregate_stream`). `timeout` is in seconds.
    `isolation="process"` runs it in a supervised child process that is replaced when it
    crashes, hangs or grows too big (docs/worker.md). The function is returned unchanged.
    """

    schema = input_schema
    if schema is not None:
        from ..validation import compile_schema

        schema = compile_schema(schema)  # a malformed schema fails here, not on every job

    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        default_registry.add(
            Handler(
                fn=f,
                name=name or _default_name(f),
                timeout=timeout,
                concurrency=concurrency,
                input_schema=schema,
                return_aggregate_stream=return_aggregate_stream,
                isolation=isolation,
            )
        )
        return f

    if fn is not None:
        return register(fn)
    return register


def get_handler(name_or_fn: str | Callable[..., Any] | Handler | None = None) -> Handler:
    """The registered handler: the only one, the one named, or the one wrapping `fn`.

    A callable that was never registered gets a Handler with default options.
    Raises ConfigError when none or several are registered and none is named.
    """
    return default_registry.get(name_or_fn)
