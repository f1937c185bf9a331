"""Values kept in their msgpack form, so that a payload is encoded once on its way into storage.

A worker's result or stream chunk arrives packed (msgpack bodies) or as JSON. The service used
to decode it, pack it again to measure it, and the storage backend packed it a third time.
Now the service measures the bytes it has and hands them on as `Packed`; `protocol.pack()`
returns a `Packed` as it is, so a backend stores those very bytes.
"""

from __future__ import annotations

from typing import Any

import msgpack

#: Bodies smaller than this are decoded in one C call and their few payload bytes packed once
#: more; larger ones are walked to keep each payload's own bytes (no re-encoding at all).
SLICE_FROM_BYTES = 64 * 1024
#: Keys whose values are payloads (a finish's result, an output item's data), and keys whose
#: values are lists of maps that hold such payloads (exchange finishes, output items).
PAYLOAD_KEYS = frozenset({"output", "data"})
LIST_KEYS = frozenset({"finish", "items"})

#: A list whose entries average fewer bytes than this is decoded whole, not walked (its own
#: bytes, measured: a finish's items are many and small even when its result is large).
SMALL_ENTRY_BYTES = 1024
#: Map lead bytes of the msgpack format: fixmap, map 16, map 32; and arrays likewise.
_MAP = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
_ARRAY = frozenset(range(0x90, 0xA0)) | {0xDC, 0xDD}


class Packed(bytes):
    """The msgpack encoding of a value, already made."""


class Payloads:
    """The packed bytes of payload values of a decoded body, by the map that holds them."""

    def __init__(self) -> None:
        self._by_map: dict[int, dict[str, Packed]] = {}

    def add(self, holder: dict[str, Any], key: str, raw: bytes) -> None:
        self._by_map.setdefault(id(holder), {})[key] = Packed(raw)

    def __bool__(self) -> bool:
        return bool(self._by_map)

    def get(self, holder: dict[str, Any], key: str) -> Packed | None:
        kept = self._by_map.get(id(holder))
        return None if kept is None else kept.get(key)

    def holding(self, key: str) -> set[int]:
        """The ids of the maps whose `key` was kept (to test thousands of maps at set speed)."""
        return {holder for holder, kept in self._by_map.items() if key in kept}


def unpack_keeping_payloads(data: bytes) -> tuple[Any, Payloads]:
    """Decode a msgpack worker report and keep the exact bytes of each payload in it.

    Raises whatever msgpack raises for a malformed body (the caller falls back to a plain decode
    for its error message)."""
    payloads = Payloads()
    unpacker = _unpacker(data)
    value = _value(unpacker, data, payloads, walk=True)
    if unpacker.tell() != len(data):
        raise ValueError("extra bytes after the body")
    return value, payloads


def _unpacker(data: bytes) -> msgpack.Unpacker:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1024))
    unpacker.feed(data)
    return unpacker


def _value(u: msgpack.Unpacker, data: bytes, payloads: Payloads, walk: bool) -> Any:
    lead = data[u.tell()] if u.tell() < len(data) else None
    if walk and lead in _MAP:
        holder: dict[Any, Any] = {}
        for _ in range(u.read_map_header()):
            key = u.unpack()
            if key in PAYLOAD_KEYS:
                start = u.tell()
                holder[key] = u.unpack()
                payloads.add(holder, key, data[start : u.tell()])
            elif key in LIST_KEYS and u.tell() < len(data) and data[u.tell()] in _ARRAY:
                start = u.tell()
                u.skip()  # measured first (a C-level pass), then decoded one way or the other
                part = data[start : u.tell()]
                if _array_len(part) * SMALL_ENTRY_BYTES > len(part):
                    # Many small entries (a token stream's output items): one C-level decode;
                    # packing their small payloads again costs less than walking each entry.
                    holder[key] = msgpack.unpackb(part, raw=False, strict_map_key=False)
                else:
                    sub = _unpacker(part)
                    entries = sub.read_array_header()
                    holder[key] = [_value(sub, part, payloads, walk=True) for _ in range(entries)]
            else:
                holder[key] = u.unpack()
        return holder
    return u.unpack()


def _array_len(data: bytes) -> int:
    """The length of the msgpack array that `data` holds, from its header."""
    lead = data[0]
    if lead <= 0x9F:
        return lead & 0x0F
    width = 2 if lead == 0xDC else 4
    return int.from_bytes(data[1 : 1 + width], "big")
