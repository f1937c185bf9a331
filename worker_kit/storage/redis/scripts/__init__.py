"""The Lua scripts of the Redis backend: each state change of a job is one script, so it is atomic.

Every script works on the keys of ONE endpoint: KEYS[1] is the endpoint's key base
`PREFIX:{ENDPOINT}:` (keys.py), whose hash tag puts them all in one Redis Cluster slot, and
job keys are built from it. Time (`now`, epoch seconds) always comes from the caller's clock.

The rules are storage/rules.py's. Where a rule must be checked inside the script to be
atomic (a token check, the sequence check, what a retry or requeue clears), the script
mirrors it and the state sets and field lists are generated from rules.py and job.py (prelude.py),
so there is one definition. Scripts answer facts and status words ('OK', 'NOTFOUND',
'STALE', 'GAP', 'CONFLICT'); the backend turns those into the rules' errors and messages.

Every endpoint script is run as PRELUDE + its text (backend.py); the modules hold them by concern.
"""

from __future__ import annotations

from .coordination import HOOK_DONE, HOOK_LATER, LEAD, RESIGN, TAKE_HOOKS
from .jobs import CANCEL, CLAIM, CLAIM_SCAN_SLACK, FINISH, HEARTBEAT, RELEASE, RETRY, SUBMIT
from .listing import LIST
from .maintenance import PURGE, SET_RETENTION, SWEEP_APPLY, SWEEP_COLLECT, SWEEP_EXPIRE
from .prelude import EXPIRY_SLACK_MS, PRELUDE
from .stream import APPEND, READ_STREAM

__all__ = ["APPEND", "CANCEL", "CLAIM", "CLAIM_SCAN_SLACK", "EXPIRY_SLACK_MS", "FINISH", "HEARTBEAT",
           "HOOK_DONE", "HOOK_LATER", "LEAD", "LIST", "PRELUDE", "PURGE", "READ_STREAM", "RELEASE", "RESIGN",
           "RETRY", "SET_RETENTION", "SUBMIT", "SWEEP_APPLY", "SWEEP_COLLECT", "SWEEP_EXPIRE", "TAKE_HOOKS"]
