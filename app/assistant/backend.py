"""The protocol every model backend speaks, and the choice of backend from the settings.

Messages and tool specs use the OpenAI chat-completions shapes so the OpenAI-compatible backend can
pass them through unchanged and the built-in one reads the same thing:

- messages: `{"role": "system"|"user"|"assistant"|"tool", "content": str | None}`; an assistant
  message may carry `"tool_calls": [{"id", "type": "function", "function": {"name", "arguments": str}}]`
  and a tool message carries `"tool_call_id"` (its content is the tool's JSON result).
- tools: `{"type": "function", "function": {"name", "description", "parameters": <JSON Schema>}}`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from app.config import Settings


@dataclass(frozen=True)
class ToolCall:
    """One tool the model asked for. `arguments` are already parsed from the model's JSON string.

    A call whose arguments were not a JSON object gets `arguments={}` and `error` set: the loop
    records it and tells the model instead of running the tool.
    """

    id: str
    name: str
    arguments: dict[str, Any]
    error: str | None = None


@dataclass(frozen=True)
class Completion:
    """One model turn: either text for the merchant, or tool calls to run first (or both)."""

    content: str | None
    tool_calls: list[ToolCall]
    model: str
    # prompt_tokens, completion_tokens, total_tokens — whichever the backend knows.
    usage: dict[str, int] = field(default_factory=dict)


class BackendError(Exception):
    """The model could not answer (unreachable, timed out after retries, refused, malformed reply)."""


class Backend(Protocol):
    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
        """One chat-completions round. Raises BackendError when no answer can be had."""
        ...


def backend_for(settings: Settings) -> Backend:
    """The configured OpenAI-compatible endpoint, else the built-in deterministic assistant."""
    # Imported here so each backend's dependencies load only when it is the one in use.
    if settings.llm_base_url:
        from app.assistant.openai_backend import OpenAIBackend

        return OpenAIBackend(settings)
    from app.assistant.builtin import BuiltinAssistant

    return BuiltinAssistant()
