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
        choices = completion.get("choices") or [{}]
        answer = (choices[0] or {}).get("message") or {}
        usage = completion.get("usage") or {}
        rows.append({"id": completion["id"], "created": when(completion.get("created")),
                     "model": str(completion.get("model") or ""),
                     "summary": summary_text({"output": [message_item(answer)]}),
                     "tokens": usage.get("total_tokens") if isinstance(usage.get("total_tokens"), int) else None})
    return {"rows": rows, "next_after": rows[-1]["id"] if listed.get("has_more") and rows else None}


async def chat_detail(chats: ChatCompletionService, tenant: str, completion_id: str) -> dict[str, Any]:
    completion = await chats.get(completion_id, tenant=tenant)  # another tenant's: the API's 404
    messages = await chats.messages(completion_id, after=None, limit=MESSAGES_SHOWN, order="asc", tenant=tenant)
    answers = [chat_view((choice or {}).get("message") or {}) for choice in completion.get("choices") or ()]
    usage = completion.get("usage") if isinstance(completion.get("usage"), dict) else {}
    return {"completion": completion, "messages": [chat_view(message) for message in messages["data"]],
            "more": bool(messages.get("has_more")), "answers": answers,
            "facts": [("model", str(completion.get("model") or "")), ("created", when(completion.get("created"))),
                      *((name, str(value)) for name, value in (usage or {}).items() if not isinstance(value, dict))]}


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
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            function = call.get("function") or {}
            shown.blocks.append((f"call {function.get('name') or ''}", pretty(function.get("arguments") or "")))
    if message.get("refusal"):
        shown.text.append(f"refused: {message['refusal']}")
    return shown
