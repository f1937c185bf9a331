"""A CPU-bound synchronous handler.

Plain `def` handlers run in a worker thread, off the event loop, so heartbeats and
cancel signals keep flowing while the CPU is busy.

    python examples/cpu_bound.py --test-input '{"input": {"limit": 50000}}'
"""

import worker_kit


@worker_kit.handler(timeout=120)
def count_primes(job):
    limit = int(job.input.get("limit", 10_000))
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"[: min(2, limit + 1)]
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit + 1, n)))
    primes = sum(sieve)
    return {"limit": limit, "primes": primes}


if __name__ == "__main__":  # so tests can import the handler without starting a worker
    worker_kit.start()
