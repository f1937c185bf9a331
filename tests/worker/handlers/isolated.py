"""A handler run in a child process (isolation="process"), timeout 1 s, that can crash on
demand. Module-level set-up appends this process's pid to ./setup.log (once per process).

input {"do": ...}: "segv" reads address 0; "exit" calls os._exit(7); "oom" is killed with
SIGKILL as the kernel's OOM killer would; "grow" allocates 20 MB every 0.05 s for ever;
"hold" keeps input["mb"] MB in a module global;
"sleep" is one time.sleep(60) (stuck in C); "regex" is a catastrophic regex (C code that
holds the GIL); "stream" yields input["n"] items with progress; "progress" reports progress, then waits in
short Python steps until it is stopped; else returns its pid.
"""

import ctypes
import os
import re
import signal
import time

import worker_kit

with open("setup.log", "a") as f:
    f.write(f"{os.getpid()}\n")

held = []


@worker_kit.handler(isolation="process", timeout=1)
def isolated(job):
    do = job.input.get("do")
    if do == "segv":
        ctypes.string_at(0)
    elif do == "exit":
        os._exit(7)
    elif do == "oom":
        os.kill(os.getpid(), signal.SIGKILL)
    elif do == "grow":
        hoard = []
        while True:
            hoard.append(b"\x01" * (20 * 1024 * 1024))
            time.sleep(0.05)
    elif do == "hold":
        held.append(b"\x01" * (job.input["mb"] * 1024 * 1024))
    elif do == "sleep":
        time.sleep(60)
    elif do == "regex":
        re.match(r"(a+)+$", "a" * 40 + "b")
    elif do == "stream":
        return streamer(job)
    elif do == "progress":
        job.progress({"step": 1})
        while True:
            time.sleep(0.02)
    return {"pid": os.getpid(), "held_mb": sum(len(b) for b in held) // (1024 * 1024)}


def streamer(job):
    for i in range(job.input["n"]):
        job.progress({"done": i})
        yield {"i": i, "pid": os.getpid()}


if __name__ == "__main__":
    worker_kit.start()
