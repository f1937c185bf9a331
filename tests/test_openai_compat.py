"""worker_kit.openai_compat: the answer builders and the status an error output calls for."""

from __future__ import annotations

from worker_kit import openai_compat as oa
from worker_kit.worker.execution import Job


def test_error_status_rules() -> None:
    assert oa.error_status(oa.error("x")) == 400
    assert oa.error_status(oa.error("x", type="rate_limit_error")) == 429
    assert oa.error_status(oa.error("x", status=503)) == 503
    assert oa.error_status({"object": "error", "message": "m", "type": "NotFoundError", "code": 404}) == 404
    assert oa.error_status({"error": {"message": "m", "code": "weird"}}) == 400
    assert oa.error_status({"choices": []}) is None
    assert oa.error_status([oa.error("x")]) is None


def test_frames_and_chunks() -> None:
    assert oa.sse({"a": 1}) == 'data: {"a":1}\n\n'
    assert oa.sse("[DONE]") == oa.DONE
    chunk = oa.chat_chunk("id1", "m", "hi", role="assistant")
    assert chunk["object"] == "chat.completion.chunk"
    (choice,) = chunk["choices"]
    assert choice == {"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}
    whole = oa.completion("id2", "m", "text", prompt_tokens=2, completion_tokens=3)
    assert whole["choices"][0]["text"] == "text" and whole["usage"]["total_tokens"] == 5
    assert [m["id"] for m in oa.model_list("a", "b")["data"]] == ["a", "b"]


def test_job_openai_fields() -> None:
    plain = Job("j1", {"prompt": "hi"})
    assert plain.openai_route is None and plain.openai_input is None
    get = Job("j2", {"openai_route": "/v1/models"})
    assert get.openai_route == "/v1/models" and get.openai_input is None
    post = Job("j3", {"openai_route": "/v1/chat/completions", "openai_input": {"stream": True}})
    assert post.openai_route == "/v1/chat/completions" and post.openai_input == {"stream": True}
    assert Job("j4", "text").openai_route is None
