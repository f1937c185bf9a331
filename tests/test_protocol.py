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
