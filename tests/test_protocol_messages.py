"""The worker wire's message types (worker_kit.protocol): one definition read by the service,
built by the runtime, and described by /openapi.json.

The schema of each request is generated from the fields its decoder reads, so the document cannot
drift from what the routes accept; these tests show that it does not: the keys a decoder reads are
exactly the schema's properties, the required ones are refused when absent, every integer bound
the decoder enforces is the schema's, and what the runtime packs is what the service decodes.
"""

from __future__ import annotations

from typing import Any

import pytest

from worker_kit import protocol
from worker_kit.job import MAX_SEQ, JobRecord, JobState, Policy
from worker_kit.packed import Packed
from worker_kit.protocol import (
    ApiError,
    ClaimAnswer,
    ClaimedJob,
    ClaimRequest,
    ExchangeRequest,
    Final,
    FinishAnswer,
    FinishReport,
    HeartbeatAnswer,
    HeartbeatRequest,
    HostedJob,
    HostedReport,
    OutputAnswer,
    OutputItem,
    OutputRequest,
    ReleaseRequest,
    StopList,
    StopSignal,
    pack_item,
    unpack,
)
from worker_kit.protocol.fields import Int
from worker_kit.protocol.status import StatusAnswer
from worker_kit.service.openapi import openapi_spec

SCHEMAS = openapi_spec()["components"]["schemas"]


class Reading(dict):  # type: ignore[type-arg]
    """A body that records which keys its reader asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[Any] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(key)
        return super().__contains__(key)


def _finish_body() -> dict[str, Any]:
    return {"token": "t", "state": "FAILED", "output": None, "error": "boom",
            "error_detail": {"type": "E"}, "items": [{"seq": 0, "kind": "chunk", "data": "x"}]}  # fmt: skip


#: (schema name, decoder, a valid body holding every field)
REQUESTS = [
    ("ClaimRequest", ClaimRequest.decode, {"worker_id": "w", "max": 2, "wait_ms": 10, "concurrency": 3}),
    ("ExchangeRequest", ExchangeRequest.decode,
     {"worker_id": "w", "finish": [], "max": 0, "wait_ms": 0, "concurrency": 1}),
    ("HeartbeatRequest", HeartbeatRequest.decode,
     {"worker_id": "w", "jobs": {"j": "t"}, "wait_ms": 0, "concurrency": 1, "running": 0}),
    ("OutputRequest", OutputRequest.decode,
     {"token": "t", "items": [{"seq": 0, "kind": "progress", "data": 1}]}),
    ("FinishRequest", FinishReport.decode, _finish_body()),
    ("ReleaseRequest", ReleaseRequest.decode, {"token": "t"}),
]  # fmt: skip
IDS = [name for name, _, _ in REQUESTS]


@pytest.mark.parametrize("name, decode, body", REQUESTS, ids=IDS)
def test_a_decoder_reads_exactly_the_fields_its_schema_declares(name: str, decode: Any, body: dict) -> None:
    reading = Reading(body)
    decode(reading)
    declared = set(SCHEMAS[name]["properties"])
    assert set(body) == declared, "the test body should hold every field"
    if name == "FinishRequest":
        # A Reading is not a plain dict, so the finish counts it unstorable (worker_kit.portable)
        # and stops before its payloads; that they are read shows in the decoded report.
        assert reading.asked == declared - {"output", "items"}
        report = decode({**body, "output": [1]})
        assert unpack(report.final.output) == [1] and len(report.items) == 1
    else:
        assert reading.asked == declared, name


@pytest.mark.parametrize("name, decode, body", REQUESTS, ids=IDS)
def test_required_fields_are_the_ones_a_decoder_refuses_to_miss(name: str, decode: Any, body: dict) -> None:
    required = set(SCHEMAS[name].get("required", []))
    for key in body:
        missing = {k: v for k, v in body.items() if k != key}
        if key in required:
            with pytest.raises(ApiError) as caught:
                decode(missing)
            assert caught.value.status == 400 and key in caught.value.message, (name, key)
        else:
            decode(missing)  # optional: absent is fine


WITH_INTEGERS = [ClaimRequest, ExchangeRequest, HeartbeatRequest]


@pytest.mark.parametrize("message", WITH_INTEGERS, ids=lambda m: m.__name__)
def test_integer_bounds_are_the_same_in_the_decoder_and_the_schema(message: Any) -> None:
    schema = SCHEMAS[message.__name__]
    for field in message.FIELDS:
        if not isinstance(field, Int):
            continue
        prop = schema["properties"][field.name]
        low, high = prop["minimum"], prop["maximum"]
        assert field.read({field.name: low}) is not None or field.default is None
        field.read({field.name: high})  # the schema's bounds are accepted (a cap lowers, never refuses)
        with pytest.raises(ApiError, match=field.name):
            field.read({field.name: low - 1})
        if high < protocol.MAX_WIRE_INT:
            with pytest.raises(ApiError, match=field.name):
                field.read({field.name: high + 1})
        with pytest.raises(ApiError, match=f"{field.name} must be an integer"):
            field.read({field.name: "1"})


def test_the_served_document_holds_the_generated_schemas() -> None:
    assert SCHEMAS["ClaimRequest"]["properties"]["max"]["maximum"] == protocol.MAX_CLAIM
    assert SCHEMAS["FinishRequest"]["properties"]["state"] == {"enum": ["COMPLETED", "FAILED", "TIMED_OUT"]}
    assert SCHEMAS["ClaimedJob"] == ClaimedJob.schema()
    paths = openapi_spec()["paths"]
    claim = paths["/v2/{endpoint_id}/worker/claim"]["post"]
    assert claim["responses"]["200"]["content"]["application/msgpack"]["schema"] == {
        "$ref": "#/components/schemas/ClaimAnswer"
    }


# -- what the runtime builds is what the service reads ---------------------------------------------


@pytest.mark.parametrize("seq", [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, MAX_SEQ])
def test_a_packed_item_is_the_msgpack_of_its_map(seq: int) -> None:
    # pack_item splices constant parts and a seq packed by hand (one item per streamed token):
    # the bytes are exactly what msgpack makes of the map.
    for kind, data in (("chunk", "tok"), ("progress", {"p": 1})):
        expected = protocol.pack({"seq": seq, "kind": kind, "data": data})
        assert pack_item(seq, kind, protocol.pack(data)) == expected


def test_output_items_decode_as_from_wire_says() -> None:
    # Well-formed items take a tight loop (one per streamed token); the result is what
    # from_wire makes of each, and a malformed one is refused with from_wire's reason.
    raw = [{"seq": 0, "kind": "chunk", "data": "tok"}, {"seq": 1, "kind": "progress", "data": {"p": [1]}},
           {"seq": 2, "kind": "chunk"}, {"seq": 3.0, "kind": "chunk", "data": b"\x00"},
           {"seq": 4, "kind": "chunk", "data": None}, {"seq": 5, "kind": "chunk", "data": 1.5}]  # fmt: skip
    got = OutputRequest.decode({"token": "t", "items": raw}).items
    want = [OutputItem.from_wire(item, protocol.pack(item.get("data"))) for item in raw]
    assert [(i.seq, i.kind, bytes(i.data)) for i in got] == [(i.seq, i.kind, bytes(i.data)) for i in want]
    assert all(type(i.data) is Packed for i in got)
    for bad in ({"seq": True, "kind": "chunk"}, {"seq": -1, "kind": "chunk"}, {"seq": 0, "kind": "log"}, "x"):
        with pytest.raises(ApiError) as refused:
            OutputRequest.decode({"token": "t", "items": [raw[0], bad]})
        with pytest.raises(ValueError) as reason:
            OutputItem.from_wire(bad)
        assert refused.value.status == 400 and str(reason.value) in str(refused.value)


def test_a_finish_the_runtime_packs_decodes_to_the_same_report() -> None:
    items = [pack_item(4, "chunk", protocol.pack("tok")), pack_item(5, "progress", protocol.pack({"p": 1}))]
    final = Final(JobState.FAILED, protocol.pack([1, 2]), "it broke", {"type": "ValueError"})
    body = unpack(FinishReport("tok", final, items, id="job1").pack())
    assert body["id"] == "job1"
    report = FinishReport.decode(body)
    assert report.token == "tok" and report.final.state is JobState.FAILED
    assert unpack(report.final.output) == [1, 2] and report.final.error == "it broke"
    assert report.final.error_detail == {"type": "ValueError"}
    got = [(i.seq, i.kind, unpack(i.data)) for i in report.items]
    assert got == [(4, "chunk", "tok"), (5, "progress", {"p": 1})]
    assert all(type(i.data) is Packed for i in report.items)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65535, 65536])
def test_the_requests_the_runtime_packs_are_the_msgpack_of_their_maps(n: int) -> None:
    # Maps, arrays, field names and the small ints and strs of a request are packed by hand (one
    # exchange and one finish per job): the bytes are exactly what msgpack makes of the map.
    finish = [protocol.pack({"i": i}) for i in range(n)]
    for value in (0, 127, 128, 255, 256, 65535, 65536, 2**32):
        expected = {"worker_id": f"w-é-{value}", "finish": [{"i": i} for i in range(n)], "max": n,
                    "wait_ms": value, "concurrency": value}
        assert ExchangeRequest(f"w-é-{value}", finish, n, value, value).pack() == protocol.pack(expected)
    assert ExchangeRequest("w", [], 1, 0).pack() == protocol.pack({"worker_id": "w", "finish": [], "max": 1,
                                                                   "wait_ms": 0})
    items = [pack_item(i, "chunk", protocol.pack("tok")) for i in range(n % 40)]
    final = Final(JobState.FAILED, protocol.pack([1, n]), "it broke " * n, {"type": "ValueError"})
    expected = {"id": "j" * n, "token": "tok", "state": "FAILED", "output": [1, n], "error": "it broke " * n,
                "error_detail": {"type": "ValueError"}, "items": [unpack(i) for i in items]}
    if not items:
        del expected["items"]
    assert FinishReport("tok", final, items, id="j" * n).pack() == protocol.pack(expected)
    done = {"token": "tok", "state": "COMPLETED"}
    assert FinishReport("tok", Final(JobState.COMPLETED), []).pack() == protocol.pack(done)
    sent = {"token": "t", "items": [unpack(i) for i in items]}
    assert OutputRequest("t", items).pack() == protocol.pack(sent)


def test_a_finish_without_an_error_message_gets_one() -> None:
    report = FinishReport.decode({"token": "t", "state": "TIMED_OUT"})
    assert report.final.error == "the worker reported TIMED_OUT without an error message"


def test_an_unstorable_finish_is_read_but_marked() -> None:
    report = FinishReport.decode({"token": "t", "state": "COMPLETED", "output": "\ud800"})
    assert report.unstorable and "surrogate" in report.unstorable
    assert report.final.output is None and report.items == []


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"token": "t", "state": "CANCELLED"}, "must be COMPLETED, FAILED or TIMED_OUT, not 'CANCELLED'"),
        ({"token": "t", "state": "FAILED", "error": 3}, "error must be a string"),
        ({"token": "t", "state": "FAILED", "error_detail": "x"}, "error_detail must be an object"),
        ({"token": "t", "state": "COMPLETED", "items": {}}, "items must be a list"),
        ({"token": "t", "state": "COMPLETED", "items": [{"seq": -1, "kind": "x"}]}, "seq must be an integer"),
        ({"token": "", "state": "COMPLETED"}, "token must be a non-empty string"),
    ],
)
def test_a_malformed_finish_is_refused_with_its_reason(body: dict, reason: str) -> None:
    with pytest.raises(ApiError) as caught:
        FinishReport.decode(body)
    assert caught.value.status == 400 and reason in caught.value.message


def test_a_chunk_over_the_cap_is_refused_naming_its_seq() -> None:
    big = "x" * (1024 * 1024)
    with pytest.raises(ApiError) as caught:
        OutputRequest.decode({"token": "t", "items": [{"seq": 7, "kind": "chunk", "data": big}]})
    assert caught.value.status == 413 and "seq 7" in caught.value.message
    assert caught.value.fields == {"limit": 1024 * 1024}
    # progress is not a chunk: no cap of its own (the body's limit bounds it)
    OutputRequest.decode({"token": "t", "items": [{"seq": 7, "kind": "progress", "data": big}]})


def test_the_other_requests_round_trip() -> None:
    assert ClaimRequest.decode(unpack(ClaimRequest("w", 3, 100, 4).pack())) == ClaimRequest("w", 3, 100, 4)
    beat = HeartbeatRequest("w", {"a": "t"}, 10, 2, 1)
    assert HeartbeatRequest.decode(unpack(beat.pack())) == beat
    packed = [FinishReport("t", Final(JobState.COMPLETED), [], id="a").pack()]
    exchange = ExchangeRequest.decode(unpack(ExchangeRequest("w", packed, 1, 0, 2).pack()))
    assert exchange.worker_id == "w" and exchange.max == 1 and exchange.concurrency == 2
    assert FinishReport.decode(exchange.finish[0]).final.state is JobState.COMPLETED
    sent = OutputRequest("t", [pack_item(0, "chunk", protocol.pack(b"\x00"))])
    out = OutputRequest.decode(unpack(sent.pack()))
    assert out.items == [OutputItem(0, "chunk", protocol.pack(b"\x00"))]
    assert ReleaseRequest.decode(unpack(ReleaseRequest("t").pack())) == ReleaseRequest("t")


def test_wait_ms_above_the_poll_cap_is_lowered_not_refused() -> None:
    assert ClaimRequest.decode({"worker_id": "w", "wait_ms": 10**12}).wait_ms == protocol.MAX_POLL_MS
    assert ExchangeRequest.decode({"worker_id": "w", "max": None}).max == 0  # null means absent


def test_a_claimed_job_goes_out_and_comes_back_the_same() -> None:
    record = JobRecord(id="j1", endpoint="ep", input={"x": 1}, policy=Policy(execution_timeout_ms=5000),
                       webhook="http://h/", token="tok", attempt=2, created_at=1000.0,
                       started_at=1000.0)  # fmt: skip
    wire = ClaimedJob.encode_record(record, now=1001.0)
    assert set(wire) <= set(SCHEMAS["ClaimedJob"]["properties"])
    assert set(SCHEMAS["ClaimedJob"]["required"]) <= set(wire)
    assert wire["deadline_ms"] == 4000
    answer = ClaimAnswer.decode({**ClaimAnswer.encode(30_000, 1234), "jobs": [wire, {"id": "no token"}]})
    policy = {"executionTimeout": 5000, "ttl": Policy().ttl_ms}
    assert answer.jobs == [ClaimedJob("j1", "tok", {"x": 1}, 2, policy, 4000, "http://h/", 1234)]
    assert answer.lease_ms == 30_000


def test_answers_hold_what_their_schema_requires() -> None:
    claim = {**ClaimAnswer.encode(1, 2), "jobs": []}
    exchange = {**ClaimAnswer.encode(1, 2, [{"id": "a", "status": "COMPLETED"}]), "jobs": []}
    beat = HeartbeatAnswer.encode([StopSignal("a", protocol.STOP_CANCELLED)], {"a": "t"}, 30_000)
    output, finish = OutputAnswer.encode(3), FinishAnswer.encode("a", JobState.FAILED, "unstorable")
    answers = [("ClaimAnswer", claim), ("ExchangeAnswer", exchange), ("HeartbeatAnswer", beat),
               ("OutputAnswer", output), ("FinishAnswer", finish)]  # fmt: skip
    for name, body in answers:
        schema = SCHEMAS[name]
        assert set(schema["required"]) <= set(body) <= set(schema["properties"]), name
    stops, lease_ms = HeartbeatAnswer.decode(beat)
    assert stops == [StopSignal("a", "CANCELLED", "t")] and lease_ms == 30_000
    assert OutputAnswer.decode(output) == 3 and OutputAnswer.decode({}) == 0


# -- the hosted service's worker protocol ----------------------------------------------------------


def test_a_hosted_report_reads_exactly_its_schema_fields() -> None:
    reading = Reading({"output": 1, "error": None, "status": "IN_PROGRESS"})
    report = HostedReport.decode(reading)
    assert reading.asked == set(SCHEMAS["HostedReport"]["properties"])
    assert report.is_progress and report.output == 1
    for body in (HostedReport.chunk("c"), HostedReport.failure("e"), HostedReport.progress({"p": 1})):
        assert set(body) <= set(SCHEMAS["HostedReport"]["properties"])


def test_a_hosted_job_goes_out_and_comes_back_as_a_claimed_job() -> None:
    record = JobRecord(id="j1", endpoint="ep", input=[1], webhook="http://h/")
    wire = HostedJob.encode_record(record)
    assert set(SCHEMAS["HostedJob"]["required"]) <= set(wire) <= set(SCHEMAS["HostedJob"]["properties"])
    jobs = HostedJob.decode_take([wire, {"id": "no input"}])
    assert [job.claimed() for job in jobs] == [ClaimedJob("j1", "j1", [1], webhook="http://h/")]
    assert HostedJob.decode_take(wire)[0].id == "j1"  # job-take answers one job, not a list


def test_a_stop_list_keeps_only_job_ids() -> None:
    assert StopList.decode(StopList.encode(["a", "b"])) == ["a", "b"]
    assert StopList.decode({"jobsToStop": ["a", 3, None]}) == ["a"]
    assert StopList.decode(None) == [] and StopList.decode({"jobsToStop": "a"}) == []


# -- the status answer -------------------------------------------------------------------------------


def _statuses() -> list[dict[str, Any]]:
    running = JobRecord(id="a", endpoint="ep", input=1, state=JobState.IN_PROGRESS, started_at=1.0,
                        progress={"pct": 5}, worker_id="w", created_at=0.5)  # fmt: skip
    failed = JobRecord(id="b", endpoint="ep", input=1, state=JobState.FAILED, started_at=1.0, finished_at=2.0,
                       error="boom", error_detail={"type": "E", "message": "boom"}, retries=2, worker_id="w",
                       created_at=0.5)  # fmt: skip
    done = JobRecord(id="c", endpoint="ep", input=1, state=JobState.COMPLETED, output=[1], started_at=1.0,
                     finished_at=2.0, created_at=0.5)  # fmt: skip
    queued = JobRecord(id="q", endpoint="ep", input=1)
    return [StatusAnswer.encode(job) for job in (queued, running, failed, done)]


def test_every_status_answer_is_what_its_schema_says() -> None:
    validator = pytest.importorskip("jsonschema_rs").Draft202012Validator(
        {"$ref": "#/components/schemas/Status", "components": openapi_spec()["components"]}
    )
    seen: set[str] = set()
    for status in _statuses():
        assert not [str(e) for e in validator.iter_errors(status)], status
        seen |= set(status)
    assert seen == set(SCHEMAS["Status"]["properties"]), "every declared field is one some state answers"


def test_the_hosted_query_parameters_are_the_ones_the_service_reads() -> None:
    from urllib.parse import parse_qs

    from worker_kit.protocol import hosted

    assert parse_qs(hosted.take_query(True, 4)[1:]) == {"batch_size": ["4"], "job_in_progress": ["1"]}
    assert parse_qs(hosted.take_query(False)[1:]) == {"job_in_progress": ["0"]}
    ping = parse_qs(hosted.ping_query(["a", "b"])[1:])
    assert hosted.listed_jobs(ping[hosted.JOB_IDS][0]) == ["a", "b"] and hosted.ping_query([]) == ""
    assert parse_qs(hosted.hold_query(500)[1:]) == {hosted.WAIT_MS: ["500"]}
    assert hosted.report_query(True) == "&isStream=true"
    paths = openapi_spec()["paths"]
    names = {p["name"] for op in paths.values() for m in op.values() for p in m.get("parameters", [])}
    assert {hosted.BATCH_SIZE, hosted.JOB_IDS, hosted.WAIT_MS} <= names


def test_the_protocol_sits_below_both_sides() -> None:
    # The service and the runtime import the wire's definition; it imports neither of them, nor
    # aiohttp (a worker loads its HTTP stack only when its transport opens).
    import subprocess
    import sys

    code = (
        "import sys, worker_kit.protocol, worker_kit.protocol.hosted, worker_kit.protocol.status\n"
        "parts = {'service', 'worker', 'storage', 'client', 'cli', 'harness'}\n"
        "ours = [m for m in sys.modules if m.startswith('worker_kit.') and m.split('.')[1] in parts]\n"
        "print(sorted(ours + [m for m in sys.modules if m == 'aiohttp']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unpack_all_is_unpack_of_each() -> None:
    values = ["tok", b"\x00\xff", {"k": [1, 2.5, None]}, 2**63, "é€😀", [], {}]
    blobs = [protocol.pack(v) for v in values]
    assert protocol.unpack_all(blobs) == values == [protocol.unpack(b) for b in blobs]
    assert protocol.unpack_all(blobs[:1]) == values[:1] and protocol.unpack_all([]) == []
    with pytest.raises(Exception):  # noqa: B017 - msgpack's own error for a cut value, as unpack raises
        protocol.unpack_all([blobs[0], blobs[2][:-1]])
