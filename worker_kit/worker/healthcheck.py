"""`python -m worker_kit.worker.healthcheck`: the worker image's HEALTHCHECK.

The worker is the container's PID 1, so while the container runs the worker runs; what can go
wrong unseen is the way to its queue service (a wrong WORKER_KIT_URL, a network cut, the
service down), during which the worker only retries. This check asks the service's open
liveness route (`GET /health` at the root of WORKER_KIT_URL, no key needed) and exits 0 when it
answers, else 1 with one line saying why, which `docker inspect` shows.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 5.0


def service_root(endpoint_url: str) -> str:
    """http://queue:8000/v2/my-endpoint -> http://queue:8000"""
    root, sep, _ = endpoint_url.rstrip("/").partition("/v2/")
    return root if sep else endpoint_url.rstrip("/")


def check(endpoint_url: str | None) -> tuple[bool, str]:
    if not endpoint_url:
        return False, "WORKER_KIT_URL is not set"
    url = service_root(endpoint_url) + "/health"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
            body = json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url} unreachable: {exc}"
    if body.get("status") != "ok":
        return False, f"{url} answered {body!r}"
    return True, f"{url} ok"


def main() -> int:
    ok, message = check(os.environ.get("WORKER_KIT_URL"))
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
