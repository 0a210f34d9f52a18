"""What the engine needs to know about the upstream's dialect of Chat Completions.

Backends differ in small ways (``max_tokens`` or ``max_completion_tokens``, whether a ``developer`` role or
reasoning in history is accepted). These switches live in one frozen object built from the settings, so the
translation functions stay pure and a test can state the dialect it means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..protocol.known_fields import UnknownFields
from ..protocol.responses.request import DEFAULT_MAX_INPUT_ITEMS
from .sse import DEFAULT_MAX_EVENT_BYTES


@dataclass(frozen=True, slots=True)
class EngineOptions:
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # OpenAI accepts "developer"; vLLM, Ollama and llama.cpp templates know only "system".
    developer_role: Literal["developer", "system"] = "system"
    # Where earlier reasoning goes when history is replayed: dropped (safe everywhere), or sent back as the
    # assistant message's ``reasoning_content`` (DeepSeek-style backends that want it).
    reasoning_history: Literal["drop", "reasoning_content"] = "drop"
    # Server-side tools the deployment cannot run (web_search, file_search, …): left out of what the model is
    # offered ("drop", a warning is logged), or refused with a 400 ("reject"). See engine/tools/tools.py.
    unsupported_tools: Literal["drop", "reject"] = "drop"
    # The model's context window in tokens, when the deployment declares it: a ``truncation: "auto"`` request
    # that would not fit drops its oldest items before the first call (truncation.py). None: only the
    # upstream's own context-length error triggers truncation.
    context_window: int | None = None
    # The largest single upstream SSE event, and the largest non-streamed upstream answer, held in memory; an
    # upstream that sends more fails that response (502 / ``response.failed``). See sse.py.
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    # Input items one request may hold: past it a 400 naming ``input``, before any item is parsed into an object
    # (protocol/responses/request.py's check_input_count). Not the dialect's: a bound on what one request costs.
    max_input_items: int = DEFAULT_MAX_INPUT_ITEMS
    # A field OpenAI does not define: a 400 unknown_parameter ("reject"), or accepted and logged ("warn", for
    # clients newer than the bridge's table of fields). protocol/known_fields.py.
    unknown_fields: UnknownFields = "reject"
    # Streamed events' names where the SDK and the Open Responses spec differ (event_frames.py): the SDK's
    # unless a request names the spec's version, or the spec's for every client ("open-responses").
    event_names: Literal["openai", "open-responses"] = "openai"
    # The switches below (with the three dialect switches above) make up a compatibility profile: see
    # engine/responses/profiles.py for what each is for and which backend needs it. Their defaults are today's
    # behaviour.
    tool_call_content: Literal["null", "empty"] = "null"  # an assistant message with only tool calls
    tool_result_role: Literal["tool", "user"] = "tool"  # how a tool's result is sent back
    tool_calling: Literal["native", "prompt"] = "native"  # tools as `tools`, or described in the prompt
    json_schema_format: Literal["json_schema", "json_object"] = "json_schema"  # a json_schema text.format
    stream_usage: bool = True  # ask for usage in streams (stream_options.include_usage)
    logprobs: bool = True  # pass logprobs / top_logprobs on; False leaves them out
    # OpenAI's own Chat Completions fields (prompt_cache_retention, prompt_cache_options, moderation) forwarded;
    # False: the cache fields are only echoed and ``moderation`` is refused (engine/responses/request_translation.py).
    openai_fields: bool = False
    # The model reads images (``image_url`` parts): False refuses what needs it — the computer tools, whose
    # screenshots the model must see — with a 400 naming the switch, rather than driving a desktop blind.
    images: bool = True
    # Screenshots of computer calls shown to the model, the newest; older ones become a one-line note
    # (engine/tools/computer.py; RESPONSES_BRIDGE_DESKTOP_SCREENSHOTS_KEPT). None: every one.
    screenshots_kept: int | None = 3
    # The model name sent upstream when the deployment renames it (a route's ``upstream_model``, config/upstreams.py);
    # None: the client's own. The response still names the client's model.
    upstream_model: str | None = None
