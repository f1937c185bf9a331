import base64
import json

import pytest

from worker_kit import protocol


def test_msgpack_keeps_bytes_and_json_base64_encodes_them():
    value = {"blob": b"\x00\xff", "text": "héllo", "n": [1, 2]}
    assert protocol.decode(protocol.encode(value, protocol.MSGPACK), protocol.MSGPACK) == value
    as_json = json.loads(protocol.encode(value, protocol.JSON))
    assert base64.b64decode(as_json["blob"]) == b"\x00\xff"
    assert as_json["text"] == "héllo"


@pytest.mark.parametrize(
    "body, content_type, reason",
    [
        (b"", protocol.JSON, "empty"),
        (b"{not json", protocol.JSON, "not valid JSON"),
        (b"\xff\xfe", None, "not valid JSON"),
        (b"\xc1", protocol.MSGPACK, "not valid msgpack"),
    ],
)
def test_decode_explains_bad_bodies(body, content_type, reason):
    with pytest.raises(ValueError, match=reason):
        protocol.decode(body, content_type)


def test_json_refuses_values_it_cannot_represent():
    with pytest.raises(TypeError, match="not JSON serializable"):
        protocol.dumps_json({"x": object()})


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"a":1}', {"a": 1}),
        (b' {"a": [1, 2.5, null]}\n', {"a": [1, 2.5, None]}),  # whitespace around: the usual way
        (b'{"a":"\\ud83d\\ude00 \\u00e9"}', {"a": "\U0001f600 é"}),
        ('{"é":1}'.encode("utf-16"), {"é": 1}),
    ],
)
def test_json_bodies_decode_with_or_without_whitespace_around(body, expected):
    assert protocol.decode(body, protocol.JSON) == expected


@pytest.mark.parametrize(
    "body, reason",
    [
        (b'{"a":1}x', "Extra data"),
        (b'{"a":1} {}', "Extra data"),
        (b'{"a":', "Expecting value"),
        (b'{"n": 123456789012345678901234567890}', "does not fit in 64 bits"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_bad_json_bodies_say_what_is_wrong(body, reason):
    with pytest.raises(ValueError, match=reason):
        protocol.decode(body, protocol.JSON)


def test_json_answers_are_what_the_plain_encoder_writes():
    """dumps_json uses a C encoder made once; its text is the standard encoder's, byte for byte,
    and what only the lenient path can write (bytes keys, NaN) still comes out the same."""
    strict = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=lambda v: list(v))
    values = [{"id": "x", "status": "IN_QUEUE", "delayTime": 3}, {"t": "é\u2028\"\\", "n": [1, 2.5, None]},
              {"nested": {"a": {"b": []}}, "tuple": (1, 2)}, {}]  # fmt: skip
    for value in values:
        assert protocol.dumps_json(value) == strict.encode(value)
    assert protocol.dumps_json({b"k": float("nan"), "i": float("inf")}) == '{"aw==":null,"i":null}'


def test_a_value_that_refers_to_itself_is_a_value_error():
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="nested too deeply"):
        protocol.dumps_json(loop)
