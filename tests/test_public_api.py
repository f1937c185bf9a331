import subprocess
import sys

import worker_kit


def test_every_public_name_resolves():
    for name in worker_kit.__all__:
        assert getattr(worker_kit, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    try:
        worker_kit.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_loads_no_network_stack():
    # A worker's cold start pays only for what it uses: `import worker_kit` must stay light.
    code = "import sys, worker_kit; print(sorted(m for m in ('aiohttp', 'msgpack') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


#: The public names, pinned: removing or renaming one breaks users, so it must be a deliberate
#: change here and a note in the README, never a side effect of a refactor.
PUBLIC = {
    "__version__", "handler", "start", "Job", "JobState", "Endpoint", "AsyncEndpoint", "Field",
    "WorkerKitError", "ServiceError", "ServiceUnavailable", "AuthError", "RateLimited", "PayloadTooLarge",
    "JobError", "JobFailed", "JobTimedOut", "JobCancelled", "JobNotFound",
}  # fmt: skip
CLIENT_PUBLIC = {
    "SIGNATURE_HEADER", "AsyncEndpoint", "AsyncJobHandle", "Endpoint", "JobHandle", "NotFound", "WaitTimeout",
    "result_of", "sign_webhook", "verify_webhook",
}  # fmt: skip


def test_the_public_names_are_pinned():
    assert set(worker_kit.__all__) == PUBLIC


def test_the_client_public_names_are_pinned():
    import worker_kit.client as client

    assert set(client.__all__) == CLIENT_PUBLIC
    for name in client.__all__:
        assert getattr(client, name) is not None, name


def test_an_embedding_program_imports_the_worker_from_one_place():
    # docs/worker.md, "Running a worker in your own program" (the runtime's modules moved into
    # worker_kit/worker/; these names stay importable from the package).
    from worker_kit.worker import Job, JobInterrupted, Worker, get_handler
    from worker_kit.worker.execution import Job as JobClass
    from worker_kit.worker.loop import Worker as WorkerClass

    assert Worker is WorkerClass and Job is JobClass
    assert callable(get_handler) and issubclass(JobInterrupted, BaseException)
