"""Gets stuck in C on demand, so the worker must replace itself; timeout 1 s.

input {"do": "sleep"}: one time.sleep(60) call; {"do": "pbkdf2"}: a long busy loop in C
(hashlib releases the GIL, so the event loop stays live); {"do": "grow", "mb": N}: keep N MB
in a module global; anything else returns this process's pid and how much it holds.
"""

import hashlib
import os
import time

import worker_kit

hoard = []


@worker_kit.handler(timeout=1)
def stuck(job):
    do = job.input.get("do")
    if do == "sleep":
        time.sleep(60)
    elif do == "pbkdf2":
        hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 10**9)
    elif do == "grow":
        hoard.append(b"\x01" * (job.input["mb"] * 1024 * 1024))  # touched pages: real RSS
    return {"pid": os.getpid(), "held_mb": sum(len(b) for b in hoard) // (1024 * 1024)}


if __name__ == "__main__":
    worker_kit.start()
