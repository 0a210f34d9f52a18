"""Compatibility profiles: one small table of request-translation switches per kind of backend.

Chat Completions servers accept different dialects, and a request one of them takes can make another answer 400 or
500, or quietly lose part of the conversation. Each switch names one such difference; a profile is the set of
values known to work for one backend. A deployment picks a profile (``RESPONSES_BRIDGE_PROFILE``, or ``profile`` of an
upstream in the configuration file) and may still set any switch on its own, which wins over the profile.

=====================  ===========  ===========  ===========  ===========  =====================
switch                 generic      vllm         ollama       llamacpp     openai
=====================  ===========  ===========  ===========  ===========  =====================
developer_role         system       system       system       system       developer
max_tokens_field       max_tokens   max_tokens   max_tokens   max_tokens   max_completion_tokens
reasoning_history      drop         drop         drop         drop         drop
tool_call_content      null         null         null         empty        null
tool_result_role       tool         tool         tool         user         tool
tool_calling           native       native       native       prompt       native
json_schema_format     json_schema  json_schema  json_schema  json_object  json_schema
stream_usage           true         true         true         true         true
logprobs               true         true         true         true         true
openai_fields          false        false        false        false        true
images                 true         true         true         true         true
=====================  ===========  ===========  ===========  ===========  =====================

What each switch does, and why a backend needs it:

* ``developer_role``: the role a ``developer`` message is sent as. OpenAI knows ``developer``; chat templates of
  open models know only ``system`` (llama.cpp answers 500 when its template meets ``developer``).
* ``max_tokens_field``: where ``max_output_tokens`` goes. OpenAI's reasoning models take only
  ``max_completion_tokens``; llama.cpp ignores ``max_completion_tokens`` (the answer is not cut), so it gets
  ``max_tokens``.
* ``reasoning_history``: earlier reasoning replayed as the assistant's ``reasoning_content`` (DeepSeek-style
  backends want it) or dropped (safe everywhere). A request's ``reasoning.context`` (``all_turns``,
  ``current_turn``) chooses within what this switch sends, so under ``drop`` it is refused
  (engine/served_fields.py).
* ``tool_call_content``: the ``content`` of an assistant message that carries only tool calls: ``null`` (OpenAI's
  own form) or ``""`` (llama.cpp answers 400 to ``content: null`` beside ``tool_calls``).
* ``tool_result_role``: a tool's result as a ``tool`` message, or as a ``user`` message that names the tool and the
  call (llama.cpp renders ``tool`` messages as empty turns for templates without a tool role, so the model never
  sees the result). Consecutive results share one ``user`` message.
* ``tool_calling``: how the tools reach the model when it may choose among them: as ``tools`` (``native``), or
  described in the system message with the calls read back out of the answer's text (``prompt``,
  engine/tools/prompt.py). Stock llama-cpp-python ignores ``tools`` sent without ``tool_choice`` (the SDKs'
  default, so the model never sees them) and under ``auto`` answers every text turn empty.
* ``json_schema_format``: a ``json_schema`` text format as OpenAI's ``{"type": "json_schema", "json_schema": …}``,
  or as ``{"type": "json_object", "schema": …}``, the form llama.cpp constrains with (it answers 500 to the first).
* ``stream_usage``: ask streams for a usage chunk (``stream_options.include_usage``); off for servers that refuse
  ``stream_options``.
* ``logprobs``: pass ``logprobs`` / ``top_logprobs`` on; off for servers that refuse them.
* ``openai_fields``: pass OpenAI's own Chat Completions fields on: ``prompt_cache_retention``,
  ``prompt_cache_options`` and ``moderation``. Other servers do not know them (strict ones answer 400), so off
  everywhere else: the cache fields are then echoed but not applied, and ``moderation`` is refused with a 400,
  since a client asking for moderation must not get unmoderated output unknowingly. The same switch says the
  backend reads what only OpenAI's Chat Completions takes among content parts: ``file`` parts (a stored PDF or
  other file named by ``file_id`` goes as one; elsewhere its text does, or a 400: run/file_inputs.py),
  ``input_audio`` parts (elsewhere a 400) and image ``detail: "original"`` (elsewhere sent as ``high``).
* ``images``: the model reads images. Off for a text-only model: what cannot work without them — the computer
  tools (``computer``, ``computer_use_preview``, a session's ``computer_use``), whose every answer is a
  screenshot — is refused with a 400 naming the switch instead of driving a desktop blind. No profile turns it off:
  whether a model reads images is the model's, not its server's.

``generic`` is the bridge's behaviour before profiles existed, and the default. ``responses-bridge probe`` measures
these switches on a live server (probe/checks.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

from ..options import EngineOptions

ProfileName = Literal["vllm", "ollama", "llamacpp", "openai", "generic"]


@dataclass(frozen=True, slots=True)
class ProfileSwitches:
    """The switches a profile sets; the field names are those of :class:`EngineOptions` (and of the settings)."""

    developer_role: Literal["developer", "system"] = "system"
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    reasoning_history: Literal["drop", "reasoning_content"] = "drop"
    tool_call_content: Literal["null", "empty"] = "null"
    tool_result_role: Literal["tool", "user"] = "tool"
    tool_calling: Literal["native", "prompt"] = "native"
    json_schema_format: Literal["json_schema", "json_object"] = "json_schema"
    stream_usage: bool = True
    logprobs: bool = True
    openai_fields: bool = False
    images: bool = True


GENERIC = ProfileSwitches()
PROFILES: Mapping[str, ProfileSwitches] = MappingProxyType({
    "generic": GENERIC,
    "vllm": GENERIC,
    "ollama": GENERIC,
    "llamacpp": ProfileSwitches(tool_call_content="empty", tool_result_role="user", tool_calling="prompt",
                                json_schema_format="json_object"),
    "openai": ProfileSwitches(developer_role="developer", max_tokens_field="max_completion_tokens",
                             openai_fields=True),
})
SWITCHES: tuple[str, ...] = tuple(asdict(GENERIC))


def options_for(base: EngineOptions, profile: str, overrides: Mapping[str, Any] | None = None) -> EngineOptions:
    """``base`` with the switches of ``profile``, then ``overrides`` (switches set one by one) on top. Settings
    that are not switches (context window, event cap, unsupported tools) come from ``base`` unchanged."""
    try:
        switches = asdict(PROFILES[profile])
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; one of: {', '.join(PROFILES)}") from None
    if overrides:
        unknown = sorted(set(overrides) - set(SWITCHES))
        if unknown:
            raise ValueError(f"not a profile switch: {', '.join(unknown)}; switches are: {', '.join(SWITCHES)}")
        switches.update(overrides)
    return replace(base, **switches)
