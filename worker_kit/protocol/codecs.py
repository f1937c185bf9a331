"""Body codecs shared by the service, the worker runtime and the client: msgpack, and strict
JSON for anything a msgpack body may hold (docs/protocol.md, Basics)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import msgpack

from ..packed import Packed

MSGPACK = "application/msgpack"
JSON = "application/json"


def _json_default(value: Any) -> Any:
    # bytes have no JSON form; JSON clients receive them base64-encoded (docs/protocol.md).
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, msgpack.Timestamp):  # a msgpack body may carry one: seconds since the epoch
        return value.to_unix()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json_key(key: Any) -> Any:
    if key is None or isinstance(key, str | int | float | bool):
        return key
    value = _json_default(key)
    return value if isinstance(value, str | int | float) else dumps_json(value)


def _with_json_keys(value: Any) -> Any:
    """`value` with every map key JSON can hold (msgpack maps may have bytes keys) and every
    non-finite float as None."""
    if isinstance(value, dict):
        return {_json_key(k): _with_json_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_with_json_keys(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# Made once: json.dumps and json.loads build a new encoder or decoder on every call that
# passes options, which costs more than encoding or decoding a small body.
_STRICT_JSON = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=_json_default, allow_nan=False
)
_LENIENT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _one_shot_encoder() -> Any:
    """_STRICT_JSON's C encoder, made once: JSONEncoder.encode makes a new one on every call,
    which costs as much as encoding a small answer (about half of a `/status` answer's JSON).
    Without the circular-reference markers it keeps no state between calls; a cycle (which no
    decoded body can hold) ends in RecursionError, which dumps_json reports as a ValueError."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator: the plain encoder
        return None
    encode_text = json.encoder.encode_basestring  # ensure_ascii=False, as _STRICT_JSON
    return make(None, _json_default, encode_text, None, ":", ",", False, False, False)


_STRICT_C = _one_shot_encoder()


def dumps_json(value: Any) -> str:
    """Strict JSON for anything msgpack bodies decode to: bytes (as values or map keys) become
    base64, and NaN/Infinity (which workers may report) become null, as JavaScript's
    JSON.stringify writes them, so every answer parses with a strict JSON parser."""
    try:
        if _STRICT_C is not None and type(value) is dict:  # every answer: an object
            return "".join(_STRICT_C(value, 0))
        return _STRICT_JSON.encode(value)
    except (TypeError, ValueError):
        # Rare: a map key JSON cannot hold, or a non-finite number. Convert, and fail again
        # only on a value that has no JSON form at all.
        try:
            return _LENIENT_JSON.encode(_with_json_keys(value))
        except RecursionError:
            raise ValueError("the value is nested too deeply (or refers to itself) for JSON") from None
    except RecursionError:
        raise ValueError("the value is nested too deeply (or refers to itself) for JSON") from None


def pack(value: Any) -> bytes:
    """msgpack with bytes kept as bytes; raises TypeError for values it cannot represent.

    A `Packed` value is its own encoding already and is returned as it is (encode once)."""
    if type(value) is Packed:
        return value
    return msgpack.packb(value, use_bin_type=True)


def pack_text(text: str) -> bytes:
    """msgpack of a str, as pack() makes it, without building a Packer per call: a token
    stream packs one short str per token (in the worker, and again in the service)."""
    data = text.encode("utf-8")  # UnicodeEncodeError for a lone surrogate, as packb raises
    size = len(data)
    if size < 32:
        return bytes((0xA0 | size,)) + data
    if size < 256:
        return bytes((0xD9, size)) + data
    if size < 65536:
        return b"\xda" + size.to_bytes(2, "big") + data
    return b"\xdb" + size.to_bytes(4, "big") + data


def pack_scalar(value: Any) -> bytes:
    """pack() of a message's field, with the str and small int a worker's request is made of
    packed without a Packer per value (the same bytes)."""
    kind = type(value)
    if kind is str:
        return pack_text(value)
    if kind is int and 0 <= value < 65536:
        if value < 128:
            return bytes((value,))  # positive fixint
        return b"\xcc" + bytes((value,)) if value < 256 else b"\xcd" + value.to_bytes(2, "big")
    return pack(value)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def unpack_all(blobs: list[bytes]) -> list[Any]:
    """unpack() of each of `blobs` (each one whole msgpack value, as a store holds them), in one
    C-level pass over their join rather than a call each: a token stream reads thousands."""
    if len(blobs) < 2:
        return [unpack(blob) for blob in blobs]
    data = b"".join(blobs)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1024))
    unpacker.feed(data)
    values = list(unpacker)
    if len(values) != len(blobs):  # a blob that was not exactly one value: say which, as unpack would
        return [unpack(blob) for blob in blobs]
    return values


def encode(value: Any, content_type: str) -> bytes:
    if content_type == MSGPACK:
        return pack(value)
    return dumps_json(value).encode()


def decode(data: bytes, content_type: str | None) -> Any:
    """Decode a body by its content type: msgpack when it says so, else JSON.

    Raises ValueError with a readable reason for a body that does not parse.
    """
    if content_type == MSGPACK:
        try:
            return unpack(data)
        except Exception as exc:  # msgpack raises several unrelated types
            raise ValueError(f"body is not valid msgpack: {exc}") from None
    if not data:
        raise ValueError("body is empty; a JSON object was expected")
    try:
        if not isinstance(data, bytes | bytearray):
            return json.loads(data, parse_int=_json_int)
        # What json.loads does with bytes, with a decoder made once.
        # An object in UTF-8 (every client's) starts with "{" then a non-zero byte: no need to
        # look for a BOM or UTF-16/32 (json.detect_encoding) to know it.
        if data[:1] == b"{" and data[1:2] != b"\x00":
            encoding = "utf-8"
        else:
            encoding = json.detect_encoding(data)
        return _loads(data.decode(encoding, "surrogatepass"))
    except RecursionError:
        raise ValueError("body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and _json_int's refusals
        raise ValueError(f"body is not valid JSON: {exc}") from None


#: The integers msgpack can carry; a JSON body is refused up front for anything wider, since
#: every body is stored and sent on as msgpack.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _json_int(text: str) -> int:
    value = int(text)  # ValueError past Python's digit limit
    if not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"the integer {text[:24]}{'...' if len(text) > 24 else ''} does not fit in 64 bits")
    return value


_JSON_DECODER = json.JSONDecoder(parse_int=_json_int)
_SCAN = _JSON_DECODER.scan_once


def _loads(text: str) -> Any:
    """_JSON_DECODER.decode(text): its C scanner called straight, for a text that is one value
    with nothing around it (a client's body, nearly always); anything else (leading or trailing
    whitespace, or an error to report) goes the usual way, which says what is wrong."""
    try:
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return _JSON_DECODER.decode(text)
    return value if end == len(text) else _JSON_DECODER.decode(text)
