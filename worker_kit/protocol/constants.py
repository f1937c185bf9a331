"""The worker wire's routes, version and limits: what both sides must agree on."""

from __future__ import annotations

API_PREFIX = "/v2/{endpoint_id}"
# Native worker routes, relative to the endpoint's base URL (…/v2/{endpoint_id}).
WORKER_CLAIM = "/worker/claim"
WORKER_HEARTBEAT = "/worker/heartbeat"
WORKER_OUTPUT = "/worker/jobs/{job_id}/output"
WORKER_FINISH = "/worker/jobs/{job_id}/finish"
WORKER_RELEASE = "/worker/jobs/{job_id}/release"
#: Protocol 2: finishes and the next claim in one request (docs/protocol.md).
WORKER_EXCHANGE = "/worker/exchange"
#: The native protocol's version, stated in /worker/exchange answers. 1: claim, heartbeat,
#: output, finish, release. 2 adds /worker/exchange, stop entries that name their token, and
#: no stop entry for a job its own token already finished.
PROTOCOL_VERSION = 2

#: The longest a claim or heartbeat long-poll is held by the service.
MAX_POLL_MS = 60_000
DEFAULT_CLAIM_WAIT_MS = 30_000
DEFAULT_LEASE_MS = 30_000
#: Stop reasons sent on the control channel (heartbeat replies).
STOP_CANCELLED = "CANCELLED"
STOP_TIMED_OUT = "TIMED_OUT"
STOP_LOST = "LOST"  # the lease is gone (expired and requeued, or unknown job)
STOP_REASONS = (STOP_CANCELLED, STOP_TIMED_OUT, STOP_LOST)

#: The most jobs one claim hands out, and the most finishes one exchange carries.
MAX_CLAIM = 100
MAX_FINISHES = MAX_CLAIM
#: Bounds a worker's stated concurrency and running counts (storage keeps them as 64-bit integers).
MAX_SLOTS = 1_000_000
#: The longest worker id or lease token a body may carry.
MAX_FIELD_CHARS = 256
#: The widest integer a body may carry (msgpack's unsigned 64 bits; codecs._json_int).
MAX_WIRE_INT = 2**64 - 1
#: Bytes an output or finish body may carry beyond the endpoint's result limit (its items,
#: the envelope): the worker keeps its item batches under this (worker/transport.py).
REPORT_OVERHEAD = 4 * 1024 * 1024
