"""What a worker reports about a running job: output items, its finish, and a hand-back.

- `OutputItem`: one stream chunk or progress update, `{seq, kind, data}`;
- `OutputRequest`: `POST /worker/jobs/{id}/output`, `{token, items}`;
- `Final` and `FinishReport`: how a job ended, and the finish that carries it (the protocol-1
  finish route's body, and each entry of an exchange's `finish`);
- `ReleaseRequest`: `POST /worker/jobs/{id}/release`, `{token}`.

Payloads (a result, an item's data) travel packed: the worker packs each once, where it is made,
and splices the bytes into the report (`FinishReport.pack`, `pack_item`); the service keeps the
bytes a msgpack body brought (`decode_report`) and hands them to storage as they are.
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from ..job import MAX_CHUNK_BYTES, MAX_SEQ, WORKER_FINAL_STATES, JobState
from ..packed import SLICE_FROM_BYTES, Packed, Payloads, unpack_keeping_payloads
from ..portable import problem
from .codecs import MSGPACK, decode, pack, pack_scalar, pack_text
from .fields import PORTABLE_REF, Checked, Message, Out, Text, Value, object_schema
from .refusals import ApiError, check_chunk

ITEM_KINDS = ("chunk", "progress")
_FINAL_VALUES = tuple(s.value for s in JobState if s in WORKER_FINAL_STATES)


@dataclass(frozen=True, slots=True)
class OutputItem:
    """One ordered item a worker sends while a job runs: a stream chunk or a progress update."""

    seq: int
    kind: str  # "chunk" | "progress"
    data: Any

    def to_wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "data": self.data}

    @classmethod
    def from_wire(cls, item: Any, data: Any = None) -> OutputItem:
        """The item of a body; raises ValueError saying what is wrong. `data` stands in for the
        item's own (its packed form, when the caller has it)."""
        if not isinstance(item, dict):
            raise ValueError("an output item must be an object with seq, kind and data")
        seq, kind = item.get("seq"), item.get("kind")
        if isinstance(seq, float) and seq.is_integer():
            seq = int(seq)  # 3.0 is an integer to JSON Schema and to some encoders
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            raise ValueError(f"an output item's seq must be an integer from 0 to {MAX_SEQ}")
        if kind not in ITEM_KINDS:
            raise ValueError("an output item's kind must be 'chunk' or 'progress'")
        return cls(seq=seq, kind=kind, data=item.get("data") if data is None else data)

    @staticmethod
    def schema() -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["seq", "kind"],
            "properties": {
                "seq": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                "kind": {"enum": list(ITEM_KINDS)},
                "data": PORTABLE_REF,
            },
        }


#: The constant tail of an output item's msgpack map after its seq, by kind, made once: a
#: token stream packs one item per token.
_ITEM_KIND = {kind: b"\xa4kind" + pack(kind) + b"\xa4data" for kind in ITEM_KINDS}


#: An item's head up to its seq's value, for the 16- and 32-bit seqs of a long stream.
_HEAD16, _HEAD32 = struct.Struct(">6sH").pack, struct.Struct(">6sI").pack


def pack_item(seq: int, kind: str, packed_data: bytes) -> bytes:
    """One output item {"seq", "kind", "data"} with `data` packed beforehand (once, by the
    thread that produced it) so that retries and batching never re-encode it. A token stream
    packs one per token: a seq of 256 and more takes one struct call."""
    if 256 <= seq < 65536:
        head = _HEAD16(b"\x83\xa3seq\xcd", seq)
    elif 65536 <= seq < 2**32:
        head = _HEAD32(b"\x83\xa3seq\xce", seq)
    else:
        head = b"\x83\xa3seq" + _pack_seq(seq)
    return b"".join((head, _ITEM_KIND[kind], packed_data))


def _pack_seq(seq: int) -> bytes:
    """msgpack of a sequence number, as pack() makes it (the smallest unsigned form)."""
    if 0 <= seq < 128:
        return bytes((seq,))  # positive fixint
    if 0 <= seq < 65536:
        return b"\xcc" + seq.to_bytes(1, "big") if seq < 256 else b"\xcd" + seq.to_bytes(2, "big")
    return b"\xce" + seq.to_bytes(4, "big") if 0 <= seq < 2**32 else pack(seq)


def pack_map(fields: list[tuple[str, bytes]]) -> bytes:
    """A msgpack map of already packed values (a worker packs one per request and per finish)."""
    size = len(fields)
    head = bytes((0x80 | size,)) if size < 16 else msgpack.Packer().pack_map_header(size)
    keys = _KEYS
    return b"".join([head, *[part for key, value in fields for part in (keys.get(key) or _key(key), value)]])


_KEYS: dict[str, bytes] = {}  # packed field names


def _key(name: str) -> bytes:
    packed = pack_text(name)
    if len(_KEYS) < 64:
        _KEYS[name] = packed
    return packed


def pack_array(items: list[bytes]) -> bytes:
    """A msgpack array of already packed values."""
    size = len(items)
    head = bytes((0x90 | size,)) if size < 16 else msgpack.Packer().pack_array_header(size)
    return head + b"".join(items)


def decode_report(raw: bytes, content_type: str | None, what: str) -> tuple[dict[str, Any], Payloads]:
    """A worker report's body as an object, not yet checked for portability (a finish's result
    is checked by the route, which fails the job rather than refuse the report), with the
    packed bytes of its payloads when the body is large enough for that to pay (see packed.py)."""
    if content_type == MSGPACK and len(raw) >= SLICE_FROM_BYTES:
        try:
            body, payloads = unpack_keeping_payloads(raw)
        except Exception:  # malformed: the plain decode below says why
            pass
        else:
            if isinstance(body, dict):
                return body, payloads
    return decode_body(raw, content_type, what), Payloads()


def decode_body(raw: bytes, content_type: str | None, what: str) -> dict[str, Any]:
    """A body that must decode to an object; else 400 saying why."""
    try:
        body = decode(raw, content_type)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if not isinstance(body, dict):
        raise ApiError(400, f"{what} body must be an object, not {type(body).__name__}")
    return body


def packed_payload(holder: dict[str, Any], key: str, payloads: Payloads | None) -> Packed | None:
    """The msgpack form of holder[key], packed once here unless the body already had it."""
    value = holder.get(key)
    if value is None:
        return None
    found = payloads.get(holder, key) if payloads is not None else None
    return found if found is not None else Packed(pack(value))


_PACKED_NONE = Packed(pack(None))


def _packed_data(holder: Any, payloads: Payloads | None) -> Packed:
    if not isinstance(holder, dict):
        return _PACKED_NONE  # from_wire refuses it
    value = holder.get("data")
    if type(value) is str and not payloads:  # a streamed token: the common case, packed fast
        return Packed(pack_text(value))
    data = packed_payload(holder, "data", payloads)
    return data if data is not None else _PACKED_NONE


#: The msgpack head of each str shorter than 32 bytes (a fixstr): a token, the common chunk.
_FIXSTR_HEADS = [bytes((0xA0 | size,)) for size in range(32)]
_new_item = object.__new__
_DATA_OF = operator.attrgetter("data")
# OutputItem is frozen: its generated __init__ sets each field through object.__setattr__,
# which costs twice these slot setters; a token stream builds one item per token.
_set_seq, _set_kind, _set_data = OutputItem.seq.__set__, OutputItem.kind.__set__, OutputItem.data.__set__  # type: ignore[attr-defined]


def _plain_items(raw: list[Any], payloads: Payloads | None) -> list[OutputItem]:
    """The items of a body, each `data` packed here unless the body kept its bytes. A token
    stream reports one item per token, so the well-formed ones take this one tight loop; any
    other goes through from_wire, which says what is wrong with it."""
    items = []
    append = items.append
    kept = payloads.holding("data") if payloads else ()
    heads = _FIXSTR_HEADS
    for holder in raw:
        if type(holder) is dict and not (kept and id(holder) in kept):
            seq, kind, data = holder.get("seq"), holder.get("kind"), holder.get("data")
            if type(seq) is int and 0 <= seq <= MAX_SEQ and (kind == "chunk" or kind == "progress"):
                if type(data) is str:
                    text = data.encode("utf-8")  # UnicodeEncodeError for a lone surrogate, as pack_text
                    packed = Packed(heads[len(text)] + text) if len(text) < 32 else Packed(pack_text(data))
                else:
                    packed = _PACKED_NONE if data is None else Packed(pack(data))
                item = _new_item(OutputItem)
                _set_seq(item, seq)
                _set_kind(item, kind)
                _set_data(item, packed)
                append(item)
                continue
        append(OutputItem.from_wire(holder, _packed_data(holder, payloads)))
    return items


class Items:
    """A report's `items`: output items in order, each `data` in its packed form (measured once,
    stored as it is); a chunk over the 1 MB cap refuses the whole report (413)."""

    name = "items"
    required = False

    def read(self, body: dict[str, Any], payloads: Payloads | None = None) -> list[OutputItem]:
        raw = body.get(self.name)
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise ApiError(400, "items must be a list of {seq, kind, data}")
        try:
            items = _plain_items(raw, payloads)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        # One C-level pass over the sizes first: a token stream's items are all far under the cap.
        if items and max(map(len, map(_DATA_OF, items))) > MAX_CHUNK_BYTES:
            for item in items:
                if item.kind == "chunk":
                    check_chunk(len(item.data), item.seq)
        return items

    def schema(self) -> dict[str, Any]:
        return {"type": ["array", "null"], "items": {"$ref": "#/components/schemas/OutputItem"}}


_TOKEN = Text("token")
_ITEMS = Items()


class OutputRequest(Message):
    """`POST /worker/jobs/{id}/output`: ordered stream chunks and progress updates. `items`: each
    an OutputItem as the service reads it, or packed (pack_item) as a worker sends it."""

    __slots__ = ("items", "token")

    def __init__(self, token: str, items: list[Any]) -> None:
        self.token, self.items = token, items

    FIELDS: ClassVar = (_TOKEN, _ITEMS)

    @classmethod
    def decode(cls, body: dict[str, Any], payloads: Payloads | None = None) -> OutputRequest:
        return cls(_TOKEN.read(body), _ITEMS.read(body, payloads))

    def pack(self) -> bytes:
        return pack_map([("token", pack(self.token)), ("items", pack_array(self.items))])


class OutputAnswer:
    """The output route's answer: `{"next_seq"}`, the seq the service expects next."""

    FIELDS: ClassVar = (Out("next_seq", {"type": "integer", "minimum": 0}, required=True),)

    @staticmethod
    def encode(next_seq: int) -> dict[str, Any]:
        return {"next_seq": next_seq}

    @staticmethod
    def decode(reply: dict[str, Any]) -> int:
        next_seq = reply.get("next_seq", 0)
        return next_seq if isinstance(next_seq, int) else 0

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)


class ReleaseRequest(Message):
    """`POST /worker/jobs/{id}/release`: hand a running job back to the queue."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    FIELDS: ClassVar = (_TOKEN,)

    @classmethod
    def decode(cls, body: dict[str, Any]) -> ReleaseRequest:
        return cls(_TOKEN.read(body))

    def pack(self) -> bytes:
        return pack({"token": self.token})


@dataclass(slots=True)
class Final:
    """How a job ended, as its worker reports it; `output` is already packed (msgpack)."""

    state: JobState  # COMPLETED | FAILED | TIMED_OUT
    output: bytes | None = None
    error: str | None = None
    error_detail: dict[str, Any] | None = None


class _State:
    """A finish's `state`: one a worker may report."""

    name = "state"
    required = True

    def read(self, body: dict[str, Any]) -> JobState:
        value = body.get(self.name)
        if value not in _FINAL_VALUES:
            raise ApiError(400, f"state must be COMPLETED, FAILED or TIMED_OUT, not {value!r}")
        return JobState(value)

    def schema(self) -> dict[str, Any]:
        return {"enum": list(_FINAL_VALUES)}


_STATE = _State()
_ERROR = Checked("error", lambda v: isinstance(v, str),
                 "error must be a string (a one-line reason); put details in error_detail",
                 {"type": ["string", "null"]})  # fmt: skip
_DETAIL = Checked("error_detail", lambda v: isinstance(v, dict),
                  "error_detail must be an object {type, message, traceback}",
                  {"type": ["object", "null"], "additionalProperties": PORTABLE_REF})  # fmt: skip
_OUTPUT = Value("output", "the result; its msgpack form at most the endpoint's result_limit bytes")


class FinishReport(Message):
    """A job's finish, `{token, state, output?, error?, error_detail?, items?}` (with the job's `id`
    in an exchange): the trailing items are applied first, then the job ends. `items`: each an
    OutputItem as the service reads it, or packed (pack_item) as a worker sends it.
    `unstorable` says why the report's values can never be answered (worker_kit.portable): the
    service then ends the job FAILED saying so, and `items` and `final.output` are left empty."""

    __slots__ = ("final", "id", "items", "token", "unstorable")

    def __init__(
        self, token: str, final: Final, items: list[Any], id: str | None = None, unstorable: str | None = None
    ) -> None:
        self.token, self.final, self.items, self.id, self.unstorable = token, final, items, id, unstorable

    FIELDS: ClassVar = (_TOKEN, _STATE, _OUTPUT, _ERROR, _DETAIL, _ITEMS)

    @classmethod
    def decode(cls, body: dict[str, Any], payloads: Payloads | None = None) -> FinishReport:
        """Raises ApiError (400, or 413 for a chunk over the cap) for a malformed report."""
        token = _TOKEN.read(body)
        state = _STATE.read(body)
        error, detail = _ERROR.read(body), _DETAIL.read(body)
        if state is not JobState.COMPLETED and not error:
            error = f"the worker reported {state.value} without an error message"
        unstorable = problem(body, finite=False)
        if unstorable is not None:  # well formed, but its result could never be answered
            return cls(token, Final(state, None, error, detail), [], unstorable=unstorable)
        items = _ITEMS.read(body, payloads)
        # Packed once (or not at all, when the body brought it packed): measured and stored as is.
        return cls(token, Final(state, packed_payload(body, "output", payloads), error, detail), items)

    def pack(self) -> bytes:
        """The msgpack report, its payloads spliced in as they were packed."""
        final = self.final
        fields = [("token", pack_scalar(self.token)), ("state", pack_text(final.state))]
        if self.id is not None:
            fields.insert(0, ("id", pack_scalar(self.id)))
        if final.output is not None:
            fields.append(("output", final.output))
        if final.error is not None:
            fields.append(("error", pack(final.error)))
        if final.error_detail is not None:
            fields.append(("error_detail", pack(final.error_detail)))
        if self.items:
            fields.append(("items", pack_array(self.items)))
        return pack_map(fields)

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)


class FinishAnswer:
    """A finish's answer: `{"id", "status"}`, with `error` when the service ended the job FAILED
    itself (a result that could never be answered)."""

    FIELDS: ClassVar = (
        Out("id", {"type": "string"}, required=True),
        Out("status", {"enum": list(_FINAL_VALUES)}, required=True),
        Out("error", {"type": "string"}),
    )

    @staticmethod
    def encode(job_id: str, state: JobState, error: str | None = None) -> dict[str, Any]:
        if error is None:
            return {"id": job_id, "status": state.value}
        return {"id": job_id, "status": state.value, "error": error}

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)
