"""Notification channel names: what a waiter listens on, and what each change publishes.

Which operation publishes which channel is decided in rules.py.
"""

from __future__ import annotations


def queue_channel(endpoint: str) -> str:
    """Published when a job of `endpoint` becomes claimable."""
    return f"q:{endpoint}"


def job_channel(job_id: str) -> str:
    """Published on any change of a job: state, progress or new stream chunks."""
    return f"j:{job_id}"


def worker_channel(endpoint: str, worker_id: str) -> str:
    """Published when a job held by this worker must stop (cancelled, timed out)."""
    return f"w:{endpoint}:{worker_id}"
