"""A `Backend` for any OpenAI-compatible chat-completions endpoint with tool calling.

`POST {LLM_BASE_URL}/chat/completions` with `Authorization: Bearer {LLM_API_KEY}` (no header when no
key is set: local servers such as Ollama or vLLM need none) and `{"model", "messages", "tools",
"tool_choice": "auto"}`. Retries, backoff with jitter, Retry-After and timeouts are those of every
outbound call (`app.sources.http.send`): network errors, timeouts, 429 and 5xx are retried a bounded
number of times, then `BackendError`; a 4xx other than 429 is a `BackendError` at once.

The model's tool-call arguments are a JSON string it wrote itself: a string that is not a JSON object
becomes a `ToolCall` with `arguments={}` and `error` set, for the loop to report back to the model.
Neither the key nor the conversation is ever logged; errors name the status and the provider's
error code, never its message (which may quote the request).
"""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import requests

from app.assistant.backend import BackendError, Completion, ToolCall
from app.sources.http import (
    CredentialsRejected,
    ProviderError,
    RetryPolicy,
    json_body,
    send,
)

if TYPE_CHECKING:
    from app.config import Settings

log = logging.getLogger(__name__)

PROVIDER = "The model endpoint"
CONNECT_TIMEOUT = 5.0
# A longer Retry-After is not worth holding a worker for: the reply fails and says so instead.
MAX_RETRY_WAIT = 20.0
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def policy_for(settings: Settings) -> RetryPolicy:
    """Three attempts, each with the configured read timeout."""
    read_timeout = float(settings.llm_timeout_seconds)
    return RetryPolicy(attempts=3, base_delay=1.0, max_delay=8.0, max_wait=MAX_RETRY_WAIT,
                       connect_timeout=min(CONNECT_TIMEOUT, read_timeout), read_timeout=read_timeout)


class OpenAIBackend:
    def __init__(self, settings: Settings, policy: RetryPolicy | None = None) -> None:
        if not settings.llm_base_url:
            raise ValueError("OpenAIBackend needs LLM_BASE_URL")
        self._url = settings.llm_base_url.rstrip("/") + "/chat/completions"
        self._model = settings.llm_model
        self._headers = {"Authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
        self._policy = policy or policy_for(settings)
        self._session = requests.Session()

    def __repr__(self) -> str:  # never the key
        return f"OpenAIBackend(url={self._url!r}, model={self._model!r})"

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
        body: dict[str, Any] = {"model": self._model, "messages": messages}
        if tools:  # endpoints refuse tool_choice without tools
            body.update(tools=tools, tool_choice="auto")
        started = time.monotonic()
        response = self._post(body)
        if response.status_code != 200:
            raise BackendError(f"{PROVIDER} refused the request (HTTP {response.status_code}{_error_code(response)}).")
        completion = parse_completion(json_body(response), self._model)
        log.info("model %s answered in %.2fs: %d tool call(s), %s tokens", completion.model,
                 time.monotonic() - started, len(completion.tool_calls), completion.usage.get("total_tokens", "?"))
        return completion

    def _post(self, body: dict[str, Any]) -> requests.Response:
        try:
            return send(self._session, "POST", self._url, provider=PROVIDER, policy=self._policy,
                        json=body, headers=self._headers)
        except CredentialsRejected as exc:  # 401/403: retrying a refused key only gets it flagged
            raise BackendError(f"{exc} Check LLM_API_KEY.") from exc
        except ProviderError as exc:
            raise BackendError(str(exc)) from exc


def _error_code(response: requests.Response) -> str:
    """`: <type>/<code>` from an OpenAI-style error body, if it has one."""
    payload = json_body(response)
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return ""
    parts = [str(error[key])[:100] for key in ("type", "code") if error.get(key)]
    return f": {'/'.join(parts)}" if parts else ""


# --- Parsing the answer -------------------------------------------------------------------------

def parse_completion(payload: Any, default_model: str) -> Completion:
    """A chat.completion body as a Completion; BackendError when it has no assistant message."""
    choices = payload.get("choices") if isinstance(payload, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise BackendError(f"{PROVIDER} answered without a message.")
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise BackendError(f"{PROVIDER} answered with malformed tool calls.")
    return Completion(
        content=_text(message.get("content")),
        tool_calls=[_tool_call(index, raw) for index, raw in enumerate(raw_calls)],
        model=str(payload.get("model") or default_model),
        usage=_usage(payload.get("usage")),
    )


def _text(content: Any) -> str | None:
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict)) or None
    return content if isinstance(content, str) else None


def _tool_call(index: int, raw: Any) -> ToolCall:
    raw = raw if isinstance(raw, dict) else {}
    # The id links the tool's result back to the call; invent a unique one if the endpoint gave none.
    call_id = str(raw.get("id") or f"call_{index}")
    function = raw.get("function")
    if not isinstance(function, dict) or not function.get("name"):
        return ToolCall(id=call_id, name=str((function or {}).get("name") or ""), arguments={},
                        error="The tool call names no function.")
    arguments, error = _arguments(function.get("arguments"))
    return ToolCall(id=call_id, name=str(function["name"]), arguments=arguments, error=error)


def _arguments(raw: Any) -> tuple[dict[str, Any], str | None]:
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, dict):  # some compatible servers send the object itself
        return raw, None
    if not isinstance(raw, str):
        return {}, "The arguments are not a JSON string."
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        return {}, f"The arguments are not valid JSON ({exc})."
    if not isinstance(parsed, dict):
        return {}, "The arguments must be a JSON object."
    return parsed, None


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {key: raw[key] for key in USAGE_KEYS if isinstance(raw.get(key), int) and not isinstance(raw[key], bool)}
