"""A handler file that calls worker_kit.start() at its top level, unguarded, with an
undecorated function (as the hosted SDK's examples do), isolated by WORKER_KIT_ISOLATION."""

import os

import worker_kit


def pid(job):
    return {"pid": os.getpid(), "echo": job.input}


worker_kit.start(handler=pid)
