"""Stored Chat Completions (``store: true`` on ``POST /v1/chat/completions``) for the logs: a tenant's, newest
first, through the API's own service (its index and its tenant scoping), and one as its messages and its answer.

A chat message is shown with the same looks as a response's items (items.py): its role and text, the function
calls an assistant message made with their arguments, a tool message's result."""

from __future__ import annotations

from typing import Any

from ....services.responses.chat_completions import ChatCompletionService
from .items import ItemView, pretty, summary_text, view
from .logs import when

PAGE = 25
MESSAGES_SHOWN = 100


async def chat_page(chats: ChatCompletionService, tenant: str, after: str | None, model: str) -> dict[str, Any]:
    listed = await chats.list(after=after, limit=PAGE, order="desc", model=model or None, metadata=[],
                              tenant=tenant)
    rows = []
    for completion in listed["data"]:
        answers = _answers(completion)
        answer = answers[0] if answers else {}
        usage = _dict(completion.get("usage"))
        rows.append({"id": completion["id"], "created": when(completion.get("created")),
                     "model": str(completion.get("model") or ""),
                     "summary": summary_text({"output": [message_item(answer)]}),
                     "tokens": usage.get("total_tokens") if isinstance(usage.get("total_tokens"), int) else None})
    return {"rows": rows, "next_after": rows[-1]["id"] if listed.get("has_more") and rows else None}


async def chat_detail(chats: ChatCompletionService, tenant: str, completion_id: str) -> dict[str, Any]:
    completion = await chats.get(completion_id, tenant=tenant)  # another tenant's: the API's 404
    messages = await chats.messages(completion_id, after=None, limit=MESSAGES_SHOWN, order="asc", tenant=tenant)
    answers = [chat_view(message) for message in _answers(completion)]
    usage = _dict(completion.get("usage"))
    return {"completion": completion, "messages": [chat_view(message) for message in messages["data"]],
            "more": bool(messages.get("has_more")), "answers": answers,
            "facts": [("model", str(completion.get("model") or "")), ("created", when(completion.get("created"))),
                      *((name, str(value)) for name, value in usage.items() if not isinstance(value, dict))]}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _answers(completion: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages of a completion's choices (an upstream's odd shapes read as none)."""
    choices = completion.get("choices")
    return [_dict(_dict(choice).get("message")) for choice in choices if isinstance(choice, dict)] \
        if isinstance(choices, list) else []


def message_item(message: dict[str, Any]) -> dict[str, Any]:
    """A chat message as a response's message item (its text parts as ``text``)."""
    content = message.get("content")
    if isinstance(content, list):
        content = [part if part.get("type") != "text" else {"type": "text", "text": part.get("text")}
                   for part in content if isinstance(part, dict)]
    return {"type": "message", "role": message.get("role") or "message", "content": content or ""}


def chat_view(message: dict[str, Any]) -> ItemView:
    shown = view(message_item(message))
    if message.get("role") == "tool":
        shown.title, shown.css = f"tool result for {message.get('tool_call_id') or ''}", "output"
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        if isinstance(call, dict):
            function = _dict(call.get("function"))
            shown.blocks.append((f"call {function.get('name') or ''}", pretty(function.get("arguments") or "")))
    if message.get("refusal"):
        shown.text.append(f"refused: {message['refusal']}")
    return shown
