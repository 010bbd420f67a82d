"""The marketing assistant: the model backends, the tools it may call, and the protocol between them.

`backend.py` is the contract: a backend turns an OpenAI-format chat (plus tool specs) into a
`Completion`; `tools.py` runs the tool calls it asks for, always scoped to one merchant. The
conversation loop that ties them together and writes the reply lives in `app.services.assistant`.
Backends: `openai_backend.py` (any OpenAI-compatible chat-completions endpoint with tool calling) and
`builtin.py` (a deterministic assistant used when no endpoint is configured).
"""
