"""docs/deploy.md: its Compose file and Kubernetes manifests cannot run here (no docker engine,
no cluster), so this checks what can be checked: the YAML parses, its `worker-kit serve`
arguments are ones `serve` accepts, its worker settings are ones the runtime reads, every
stop grace is longer than the drain it must cover, and Redis is configured to persist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from worker_kit.cli import build_parser
from worker_kit.worker.settings import load_settings

yaml = pytest.importorskip("yaml")

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(DOC.read_text()) if kind == lang]


def test_every_block_says_why_it_cannot_run_here() -> None:
    text = DOC.read_text()
    for match in re.finditer(r"```\w+\n", text):
        before = text[: match.start()].rstrip().splitlines()[-1]
        assert before.startswith("<!-- docs-test: skip ("), f"unmarked block at {match.group()!r}"


def _seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def _serve_args(args: list[str]) -> Any:
    parsed = build_parser().parse_args(["serve", *args])
    assert parsed.storage.startswith("redis://") and parsed.host == "0.0.0.0"
    return parsed


def test_the_compose_file() -> None:
    [compose] = [yaml.safe_load(b) for b in blocks("yaml") if "services:" in b]
    services = compose["services"]
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--appendfsync always" in redis_cmd
    assert "--maxmemory-policy noeviction" in redis_cmd
    replicas = [name for name, svc in services.items() if svc.get("image") == "worker-kit-service"]
    assert len(replicas) == 2
    for name in replicas:
        _serve_args(services[name]["command"])
    nginx = blocks("nginx")[0]
    assert all(f"server {name}:8000;" in nginx for name in replicas)
    worker = services["worker"]
    env = worker["environment"]
    settings = load_settings(env=env, argv=[])
    assert settings.url.startswith("http://lb:8000/v2/")
    assert _seconds(worker["stop_grace_period"]) > settings.grace_s


def test_the_kubernetes_manifests() -> None:
    docs = [d for b in blocks("yaml") if "apiVersion" in b for d in yaml.safe_load_all(b)]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    queue = deployments["worker-kit-queue"]["spec"]["template"]["spec"]
    _serve_args(queue["containers"][0]["args"])
    assert queue["terminationGracePeriodSeconds"] > 10  # shutdown_timeout_s's default
    workers = deployments["my-endpoint-workers"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", "a-worker-key-from-a-secret") for e in workers["containers"][0]["env"]}
    settings = load_settings(env=env, argv=[])
    assert workers["terminationGracePeriodSeconds"] > settings.grace_s
    services = [d for d in docs if d["kind"] == "Service"]
    labels = deployments["worker-kit-queue"]["spec"]["selector"]["matchLabels"]
    assert services[0]["spec"]["selector"] == labels


def test_the_commands_in_the_text_exist() -> None:
    text = DOC.read_text()
    for command in re.findall(r"`(worker-kit [^`]+)`", text):
        argv = shlex.split(command)[1:]
        if argv[0] == "serve" and len(argv) == 1:
            continue
        build_parser().parse_args(argv)  # exits (fails the test) on an unknown command or flag
