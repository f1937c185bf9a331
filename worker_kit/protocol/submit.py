"""Submitting a job: the body of `POST /run` and `POST /runsync` (`SubmitRequest`),
`{"input", "webhook"?, "policy"?: {"executionTimeout"?, "ttl"?, "lowPriority"?}}`.

As with the worker wire's messages (fields.py), each field reads itself with the service's 400
reason and states its JSON Schema, and /openapi.json's `SubmitRequest` and `Policy` are generated
from the same fields (tests/test_protocol_messages.py). /run is the service's hottest client route:
the decoder does what hand-written checks would, one call per field.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..job import Policy
from .fields import PORTABLE_REF, Message, integral, object_schema
from .refusals import ApiError

#: Upper bound for policy times and /status?ttl= (a week, as the hosted service allows).
MAX_POLICY_MS = 7 * 24 * 3600 * 1000
#: The longest webhook URL the service takes.
MAX_WEBHOOK_CHARS = 2048


class _Input:
    """The job's input: any portable value (the body as a whole is checked as it is decoded)."""

    name = "input"
    required = True

    def read(self, body: dict[str, Any]) -> Any:
        if "input" not in body:
            raise ApiError(400, 'the body must hold "input", e.g. {"input": {"prompt": "hello"}}')
        return body["input"]

    def schema(self) -> dict[str, Any]:
        return {**PORTABLE_REF, "description": "any JSON value, handed to the handler: at most 127 levels "
                "of nesting, no NaN or Infinity, no lone surrogates (docs/service.md)"}  # fmt: skip


class _Webhook:
    """An http(s) URL with a host, POSTed the job's final status."""

    name = "webhook"
    required = False

    def read(self, body: dict[str, Any]) -> str | None:
        webhook = body.get("webhook")
        if webhook is None:
            return None
        if not isinstance(webhook, str):
            raise ApiError(400, f"webhook must be an http(s) URL string, not {webhook!r}")
        parts = urlsplit(webhook)
        if parts.scheme not in ("http", "https") or not parts.hostname or len(webhook) > MAX_WEBHOOK_CHARS:
            reason = f"webhook must be an http:// or https:// URL with a host, not {webhook[:200]!r}"
            raise ApiError(400, reason)
        return webhook

    def schema(self) -> dict[str, Any]:
        # A subset of what urlsplit accepts: what the schema admits, the route takes.
        return {
            "type": ["string", "null"],
            "maxLength": MAX_WEBHOOK_CHARS,
            "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$",
            "description": "an http(s) URL, POSTed the final status when the job ends",
        }


class _PolicyMs:
    """A policy time: whole milliseconds, 1..MAX_POLICY_MS; absent means the endpoint's default."""

    __slots__ = ("description", "name")

    def __init__(self, name: str, description: str) -> None:
        self.name, self.description = name, description

    def read(self, raw: dict[str, Any], default: int) -> int:
        value = integral(raw.get(self.name, default))
        if isinstance(value, bool) or not isinstance(value, int) or not (1 <= value <= MAX_POLICY_MS):
            raise ApiError(400, f"policy.{self.name} must be a whole number of milliseconds between 1 and "
                           f"{MAX_POLICY_MS}, not {value!r}")  # fmt: skip
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": MAX_POLICY_MS, "description": self.description}


class _LowPriority:
    """Accepted for compatibility with the hosted API; ignored."""

    name = "lowPriority"

    def read(self, raw: dict[str, Any]) -> None:
        if "lowPriority" in raw and not isinstance(raw["lowPriority"], bool):
            raise ApiError(400, "policy.lowPriority must be true or false")

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean", "description": "accepted for compatibility; ignored"}


_TIMEOUT = _PolicyMs("executionTimeout", "ms the run may take")
_TTL = _PolicyMs("ttl", "ms the job may live, queue time included")
_LOW_PRIORITY = _LowPriority()
POLICY_FIELDS = (_TIMEOUT, _TTL, _LOW_PRIORITY)
_KNOWN = frozenset(f.name for f in POLICY_FIELDS)
_KNOWN_TEXT = ", ".join(f.name for f in POLICY_FIELDS)


class _PolicyField:
    """The body's `policy`: an object of POLICY_FIELDS, each absent one the endpoint's default."""

    name = "policy"
    required = False

    def read(self, body: dict[str, Any], timeout_ms: int, ttl_ms: int) -> Policy:
        return decode_policy(body.get("policy"), timeout_ms, ttl_ms)

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"$ref": "#/components/schemas/Policy"}, {"type": "null"}]}


def decode_policy(raw: Any, timeout_ms: int, ttl_ms: int) -> Policy:
    """A submit's `policy` (None: the endpoint's own, `timeout_ms` and `ttl_ms`)."""
    if raw is None:
        return _default_policy(timeout_ms, ttl_ms)
    if not isinstance(raw, dict):
        raise ApiError(400, f"policy must be an object, not {type(raw).__name__}")
    unknown = raw.keys() - _KNOWN
    if unknown:
        raise ApiError(400, f"unknown policy field(s): {', '.join(sorted(unknown))} (known: {_KNOWN_TEXT})")
    execution_timeout, ttl = _TIMEOUT.read(raw, timeout_ms), _TTL.read(raw, ttl_ms)
    _LOW_PRIORITY.read(raw)
    # Only a client's own executionTimeout outranks the handler's timeout on the worker.
    return Policy(execution_timeout, ttl, execution_timeout_explicit="executionTimeout" in raw)


_defaults: dict[tuple[int, int], Policy] = {}


def _default_policy(timeout_ms: int, ttl_ms: int) -> Policy:
    """The endpoint's policy (a frozen Policy, shared: most submits name none)."""
    policy = _defaults.get((timeout_ms, ttl_ms))
    if policy is None:
        if len(_defaults) > 64:  # endpoints reconfigured many times: start over, stay small
            _defaults.clear()
        policy = _defaults[timeout_ms, ttl_ms] = Policy(timeout_ms, ttl_ms, execution_timeout_explicit=False)
    return policy


_INPUT, _WEBHOOK, _POLICY = _Input(), _Webhook(), _PolicyField()


class SubmitRequest(Message):
    """`POST /run` and `POST /runsync`: a job's input, its webhook and its policy."""

    __slots__ = ("input", "policy", "webhook")

    def __init__(self, input: Any, policy: Policy | None = None, webhook: str | None = None) -> None:
        self.input, self.policy, self.webhook = input, policy, webhook

    FIELDS: ClassVar = (_INPUT, _WEBHOOK, _POLICY)

    @classmethod
    def decode(cls, body: dict[str, Any], timeout_ms: int, ttl_ms: int) -> SubmitRequest:
        """The request of `body`; a policy left out (wholly or in part) takes the endpoint's
        `timeout_ms` and `ttl_ms`. Raises ApiError(400) with the reason of the first bad field."""
        if len(body) == 1 and "input" in body:  # most submits: the input alone, nothing to check
            return cls(body["input"], _default_policy(timeout_ms, ttl_ms))
        job_input = _INPUT.read(body)
        policy = _POLICY.read(body, timeout_ms, ttl_ms)
        return cls(job_input, policy, _WEBHOOK.read(body))

    def encode(self) -> dict[str, Any]:
        """The body a client sends: the policy as Policy.to_wire() states it (one policy rule)."""
        body: dict[str, Any] = {"input": self.input}
        if self.policy is not None:
            body["policy"] = self.policy.to_wire()
        if self.webhook is not None:
            body["webhook"] = self.webhook
        return body

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return object_schema(cls.FIELDS)

    @staticmethod
    def policy_schema() -> dict[str, Any]:
        """The `Policy` object: its fields, and no others (the route refuses unknown ones)."""
        return {"type": "object", "additionalProperties": False,
                "properties": {f.name: f.schema() for f in POLICY_FIELDS}}  # fmt: skip
