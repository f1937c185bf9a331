"""Encode once: large worker reports keep each payload's own bytes (worker_kit.packed), small ones
are packed once; either way what is stored is what the worker sent."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from worker_kit.packed import Packed, unpack_keeping_payloads
from worker_kit.protocol import pack, unpack

BIG = "x" * 70_000


@pytest.mark.parametrize(
    "body",
    [
        {"token": "t", "state": "COMPLETED", "output": {"text": BIG, "n": [1, 2.5, None, b"\x00"]}},
        {"token": "t", "items": [{"seq": 0, "kind": "chunk", "data": BIG}, {"seq": 1, "kind": "progress",
                                                                             "data": {"p": 1}}]},
        {"worker_id": "w", "max": 2, "finish": [
            {"id": "a", "token": "t", "state": "COMPLETED", "output": BIG,
             "items": [{"seq": 0, "kind": "chunk", "data": [BIG]}]},
            {"id": "b", "token": "u", "state": "FAILED", "error": "e"},
        ]},
    ],
)
def test_the_walk_decodes_like_unpack_and_keeps_each_payloads_bytes(body: dict[str, Any]) -> None:
    data = pack(body)
    value, payloads = unpack_keeping_payloads(data)
    assert value == unpack(data)
    holders = [value, *value.get("items", []), *value.get("finish", [])]
    holders += [item for f in value.get("finish", []) for item in f.get("items", [])]
    kept = 0
    for holder in holders:
        for key in ("output", "data"):
            if key in holder:
                raw = payloads.get(holder, key)
                assert isinstance(raw, Packed) and unpack(raw) == holder[key]
                assert pack(raw) is raw  # protocol.pack hands it on as it is
                kept += 1
    assert kept >= 1


def test_a_malformed_body_raises_for_the_plain_decode_to_explain() -> None:
    data = pack({"token": "t", "output": BIG})
    with pytest.raises(Exception):  # noqa: B017 - any msgpack error; the caller falls back
        unpack_keeping_payloads(data[:-10])
    with pytest.raises(ValueError):
        unpack_keeping_payloads(data + msgpack.packb(1))


def test_plain_bytes_are_never_taken_for_packed() -> None:
    assert unpack(pack(b"\x93\x01\x02\x03")) == b"\x93\x01\x02\x03"


@pytest.mark.parametrize("count", [100, 70_000])  # array 16 and array 32 headers
def test_many_small_entries_are_decoded_whole_and_packed_once_more(count: int) -> None:
    # A token stream's report: thousands of tiny items. Walking each costs more than packing
    # its few bytes again, so the list is decoded in one call and keeps no payload bytes; the
    # route then packs each item's data once, to the same bytes pack() makes.
    from worker_kit.protocol.reports import OutputRequest

    items = [{"seq": i, "kind": "chunk", "data": f"tok{i} " if i % 3 else {"i": i}} for i in range(count)]
    body = {"token": "t", "items": items, "pad": BIG}  # over the size from which bodies are walked
    value, payloads = unpack_keeping_payloads(pack(body))
    assert value == body and not payloads
    decoded = OutputRequest.decode(value, payloads).items
    assert [(i.seq, i.kind, bytes(i.data)) for i in decoded] == [
        (i["seq"], "chunk", pack(i["data"])) for i in items
    ]
    assert all(type(i.data) is Packed for i in decoded)


@pytest.mark.parametrize("items_first", [False, True])
def test_a_finish_keeps_its_result_bytes_and_decodes_its_many_small_items(items_first: bool) -> None:
    # A streamed job's finish: its aggregate result is kept as sent, and the thousands of
    # trailing items it carries (decoded whole, whether the large result comes before or
    # after them in the body) each get their data packed once.
    from worker_kit.protocol.reports import FinishReport

    items = [{"seq": i, "kind": "chunk", "data": f"tok{i} "} for i in range(500)]
    result = [BIG] * 10  # far more bytes than the items: they are measured by their own size
    body: dict[str, Any] = {"id": "j", "token": "t", "state": "COMPLETED", "output": result, "items": items}
    if items_first:
        body = {"items": body.pop("items"), **body}
    value, payloads = unpack_keeping_payloads(pack(body))
    assert value == body and payloads.get(value, "output") == pack(result)
    assert not any(payloads.get(item, "data") for item in value["items"])  # not walked one by one
    report = FinishReport.decode(value, payloads)
    assert report.final.output == pack(result)
    assert [(i.seq, bytes(i.data)) for i in report.items] == [(i["seq"], pack(i["data"])) for i in items]
