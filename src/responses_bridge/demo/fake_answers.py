"""What the fake upstream answers a request: the text, reasoning, refusal or tool calls its prompt and
directives ask for, their usage and logprobs, and the JSON completion."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import fake_agents, fake_code, fake_programs
from .fake_directives import Directives
from .fake_text import _content_text, _first_words, _group, _word_count, _word_pieces

REFUSAL_TEXT = "I can't help with that."
TOOL_ARGUMENT_PIECE = 8
LENGTH_DIRECTIVE_WORDS = 3
_CALL_RE = re.compile(r"\bcall\s+([A-Za-z0-9_-]+)", re.IGNORECASE)


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Answer:
    """Everything one completion says, independent of whether it goes out as JSON or as SSE."""

    content_chunks: list[str] | None = None
    refusal_chunks: list[str] | None = None
    reasoning_chunks: list[str] = field(default_factory=list)
    reasoning_field: str = "reasoning_content"
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def content(self) -> str | None:
        return None if self.content_chunks is None else "".join(self.content_chunks)

    @property
    def refusal(self) -> str | None:
        return None if self.refusal_chunks is None else "".join(self.refusal_chunks)

    @property
    def reasoning(self) -> str | None:
        return "".join(self.reasoning_chunks) if self.reasoning_chunks else None


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(_word_count(_content_text(m.get("content"))) + 1 for m in messages)


def _last_user_text(messages: list[dict[str, Any]]) -> str | None:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            return _content_text(msg.get("content"))
    return None


def _argument_value(schema: Any, word: str | None) -> Any:
    if not isinstance(schema, dict):
        return "test"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return word or "test"
    if kind in ("integer", "number"):
        return 42
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return "test"


def _word_after_call(text: str, name: str) -> str | None:
    match = re.search(r"\bcall\s+" + re.escape(name) + r"(?![A-Za-z0-9_-])\s+(\S+)", text, re.IGNORECASE)
    if not match:
        return None
    word = match.group(1).rstrip(".,;:!?\"')")
    return word if word and word.lower() != "call" else None


def _build_arguments(fn: dict[str, Any], text: str) -> str:
    params = fn.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    word = _word_after_call(text, fn["name"])
    args = {}
    if isinstance(props, dict):
        args = {key: _argument_value(schema, word) for key, schema in props.items()}
    return orjson.dumps(args).decode()


def _chosen_tools(body: dict[str, Any], functions: list[dict[str, Any]], text: str, last_is_user: bool,
                  asked: str | None = None) -> list[str]:
    """Which tools to call, in order, following tool_choice, the text and parallel_tool_calls. ``asked``: the tool
    the message asks for without naming it (code to run: fake_code.py), called when no ``call <name>`` is."""
    choice = body.get("tool_choice")
    if not functions or choice == "none":
        return []
    if isinstance(choice, dict):
        return [choice["function"]["name"]]
    offered = {fn["name"] for fn in functions}
    names = [m.group(1) for m in _CALL_RE.finditer(text) if m.group(1) in offered] if last_is_user else []
    if not names and asked is not None:
        names = [asked]
    if not names and choice == "required":
        names = [functions[0]["name"]]
    if body.get("parallel_tool_calls") is False:
        names = names[:1]
    return names


def _then_tools(body: dict[str, Any], functions: list[dict[str, Any]], then: tuple[str, ...]) -> list[str]:
    """``[then=NAME]``: after the k-th round of tool results that follows the last user message, the k-th
    ``then`` tool is called (when offered and ``tool_choice`` is not ``none``), as a model working through a
    plan would; past the last one the model answers."""
    if body.get("tool_choice") == "none" or body["messages"][-1].get("role") != "tool":
        return []
    rounds = 0
    for message in reversed(body["messages"]):
        if message.get("role") == "user":
            break
        if message.get("role") == "assistant" and message.get("tool_calls"):
            rounds += 1
    offered = {fn["name"] for fn in functions}
    if 1 <= rounds <= len(then) and then[rounds - 1] in offered:
        return [then[rounds - 1]]
    return []


def _topic_tools(functions: list[dict[str, Any]], text: str) -> list[str]:
    """``--tool-topics``: the first offered tool one of whose name's words (4+ letters, split at ``_``/``-``) the
    user's text mentions, e.g. ``get_weather`` for "What's the weather like?"; none otherwise."""
    words = {word.lower() for word in re.findall(r"[A-Za-z]{4,}", text)}
    for fn in functions:
        if any(part.lower() in words for part in re.split(r"[_-]+", fn["name"]) if len(part) >= 4):
            return [fn["name"]]
    return []


def _with_query(call: ToolCall, functions: list[dict[str, Any]], text: str) -> ToolCall:
    """``--tool-topics``: a string ``query`` parameter searches for the user's question itself."""
    fn = next(fn for fn in functions if fn["name"] == call.name)
    params = fn.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    query = props.get("query") if isinstance(props, dict) else None
    if not isinstance(query, dict) or query.get("type") != "string" or not text.strip():
        return call
    arguments = orjson.loads(call.arguments)
    arguments["query"] = text.strip()
    return ToolCall(call.id, call.name, orjson.dumps(arguments).decode())


def _tool_calls(names: list[str], functions: list[dict[str, Any]], text: str) -> list[ToolCall]:
    by_name = {fn["name"]: fn for fn in functions}
    return [ToolCall(f"call_{name}_{i}", name, _build_arguments(by_name[name], text)) for i, name in enumerate(names)]


def _with_filler(render: Callable[[str], str], body: str, target: int | None) -> str:
    """Pads with w1 w2 ... until the rendered answer has ``target`` words, so benchmarks get N chunks."""
    text = render(body)
    if target is None:
        return text
    added = 0
    while (missing := target - _word_count(text)) > 0:
        filler = " ".join(f"w{i}" for i in range(added + 1, added + missing + 1))
        added += missing
        body = f"{body} {filler}" if body else filler
        text = render(body)
    return text


SUMMARISER_PROMPT = "You compact conversations"
SUMMARY_WORDS = 6


def _summary(user_text: str) -> str:
    """What a model asked to compact a transcript answers: much shorter than it (the first words of each line)."""
    lines = [line for line in user_text.splitlines() if line.strip() and not line.startswith("Conversation")]
    return "Summary: " + "; ".join(" ".join(line.split()[:SUMMARY_WORDS]) for line in lines)


def _answer_text(body: dict[str, Any], messages: list[dict[str, Any]], user_text: str, target: int | None) -> str:
    last = messages[-1]
    first = messages[0].get("content")
    if messages[0].get("role") == "system" and isinstance(first, str) and first.startswith(SUMMARISER_PROMPT):
        return _summary(user_text)
    if last.get("role") == "tool":
        prefix, subject = "Tool result: ", _content_text(last.get("content"))
    elif last.get("role") in ("system", "developer") and any(m.get("role") == "user" for m in messages):
        prefix, subject = "Noted: ", _content_text(last.get("content"))
    else:
        prefix, subject = "Echo: ", user_text
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return _with_filler(lambda b: orjson.dumps({"echo": b}).decode(), subject, target)
    return _with_filler(lambda b: prefix + b, subject, target)


def _word_limit(body: dict[str, Any], d: Directives) -> int | None:
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if d.length:
        limit = LENGTH_DIRECTIVE_WORDS if limit is None else min(limit, LENGTH_DIRECTIVE_WORDS)
    return limit


def _text_answer(answer: Answer, text: str, body: dict[str, Any], d: Directives, target: int | None) -> None:
    limit = _word_limit(body, d)
    if d.filter:
        text, answer.finish_reason = _first_words(text, 1), "content_filter"
    elif limit is not None and _word_count(text) > limit:
        text, answer.finish_reason = _first_words(text, limit), "length"
    pieces = _word_pieces(text)
    answer.content_chunks = _group(pieces, target) if target else pieces
    answer.completion_tokens += _word_count(text)


def build_answer(body: dict[str, Any], functions: list[dict[str, Any]], d: Directives, user_text: str,
                 default_chunks: int | None, *, tool_topics: bool = False) -> Answer:
    """Decides the whole answer up front, so the JSON and SSE renderings cannot disagree."""
    messages = body["messages"]
    answer = Answer(prompt_tokens=_prompt_tokens(messages), reasoning_field=d.think_field)
    if d.think:
        answer.reasoning_chunks = _word_pieces("Thinking about: " + user_text)
        answer.reasoning_tokens = _word_count("Thinking about: " + user_text)
        answer.completion_tokens = answer.reasoning_tokens
    if d.refuse:
        answer.refusal_chunks = _word_pieces(REFUSAL_TEXT)
        answer.completion_tokens += _word_count(REFUSAL_TEXT)
        return answer
    last_is_user = messages[-1].get("role") == "user"
    delegated = fake_agents.wanted_calls(body, {fn["name"] for fn in functions}, user_text)
    if delegated:  # the multi-agent beta's root model (fake_agents.py)
        answer.tool_calls = [ToolCall(f"call_{name}_{i}", name, arguments)
                             for i, (name, arguments) in enumerate(delegated)]
        answer.finish_reason = "tool_calls"
        answer.completion_tokens += sum(_word_count(f"{c.name} {c.arguments}") for c in answer.tool_calls)
        return answer
    code = (fake_code.wanted_call(body, functions, user_text)
            or fake_programs.wanted_call(body, functions, user_text)) if last_is_user else None
    names = _chosen_tools(body, functions, user_text, last_is_user, code[0] if code else None)
    if not names and not last_is_user and d.then:
        names = _then_tools(body, functions, d.then)
    topical = False
    if not names and tool_topics and last_is_user and body.get("tool_choice") in (None, "auto"):
        names = _topic_tools(functions, user_text)
        topical = bool(names)
    if names:
        answer.tool_calls = _tool_calls(names, functions, user_text)
        if code is not None:  # the code in the message is the code tool's argument
            answer.tool_calls = [ToolCall(call.id, call.name, code[1]) if call.name == code[0] else call
                                 for call in answer.tool_calls]
        if topical:
            answer.tool_calls = [_with_query(call, functions, user_text) for call in answer.tool_calls]
        if d.args is not None:
            answer.tool_calls = [ToolCall(call.id, call.name, d.args) for call in answer.tool_calls]
        answer.finish_reason = "tool_calls"
        answer.completion_tokens += sum(_word_count(f"{c.name} {c.arguments}") for c in answer.tool_calls)
        return answer
    target = d.chunks if d.chunks is not None else default_chunks
    _text_answer(answer, _answer_text(body, messages, user_text, target), body, d, target)
    if d.huge is not None:
        answer.content_chunks = ["x" * d.huge[0] + " ", *(answer.content_chunks or ())]
        answer.completion_tokens += 1
    return answer


def _usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
    }


def _logprob_entry(token: str, top: int) -> dict[str, Any]:
    alternatives = [{"token": token, "logprob": -0.1, "bytes": list(token.encode())}]
    alternatives += [
        {"token": f"alt{k}", "logprob": -1.0 - k, "bytes": list(f"alt{k}".encode())} for k in range(1, top)
    ]
    return {"token": token, "logprob": -0.1, "bytes": list(token.encode()), "top_logprobs": alternatives[:top]}


def _logprobs(tokens: list[str], top: int, *, refusal: bool = False) -> dict[str, Any]:
    entries = [_logprob_entry(t, top) for t in tokens]
    return {"content": None, "refusal": entries} if refusal else {"content": entries, "refusal": None}


# ---------------------------------------------------------------------------------------- JSON answer


def _completion_json(answer: Answer, meta: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": answer.refusal,
                               "annotations": []}
    if answer.reasoning is not None:
        message[answer.reasoning_field] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.tool_calls
        ]
    logprobs = None
    if body.get("logprobs"):
        top = body.get("top_logprobs") or 0
        if answer.refusal_chunks is not None:
            logprobs = _logprobs(answer.refusal_chunks, top, refusal=True)
        else:
            logprobs = _logprobs(answer.content_chunks or [], top)
    choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": answer.finish_reason}
    return {**meta, "choices": [choice], "usage": _usage(answer)}
