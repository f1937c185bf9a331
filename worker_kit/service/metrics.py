"""Counters kept in memory and their Prometheus text rendering for GET /metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.submitted: Counter[str] = Counter()
        self.ended: Counter[tuple[str, str]] = Counter()
        self.sweeps = 0
        self.sweep_errors = 0
        self.requeued = 0
        self.deleted = 0

    def request(self, route: str, method: str, status: int) -> None:
        self.requests[(route, method, status)] += 1

    def job_submitted(self, endpoint: str) -> None:
        self.submitted[endpoint] += 1

    def job_ended(self, endpoint: str, state: str) -> None:
        self.ended[(endpoint, state)] += 1

    def render(
        self,
        job_counts: dict[str, dict[str, int]],
        workers: dict[str, tuple[int, int]],
        webhooks: dict[str, int],
        rate_limited: int,
        uptime_s: float,
    ) -> str:
        """Prometheus text exposition format 0.0.4."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {value:g}" for labels, value in samples)

        family(
            "worker_kit_jobs",
            "gauge",
            "Jobs stored, by endpoint and state.",
            (
                (_labels(endpoint=ep, state=state), n)
                for ep, counts in sorted(job_counts.items())
                for state, n in sorted(counts.items())
                if state != "retried"
            ),
        )
        family(
            "worker_kit_jobs_retried",
            "gauge",
            "Stored jobs that were requeued by /retry or after a lost lease.",
            ((_labels(endpoint=ep), counts.get("retried", 0)) for ep, counts in sorted(job_counts.items())),
        )
        family(
            "worker_kit_workers",
            "gauge",
            "Workers seen recently, by endpoint and activity.",
            (
                s
                for ep, (idle, running) in sorted(workers.items())
                for s in (
                    (_labels(endpoint=ep, state="idle"), idle),
                    (_labels(endpoint=ep, state="running"), running),
                )
            ),
        )
        family(
            "worker_kit_jobs_submitted_total",
            "counter",
            "Jobs submitted through /run and /runsync.",
            ((_labels(endpoint=ep), n) for ep, n in sorted(self.submitted.items())),
        )
        family(
            "worker_kit_jobs_ended_total",
            "counter",
            "Jobs that reached a terminal state in this process.",
            ((_labels(endpoint=ep, state=st), n) for (ep, st), n in sorted(self.ended.items())),
        )
        family(
            "worker_kit_http_requests_total",
            "counter",
            "HTTP requests answered, by route, method and status.",
            (
                (_labels(route=r, method=m, status=str(s)), n)
                for (r, m, s), n in sorted(self.requests.items())
            ),
        )
        family(
            "worker_kit_rate_limited_total",
            "counter",
            "Requests refused by a rate or concurrency limit.",
            (("", rate_limited),),
        )
        family(
            "worker_kit_webhooks",
            "gauge",
            "Webhook deliveries by outcome (delivered, failed, pending).",
            ((_labels(outcome=k), v) for k, v in sorted(webhooks.items())),
        )
        family("worker_kit_sweeps_total", "counter", "Background sweeps run.", (("", self.sweeps),))
        family(
            "worker_kit_sweep_errors_total",
            "counter",
            "Background sweeps that failed.",
            (("", self.sweep_errors),),
        )
        family(
            "worker_kit_leases_expired_requeued_total",
            "counter",
            "Jobs requeued after their lease expired.",
            (("", self.requeued),),
        )
        family(
            "worker_kit_jobs_deleted_total",
            "counter",
            "Job records deleted after their retention.",
            (("", self.deleted),),
        )
        family("worker_kit_uptime_seconds", "gauge", "Seconds since the service started.", (("", uptime_s),))
        return "\n".join(out) + "\n"
