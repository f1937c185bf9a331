"""Answers in the OpenAI wire format, for handlers served through the service's /openai/* routes.

A request to `/v2/<endpoint>/openai/v1/<path>` reaches the handler as an ordinary job with
`job.openai_route` ("/v1/<path>") and `job.openai_input` (the request body; None for a GET).
A handler answers a non-streaming request by returning the response object (e.g.
`chat_completion(...)`), or an `error(...)` object whose status the service answers with;
it answers `"stream": true` by yielding `sse(chunk)` frames (or the chunk dicts themselves,
which the service frames), and the service ends the stream with `data: [DONE]`.

These are plain-dict builders with no dependency on the `openai` package.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

#: The frame that ends an OpenAI stream; the service sends it when the handler did not.
DONE = "data: [DONE]\n\n"

#: HTTP status for each OpenAI error type (the `openai` client maps statuses to its exceptions).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "unprocessable_entity_error": 422,
    "rate_limit_error": 429,
    "server_error": 500,
    "api_error": 500,
    "timeout": 504,
}


def sse(data: Any) -> str:
    """One Server-Sent Events frame: `data: <json>\\n\\n` (a string is sent as it is)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"data: {payload}\n\n"


def new_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def chat_chunk(
    completion_id: str,
    model: str,
    content: str | None = None,
    *,
    role: str | None = None,
    finish_reason: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk` with a single choice carrying `content` (and/or `role`)."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def chat_completion(
    completion_id: str,
    model: str,
    content: str,
    *,
    finish_reason: str = "stop",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> dict[str, Any]:
    """A whole `chat.completion` with one assistant message."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def completion_chunk(
    completion_id: str, model: str, text: str, *, finish_reason: str | None = None
) -> dict[str, Any]:
    """One streamed `text_completion` piece (the legacy /v1/completions route)."""
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


def completion(
    completion_id: str,
    model: str,
    text: str,
    *,
    finish_reason: str = "stop",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> dict[str, Any]:
    """A whole `text_completion` answer."""
    answer = completion_chunk(completion_id, model, text, finish_reason=finish_reason)
    answer["usage"] = _usage(prompt_tokens, completion_tokens)
    return answer


def model_list(*names: str, owned_by: str = "worker-kit") -> dict[str, Any]:
    """The /v1/models answer."""
    created = int(time.time())
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": created, "owned_by": owned_by} for n in names],
    }


def error(
    message: str, *, type: str = "invalid_request_error", status: int | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI error object. Returned as a handler's output, the service answers it with
    `status` (else the status of its `type`, see ERROR_STATUS); yielded mid-stream, as
    `sse(error(...))`, the `openai` client raises it."""
    body: dict[str, Any] = {"message": message, "type": type, "param": None, "code": code}
    if status is not None:
        body["status"] = status
    return {"error": body}


def error_status(answer: Any) -> int | None:
    """The HTTP status an output that is an OpenAI error calls for; None for any other output.

    An error is `{"error": {...}}` (OpenAI's shape) or `{"object": "error", ...}` (vLLM's).
    The status is its `status`, else an integer `code` in 400..599 (as vLLM sends), else
    the status of its `type`, else 400.
    """
    if not isinstance(answer, dict):
        return None
    if isinstance(answer.get("error"), dict):
        err = answer["error"]
    elif answer.get("object") == "error":
        err = answer
    else:
        return None
    for key in ("status", "code"):
        value = err.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            return value
    return ERROR_STATUS.get(str(err.get("type")), 400)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
