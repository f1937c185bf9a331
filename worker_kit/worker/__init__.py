"""The worker runtime: what runs inside a worker's container.

- `registry`: the `@worker_kit.handler` decorator and the handler's declared settings;
- `settings`: the worker's settings from `WORKER_KIT_*` variables and flags, and its exit codes;
- `entrypoint`: `worker_kit.start()`, which reads the settings and runs the loop;
- `loop`: the `Worker`: claims jobs, runs them, drains on SIGTERM;
- `execution`: one job's run: the handler-facing `Job`, timeouts, cancels, generators;
- `reporting`: a job's output, progress and result on their way to the service;
- `leases`: the heartbeat loop that renews leases and carries stop signals;
- `transport`: the native worker protocol over HTTP.

Nothing is imported here, so `import worker_kit.worker.registry` stays cheap.
"""
