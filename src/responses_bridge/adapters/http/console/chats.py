"""Stored Chat Completions (``store: true`` on ``POST /v1/chat/completions``) for the logs: a tenant's, newest
first, through the API's own service (its index and its tenant scoping), and one as its messages and its answer.

A chat message is shown with the same looks as a response's items (items.py): its role and text, the function
calls an assistant message made with their arguments, a tool message's result.

A text is searched for as the Logs search it (logs.py): by the database, in each completion's stored messages (the
request's words) and answer, in stretches of at most STATEMENT_BYTES a statement and SEARCH_BYTES or SEARCH_ROWS a
page, the sizes read first; a search that has not filled its page by then says so and continues from there."""

from __future__ import annotations

from typing import Any

from ....protocol.errors import APIError
from ....services.responses.chat_completions import ChatCompletionService
from ....store.browsing import ResponseBrowser, as_stored
from . import logs
from .items import ItemView, pretty, summary_text, view
from .logs import when

PAGE = 25
MESSAGES_SHOWN = 100


async def chat_page(chats: ChatCompletionService, tenant: str, after: str | None, model: str,
                    browser: ResponseBrowser | None = None, text: str = "") -> dict[str, Any]:
    """A page of the tenant's stored chat completions, newest first: by model through the API's listing, or those
    holding ``text`` (``browser``: the console's reads, which search in the database)."""
    if text and browser is not None:
        page = await _searched(chats, browser, tenant, after, text)
        if model:  # a model named beside a text: those of the found that are that model's
            page["rows"] = [row for row in page["rows"] if row["model"] == model]
        return page
    listed = await chats.list(after=after, limit=PAGE, order="desc", model=model or None, metadata=[],
                              tenant=tenant)
    return {"rows": _rows(listed["data"]),
            "next_after": listed["data"][-1]["id"] if listed.get("has_more") and listed["data"] else None,
            "searching": False, "scanned": 0}


async def _searched(chats: ChatCompletionService, browser: ResponseBrowser, tenant: str, after: str | None,
                    text: str) -> dict[str, Any]:
    found: list[str] = []
    cursor, scanned, scanned_bytes, needle = after, 0, 0, as_stored(text)
    while True:
        sizes, more = await browser.chat_sizes(tenant=tenant, after=cursor, limit=logs.SIZES_READ)
        for stretch in logs.stretches(sizes, logs.STATEMENT_BYTES):
            held = await browser.chats_containing([name for name, _ in stretch], needle, tenant=tenant)
            for name, size in stretch:
                scanned, scanned_bytes, cursor = scanned + 1, scanned_bytes + size, name
                if name in held:
                    found.append(name)
                if len(found) == PAGE:
                    last = not more and name == sizes[-1][0]
                    return await _found_page(chats, tenant, found, None if last else name, False, scanned)
            if (scanned_bytes >= logs.SEARCH_BYTES or scanned >= logs.SEARCH_ROWS) and (
                    more or stretch[-1] != sizes[-1]):
                return await _found_page(chats, tenant, found, cursor, True, scanned)
        if not more:
            return await _found_page(chats, tenant, found, None, False, scanned)


async def _found_page(chats: ChatCompletionService, tenant: str, found: list[str], next_after: str | None,
                      searching: bool, scanned: int) -> dict[str, Any]:
    completions = []
    for completion_id in found:
        try:
            completions.append(await chats.get(completion_id, tenant=tenant))
        except APIError:  # deleted since it was found
            continue
    return {"rows": _rows(completions), "next_after": next_after, "searching": searching, "scanned": scanned}


def _rows(completions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for completion in completions:
        answers = _answers(completion)
        answer = answers[0] if answers else {}
        usage = _dict(completion.get("usage"))
        rows.append({"id": completion["id"], "created": when(completion.get("created")),
                     "model": str(completion.get("model") or ""),
                     "summary": summary_text({"output": [message_item(answer)]}),
                     "tokens": usage.get("total_tokens") if isinstance(usage.get("total_tokens"), int) else None})
    return rows


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
