"""The client routes' wire (worker_kit.protocol.submit and .answers), in the style of
tests/test_protocol_messages.py. The submit body (`POST /run`, `/runsync`) is a message type whose
/openapi.json schema is generated from the fields its decoder reads; these tests show the two cannot
drift: the keys the decoder reads are the schema's properties, the policy's known keys are exactly
the schema's, every bound the decoder enforces is the schema's, and what a client encodes is what the
service decodes. Each client answer holds exactly what its generated schema says.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_protocol_messages import Reading
from worker_kit.job import DEFAULT_EXECUTION_TIMEOUT_MS, DEFAULT_TTL_MS, Policy
from worker_kit.protocol import ApiError
from worker_kit.protocol.submit import MAX_POLICY_MS, POLICY_FIELDS, SubmitRequest, decode_policy
from worker_kit.service.openapi import openapi_spec

SCHEMAS = openapi_spec()["components"]["schemas"]
DEFAULTS = (600_000, 86_400_000)  # an endpoint's executionTimeout and ttl


def decode(body: dict[str, Any]) -> SubmitRequest:
    return SubmitRequest.decode(body, *DEFAULTS)


def test_the_decoder_reads_exactly_the_fields_its_schema_declares() -> None:
    policy = Reading({"executionTimeout": 1000, "ttl": 2000, "lowPriority": False})
    body = Reading({"input": {"prompt": "hi"}, "webhook": "https://example.com/h", "policy": policy})
    decode(body)
    assert body.asked == set(SCHEMAS["SubmitRequest"]["properties"]) == set(body)
    assert policy.asked == set(SCHEMAS["Policy"]["properties"]) == set(policy)


def test_required_fields_are_the_ones_the_decoder_refuses_to_miss() -> None:
    body = {"input": 1, "webhook": "http://h/", "policy": {"ttl": 5}}
    assert SCHEMAS["SubmitRequest"]["required"] == ["input"]
    with pytest.raises(ApiError, match='the body must hold "input"') as caught:
        decode({k: v for k, v in body.items() if k != "input"})
    assert caught.value.status == 400
    decode({"input": None})  # a null input is an input; the rest may be absent or null
    assert decode({"input": 1, "webhook": None, "policy": None}) == SubmitRequest(1, Policy(*DEFAULTS, False))


def test_unknown_policy_fields_are_refused_as_the_schema_says() -> None:
    assert SCHEMAS["Policy"]["additionalProperties"] is False
    known = ", ".join(SCHEMAS["Policy"]["properties"])
    with pytest.raises(ApiError) as caught:
        decode({"input": 1, "policy": {"priority": 1, "a": 2}})
    assert caught.value.message == f"unknown policy field(s): a, priority (known: {known})"


@pytest.mark.parametrize("name", ["executionTimeout", "ttl"])
def test_policy_bounds_are_the_same_in_the_decoder_and_the_schema(name: str) -> None:
    prop = SCHEMAS["Policy"]["properties"][name]
    low, high = prop["minimum"], prop["maximum"]
    assert (low, high) == (1, MAX_POLICY_MS) and prop["type"] == "integer"
    for ok in (low, high, float(high)):  # a float holding a whole number is an integer
        decode({"input": 1, "policy": {name: ok}})
    for bad in (low - 1, high + 1, 1.5, "1000", True, None):
        with pytest.raises(ApiError) as caught:
            decode({"input": 1, "policy": {name: bad}})
        reason = f"policy.{name} must be a whole number of milliseconds between 1 and {MAX_POLICY_MS}"
        assert caught.value.status == 400 and caught.value.message == f"{reason}, not {bad!r}"


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"input": 1, "policy": "fast"}, "policy must be an object, not str"),
        ({"input": 1, "policy": {"lowPriority": 1}}, "policy.lowPriority must be true or false"),
        ({"input": 1, "webhook": 5}, "webhook must be an http(s) URL string, not 5"),
        ({"input": 1, "webhook": "ftp://h/x"}, "webhook must be an http:// or https:// URL with a host, not"),
        ({"input": 1, "webhook": "http:///x"}, "webhook must be an http:// or https:// URL with a host"),
        ({"input": 1, "webhook": "http://h/" + "x" * 2048}, "webhook must be an http:// or https:// URL"),
    ],
)
def test_a_malformed_submit_is_refused_with_its_reason(body: dict, reason: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode(body)
    assert caught.value.status == 400 and caught.value.message.startswith(reason)


def test_webhooks_the_schema_admits_are_taken() -> None:
    import re

    schema = SCHEMAS["SubmitRequest"]["properties"]["webhook"]
    for url in ("http://h", "HTTPS://example.com:8443/hook?x=1", "http://10.0.0.1/a/b"):
        assert re.match(schema["pattern"], url), url
        assert decode({"input": 1, "webhook": url}).webhook == url


def test_the_policy_rule_is_one_for_the_client_and_the_service() -> None:
    # Only a client's own executionTimeout counts as chosen, even when it equals the default.
    assert decode({"input": 1}).policy == Policy(*DEFAULTS, execution_timeout_explicit=False)
    chosen = decode({"input": 1, "policy": {"executionTimeout": DEFAULTS[0]}}).policy
    assert chosen.execution_timeout_explicit and chosen.to_wire() == {"executionTimeout": DEFAULTS[0],
                                                                      "ttl": DEFAULTS[1]}  # fmt: skip
    assert not decode({"input": 1, "policy": {"ttl": 5}}).policy.execution_timeout_explicit
    # What a client encodes, the service decodes to the same request.
    for policy in (None, Policy(1500, 60_000), Policy(DEFAULT_EXECUTION_TIMEOUT_MS, DEFAULT_TTL_MS, True)):
        sent = SubmitRequest({"x": [1]}, policy, "https://example.com/h")
        got = SubmitRequest.decode(sent.encode(), DEFAULT_EXECUTION_TIMEOUT_MS, DEFAULT_TTL_MS)
        assert got.input == sent.input and got.webhook == sent.webhook
        if policy is not None:
            assert got.policy == policy
    assert [f.name for f in POLICY_FIELDS] == list(SCHEMAS["Policy"]["properties"])


def test_a_policy_is_decoded_alone_as_in_a_body() -> None:
    assert decode_policy(None, *DEFAULTS) == Policy(*DEFAULTS, False)
    assert decode_policy({"ttl": 7}, *DEFAULTS) == Policy(DEFAULTS[0], 7, False)


# -- the client answers ----------------------------------------------------------------------------


def test_each_answer_holds_what_its_schema_requires_and_nothing_else() -> None:
    from worker_kit.job import JobState
    from worker_kit.protocol.answers import HealthAnswer, JobAnswer, LivenessAnswer, PurgeAnswer, StreamAnswer

    counts = {"IN_QUEUE": 2, "retried": 1, "COMPLETED": 5}
    answers = [
        ("Submitted", JobAnswer.encode("a", JobState.IN_QUEUE)),
        ("JobStatus", JobAnswer.encode("a", JobState.CANCELLED)),
        ("Stream", StreamAnswer.encode("a", JobState.IN_PROGRESS, ["tok", {"x": 1}], 2)),
        ("Purged", PurgeAnswer.encode(3)),
        ("Health", HealthAnswer.encode(counts, 1, 2, {"delivered": 4, "failed": 0, "pending": 1})),
        ("Liveness", LivenessAnswer.encode("1.0", 12.34567)),
    ]
    for name, body in answers:
        schema = SCHEMAS[name]
        assert set(schema["required"]) == set(body) == set(schema["properties"]), name
    health = answers[4][1]
    assert set(health["jobs"]) == set(SCHEMAS["Health"]["properties"]["jobs"]["required"])
    assert health["jobs"]["inQueue"] == 2 and health["jobs"]["retried"] == 1 and health["jobs"]["failed"] == 0
    assert SCHEMAS["Submitted"]["properties"]["status"] == {"const": "IN_QUEUE"}
    assert answers[2][1]["stream"] == [{"output": "tok"}, {"output": {"x": 1}}]
