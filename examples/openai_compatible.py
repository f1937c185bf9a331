"""An OpenAI-compatible worker: a tiny deterministic "model" (no weights) served through the
service's /v2/<endpoint>/openai/v1 routes, so the official `openai` client talks to it.

It answers /v1/models, /v1/chat/completions and /v1/completions, streaming or not: the reply
is the prompt's words echoed back one token at a time. Two extra body fields (sent with the
`openai` client's `extra_body=`) help try things out: `delay` (seconds between tokens) and
`fail` (the handler raises RuntimeError with that message).

    WORKER_KIT_URL=http://127.0.0.1:8000/v2/llm python examples/openai_compatible.py
"""

import asyncio

import worker_kit
from worker_kit import openai_compat as oa

MODEL = "worker-kit-echo"


def reply_words(body):
    """The model: 'echo:' then the last user message (or the prompt), word by word."""
    if "messages" in body:
        users = [m.get("content") or "" for m in body["messages"] if m.get("role") == "user"]
        text = users[-1] if users else ""
    else:
        prompt = body.get("prompt", "")
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    words = ["echo:", *str(text).split()]
    limit = body.get("max_tokens")
    return words[:limit] if isinstance(limit, int) and limit > 0 else words


@worker_kit.handler(timeout=600)
async def serve(job):
    route, body = job.openai_route, job.openai_input or {}
    if route is None:
        raise ValueError("this worker answers OpenAI requests: call /v2/<endpoint>/openai/v1/...")
    if route == "/v1/models":
        yield oa.model_list(MODEL)
        return
    if route not in ("/v1/chat/completions", "/v1/completions"):
        yield oa.error(f"unknown route {route}", type="not_found_error")
        return
    if body.get("fail"):
        raise RuntimeError(body["fail"])
    chat = route == "/v1/chat/completions"
    words = reply_words(body)
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
    answer_id = oa.new_id("chatcmpl" if chat else "cmpl")
    model = body.get("model") or MODEL
    if not body.get("stream"):
        build = oa.chat_completion if chat else oa.completion
        text = "".join(tokens)
        yield build(answer_id, model, text, prompt_tokens=len(words) - 1, completion_tokens=len(words))
        return

    def piece(text, finish=None):
        if chat:
            return oa.chat_chunk(answer_id, model, text, finish_reason=finish)
        return oa.completion_chunk(answer_id, model, text or "", finish_reason=finish)

    delay = float(body.get("delay", 0))
    if chat:
        yield oa.sse(oa.chat_chunk(answer_id, model, role="assistant", content=""))
    for token in tokens:
        await asyncio.sleep(delay)  # stands in for the model producing one token
        yield oa.sse(piece(token))
    yield oa.sse(piece(None, finish="stop"))
    yield oa.DONE

if __name__ == "__main__":  # so tests can import the handler without starting a worker
    worker_kit.start()
