"""The one definition of the worker wire (docs/protocol.md), shared by the service, the worker
runtime and the client:

- `constants`: routes, the protocol version, limits, stop reasons;
- `codecs`: msgpack and strict JSON bodies;
- `fields`: typed body fields, each reading itself with the service's 400 reasons and stating
  its JSON Schema (/openapi.json is generated from them);
- `claims`: claim and exchange requests, the claimed job, their answer;
- `control`: heartbeats and stop signals;
- `hosted`: the hosted serverless service's worker protocol (jobs, reports, stop lists);
- `reports`: output items, finishes, releases;
- `refusals`: the 4xx answers, as the service raises them and as a worker reads them;
- `status`: the status answer of the client routes (its encoder is JobRecord.to_status);
- `submit`: the body of /run and /runsync (`SubmitRequest`, with its policy);
- `answers`: the other client answers (/run, /retry, /cancel, /stream, /purge-queue, /health).

Each message is one type with slots (a dataclass, or a `fields.Message`, which costs less to
import) with its decoder (service side: validates, raises ApiError with the reason) and its
encoder (worker side: packs once, splicing payloads packed earlier).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..packed import Packed
from .claims import ClaimAnswer, ClaimedJob, ClaimRequest, ExchangeRequest
from .codecs import JSON, MSGPACK, decode, dumps_json, encode, pack, pack_text, unpack, unpack_all
from .constants import (
    API_PREFIX,
    DEFAULT_CLAIM_WAIT_MS,
    DEFAULT_LEASE_MS,
    MAX_CLAIM,
    MAX_FIELD_CHARS,
    MAX_FINISHES,
    MAX_POLL_MS,
    MAX_SLOTS,
    MAX_WIRE_INT,
    PROTOCOL_VERSION,
    REPORT_OVERHEAD,
    STOP_CANCELLED,
    STOP_LOST,
    STOP_REASONS,
    STOP_TIMED_OUT,
    WORKER_CLAIM,
    WORKER_EXCHANGE,
    WORKER_FINISH,
    WORKER_HEARTBEAT,
    WORKER_OUTPUT,
    WORKER_RELEASE,
)
from .control import HeartbeatAnswer, HeartbeatRequest, StopSignal
from .refusals import ApiError, check_chunk, entry_refusal, refusal, stale
from .reports import (
    Final,
    FinishAnswer,
    FinishReport,
    OutputAnswer,
    OutputItem,
    OutputRequest,
    ReleaseRequest,
    decode_report,
    pack_item,
)

__all__ = [
    "API_PREFIX", "DEFAULT_CLAIM_WAIT_MS", "DEFAULT_LEASE_MS", "JSON", "MAX_CLAIM", "MAX_FIELD_CHARS",
    "MAX_FINISHES", "MAX_POLL_MS", "MAX_SLOTS", "MAX_WIRE_INT", "MSGPACK", "PROTOCOL_VERSION",
    "REPORT_OVERHEAD", "STOP_CANCELLED", "STOP_LOST", "STOP_REASONS", "STOP_TIMED_OUT", "WORKER_CLAIM",
    "WORKER_EXCHANGE", "WORKER_FINISH", "WORKER_HEARTBEAT", "WORKER_OUTPUT", "WORKER_RELEASE",
    "ApiError", "ClaimAnswer", "ClaimRequest", "ClaimedJob", "ExchangeRequest", "Final", "FinishAnswer",
    "FinishReport", "HeartbeatAnswer", "HeartbeatRequest", "HostedJob", "HostedReport", "OutputAnswer",
    "OutputItem", "OutputRequest", "Packed", "ReleaseRequest", "StatusAnswer", "StopList", "StopSignal",
    "check_chunk", "decode", "decode_report", "dumps_json", "encode", "entry_refusal", "pack", "pack_item",
    "pack_text", "refusal", "stale", "unpack", "unpack_all",
]  # fmt: skip

#: Loaded on first use: a worker speaking the native protocol needs neither (its cold start).
_LAZY = {"HostedJob": "hosted", "HostedReport": "hosted", "StopList": "hosted", "StatusAnswer": "status"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'worker_kit.protocol' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .hosted import HostedJob, HostedReport, StopList
    from .status import StatusAnswer
