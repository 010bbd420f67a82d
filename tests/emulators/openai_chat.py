"""Emulator of an OpenAI-compatible chat-completions endpoint with tool calling, answering from a script.

- `POST /v1/chat/completions`  `{"model", "messages", "tools"?, "tool_choice"?}` → a `chat.completion`

Requests authenticate with `Authorization: Bearer <api key>` (any key is accepted when the emulator
has none). The request is checked as OpenAI checks it (roles, tool specs, `tool_choice` only with
tools, every `tool` message answering a `tool_call_id` of an earlier assistant message), so a client
that builds a bad conversation gets OpenAI's 400 here too. Errors use OpenAI's envelope
`{"error": {"message", "type", "param", "code"}}`.

Each request takes the next scripted step: `text(...)`, `tool_calls(call(...), ...)` (a call's
arguments may be a raw string, e.g. malformed JSON), `error(status, ...)` or `raw(...)`, optionally
`delayed(seconds, step)`. The base class's `fail_next` / `rate_limit_next` inject 5xx and 429 +
Retry-After before the script is consulted. An empty script answers 500 and records the mistake in
`server_errors`. Sources for the formats: platform.openai.com/docs/api-reference/chat/create and
its "Error codes" guide.
"""
from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.emulators.http_server import EmulatorServer, json_response

DEFAULT_API_KEY = "sk-test-emulator-key"
PATH = "/v1/chat/completions"
ROLES = ("system", "developer", "user", "assistant", "tool")
_ids = itertools.count(1)


@dataclass(frozen=True)
class Step:
    """One scripted answer: an assistant message (200), or a status with a body."""

    message: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    status: int = 200
    body: Any = None  # for non-message answers: JSON-able, or bytes/str sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a slow or hung model)


def text(content: str, usage: dict[str, int] | None = None) -> Step:
    return Step(message={"role": "assistant", "content": content}, usage=usage)


def call(name: str, arguments: dict[str, Any] | str, call_id: str | None = None) -> dict[str, Any]:
    """One tool call as OpenAI sends it; a str `arguments` is sent verbatim (malformed JSON, say)."""
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id or f"call_emu_{next(_ids)}", "type": "function",
            "function": {"name": name, "arguments": encoded}}


def tool_calls(*calls: dict[str, Any], content: str | None = None, usage: dict[str, int] | None = None) -> Step:
    return Step(message={"role": "assistant", "content": content, "tool_calls": list(calls)}, usage=usage)


def error(status: int, message: str = "error", type_: str = "invalid_request_error", code: str | None = None,
          headers: dict[str, str] | None = None) -> Step:
    return Step(status=status, body=_error_body(message, type_, code), headers=headers or {})


def raw(body: bytes | str, status: int = 200, content_type: str = "text/html") -> Step:
    return Step(status=status, body=body, headers={"Content-Type": content_type})


def delayed(seconds: float, step: Step) -> Step:
    return replace(step, delay=seconds)


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class OpenAIChatEmulator(EmulatorServer):
    def __init__(self, api_key: str | None = DEFAULT_API_KEY, model: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.model = model  # the model named in answers; None echoes the requested one
        self._script: list[Step] = []

    @property
    def api_base_url(self) -> str:
        """What LLM_BASE_URL is set to: `http://127.0.0.1:<port>/v1`."""
        return f"{self.base_url}/v1"

    def script(self, steps: Iterable[Step]) -> None:
        with self.lock:
            self._script.extend(steps)

    @property
    def pending(self) -> int:
        with self.lock:
            return len(self._script)

    def completions(self) -> list[dict[str, Any]]:
        """The JSON bodies of every chat-completions request received, oldest first."""
        return [r.json for r in self.requests_to(PATH, "POST")]

    # -- answering -------------------------------------------------------------------------
    def rate_limited_response(self, retry_after: float) -> Response:
        return json_response(_error_body("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
                             429, {"Retry-After": f"{retry_after:g}"})

    def handle(self, request: Request) -> Response:
        if request.path != PATH:
            return json_response(_error_body(f"Unknown request URL: {request.method} {request.path}.",
                                             "invalid_request_error", "unknown_url"), 404)
        if request.method != "POST":
            return json_response(_error_body("Method not allowed.", "invalid_request_error", None), 405)
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return json_response(_error_body("Incorrect API key provided.", "invalid_request_error",
                                             "invalid_api_key"), 401)
        body = request.get_json(silent=True)
        problem = _request_problem(body)
        if problem is not None:
            return json_response(_error_body(problem[1], "invalid_request_error", None, problem[0]), 400)
        return self._answer(body, self._next_step())

    def _next_step(self) -> Step | None:
        with self.lock:
            return self._script.pop(0) if self._script else None

    def _answer(self, body: dict[str, Any], step: Step | None) -> Response:
        if step is None:
            with self.lock:
                self.server_errors.append("OpenAIChatEmulator: a request arrived with no scripted step left")
            return json_response(_error_body("The emulator has no scripted answer left.", "server_error", None), 500)
        if step.delay:
            time.sleep(step.delay)
        if step.message is None:
            payload = step.body if isinstance(step.body, (bytes, str)) else json.dumps(step.body)
            return Response(payload, status=step.status, headers=step.headers,
                            mimetype=None if "Content-Type" in step.headers else "application/json")
        return json_response(self._completion(body, step), step.status, step.headers)

    def _completion(self, body: dict[str, Any], step: Step) -> dict[str, Any]:
        message = step.message or {}
        prompt = len(json.dumps(body["messages"])) // 4  # about four characters a token
        answer = len(json.dumps(message)) // 4
        return {
            "id": f"chatcmpl-emu{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model or body["model"], "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"refusal": None, **message}, "logprobs": None,
                         "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
            "usage": step.usage or {"prompt_tokens": prompt, "completion_tokens": answer,
                                    "total_tokens": prompt + answer},
        }


# -- request validation (what OpenAI answers 400 to) ---------------------------------------------
def _request_problem(body: Any) -> tuple[str | None, str] | None:
    """(param, message) of the first thing OpenAI would refuse, or None."""
    if not isinstance(body, dict):
        return None, "We could not parse the JSON body of your request."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model", "you must provide a model parameter"
    if body.get("stream"):
        return "stream", "The emulator does not stream."
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not tools or not all(map(_valid_tool, tools))):
        return "tools", "Invalid 'tools': expected a non-empty array of function tools with a name and parameters."
    if "tool_choice" in body and not tools:
        return "tool_choice", ("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                               "are specified.")
    return _messages_problem(body.get("messages"))


def _valid_tool(tool: Any) -> bool:
    function = tool.get("function") if isinstance(tool, dict) else None
    return (tool.get("type") == "function" and isinstance(function, dict) and isinstance(function.get("name"), str)
            and isinstance(function.get("parameters", {}), dict))


def _messages_problem(messages: Any) -> tuple[str, str] | None:
    if not isinstance(messages, list) or not messages:
        return "messages", "Invalid 'messages': expected a non-empty array."
    open_calls: set[str] = set()
    for index, message in enumerate(messages):
        param = f"messages.[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            return f"{param}.role", f"Invalid value: '{role}'. Supported values are: {', '.join(ROLES)}."
        if role == "tool":
            if message.get("tool_call_id") not in open_calls:
                return f"{param}.role", ("Invalid parameter: messages with role 'tool' must be a response to a "
                                         "preceeding message with 'tool_calls'.")
            open_calls.discard(message["tool_call_id"])
            continue
        if open_calls:
            return f"{param}.role", ("An assistant message with 'tool_calls' must be followed by tool messages "
                                     "responding to each 'tool_call_id'.")
        if role == "assistant":
            open_calls = {c.get("id") for c in message.get("tool_calls") or [] if isinstance(c, dict)}
        elif not isinstance(message.get("content"), (str, list)):
            return f"{param}.content", "Invalid type: expected a string or an array of content parts."
    if open_calls:
        return "messages", "Every 'tool_call_id' of an assistant message needs a tool message answering it."
    return None
