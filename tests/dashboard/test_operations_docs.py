"""docs/operations.md keeps its promises: the manifests and rules parse, the Grafana dashboard is
valid JSON, and every worker_kit metric they query exists in a real /metrics answer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ROOT

DOC = ROOT / "docs" / "operations.md"
GRAFANA = ROOT / "docs" / "grafana" / "worker-kit-dashboard.json"
METRIC = re.compile(r"\b(worker_kit_[a-z_]+|process_[a-z_]+)\b")


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def yaml_documents() -> list[dict[str, Any]]:
    return [doc for block in fenced(DOC.read_text(), "yaml") for doc in yaml.safe_load_all(block) if doc]


async def exposed_names(service: Any, session: Any) -> set[str]:
    """Every sample name a service exposes once a job has run (a labelled family with no sample
    yet counts with its conventional sample names)."""
    base = service.endpoint_url("ep")
    async with session.post(base + "/run", json={"input": 1}) as resp:
        job_id = (await resp.json())["id"]
    claim = {"worker_id": "w", "max": 1, "wait_ms": 1000}
    async with session.post(base + "/worker/claim", json=claim) as resp:
        [job] = (await resp.json())["jobs"]
    async with session.post(
        f"{base}/worker/jobs/{job_id}/finish", json={"token": job["token"], "state": "FAILED", "error": "x"}
    ) as resp:
        assert resp.status == 200
    async with session.get(service.url + "/metrics") as resp:
        text = await resp.text()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
    return names


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def test_manifests_parse_and_scale_on_demand() -> None:
    docs = yaml_documents()
    kinds = [d.get("kind") for d in docs]
    assert kinds.count("ScaledObject") == 2 and "Deployment" in kinds and "TriggerAuthentication" in kinds
    triggers = [t for d in docs if d.get("kind") == "ScaledObject" for t in d["spec"]["triggers"]]
    assert {t["type"] for t in triggers} == {"metrics-api", "prometheus"}
    api = next(t for t in triggers if t["type"] == "metrics-api")
    assert api["metadata"]["valueLocation"] == "desiredWorkers"
    assert api["metadata"]["url"].endswith("/scaling")
    for scaled in (d for d in docs if d.get("kind") == "ScaledObject"):
        assert scaled["spec"]["minReplicaCount"] == 0
    deployment = next(d for d in docs if d.get("kind") == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert pod["terminationGracePeriodSeconds"] > int(env["WORKER_KIT_GRACE"])


async def test_rules_and_dashboard_query_metrics_that_exist(service: Any, session: Any) -> None:
    names = await exposed_names(service, session)
    rules = next(d for d in yaml_documents() if "groups" in d)
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert {"WorkerKitQueueGrowing", "WorkerKitNoLiveWorkers", "WorkerKitFailureRatio",
            "WorkerKitWebhookFailures"} <= set(alerts)  # fmt: skip
    queries = list(alerts.values())
    queries += [
        t["metadata"]["query"]
        for d in yaml_documents()
        if d.get("kind") == "ScaledObject"
        for t in d["spec"]["triggers"]
        if t["type"] == "prometheus"
    ]
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["title"] and dashboard["panels"]
    queries += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set().union(*(metric_names(q) for q in queries))
    assert len(used) >= 12
    assert used - names == set(), "queried metrics that /metrics does not expose"


def test_metric_table_lists_what_metrics_exposes() -> None:
    table = {
        name
        for line in DOC.read_text().splitlines()
        if line.startswith("| `worker_kit_")
        for name in re.findall(r"`(worker_kit_[a-z_]+)`", line.split("|")[1])
    }
    assert {"worker_kit_jobs_submitted_total", "worker_kit_job_delay_seconds",
            "worker_kit_http_request_duration_seconds", "worker_kit_desired_workers"} <= table  # fmt: skip
    assert Path(GRAFANA).is_file()
