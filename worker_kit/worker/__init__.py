"""The worker runtime: what runs inside a worker's container.

- `registry`: the `@worker_kit.handler` decorator and the handler's declared settings;
- `settings`: the worker's settings from `WORKER_KIT_*` variables and flags, and its exit codes;
- `entrypoint`: `worker_kit.start()`, which reads the settings and runs the loop;
- `loop`: the `Worker`: claims jobs, drains on SIGTERM;
- `jobs`: each claimed job's life here: start, timeout, stop signals, result delivered;
- `handler_job`: the `Job` a handler receives, and `JobInterrupted`;
- `execution`: one job's run of the handler: its kinds, cancels, generators (`threads`: sync ones);
- `reporting`: a job's output, progress and result on their way to the service;
- `leases`: the heartbeat loop that renews leases and carries stop signals;
- `transport`: the native worker protocol over HTTP.

`Worker`, `Job` and `get_handler` are importable from here for programs that embed a worker
(docs/worker.md); they load on first use, so `import worker_kit.worker.registry` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Worker": "worker_kit.worker.loop",
    "Job": "worker_kit.worker.handler_job",
    "JobInterrupted": "worker_kit.worker.handler_job",
    "get_handler": "worker_kit.worker.registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'worker_kit.worker' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
