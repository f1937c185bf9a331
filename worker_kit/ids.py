"""The alphabets of endpoint ids and job ids, enforced by the service, its config and the harness.

Ids appear in URL paths (`/v2/{endpoint_id}/status/{job_id}`), logs, metric labels and storage
keys, so they are plain ASCII with no separators and no dot-only names (`.` and `..` would read
as path segments to every proxy and URL library in between).
"""

from __future__ import annotations

import re

__all__ = [
    "ENDPOINT_ID_PATTERN",
    "ENDPOINT_ID_RULE",
    "JOB_ID_PATTERN",
    "JOB_ID_RULE",
    "valid_endpoint_id",
    "valid_job_id",
]

#: 1-128 characters: letters, digits, '-', '_' and '.', starting with a letter or a digit.
ENDPOINT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ENDPOINT_ID_RULE = (
    "endpoint ids are 1-128 characters: letters, digits, '-', '_' or '.', starting with a letter or digit"
)
#: 1-128 characters: letters, digits, '-' and '_'. The service makes them (32 hex digits).
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
JOB_ID_RULE = "job ids are 1-128 characters: letters, digits, '-' or '_'"

_ENDPOINT_ID = re.compile(ENDPOINT_ID_PATTERN.strip("^$"))
_JOB_ID = re.compile(JOB_ID_PATTERN.strip("^$"))


def valid_endpoint_id(endpoint_id: str) -> bool:
    return _ENDPOINT_ID.fullmatch(endpoint_id) is not None


def valid_job_id(job_id: str) -> bool:
    return _JOB_ID.fullmatch(job_id) is not None
