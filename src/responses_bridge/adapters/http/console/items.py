"""Each stored item as what it is, for the templates: a message's text, a reasoning summary, a tool call's
arguments beside its output, a code or shell run's logs, an image, a web search's sources.

A view is plain data (strings, lists), never markup: the templates escape every value (jinja2's autoescape), so
whatever a model, a page or a client wrote shows as the text it is. Names that say a value is a credential are
masked (redact.py) before anything is shown, sealed state (``encrypted_content``) is never shown, and an image is
shown only as a ``data:`` URL of a raster type (the page's CSP loads nothing from elsewhere).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from ....redact import mask, mask_text

_IMAGE_DATA = re.compile(r"data:image/(png|jpeg|jpg|gif|webp);base64,[A-Za-z0-9+/=]+")
SHOWN_CHARS = 20_000
"""A block's text beyond this is cut (a page stays small whatever a tool returned); the API has all of it."""
_SHOWN = ContextVar("shown_chars", default=SHOWN_CHARS)
SEALED = frozenset({"encrypted_content"})
LABEL_CHARS = 200
"""A title, a status, an id or a label beyond this is cut (they are names, not content)."""


@dataclass(slots=True)
class ItemView:
    kind: str  # the item's type, as the API names it
    title: str  # what the item is, in a few words (a role, a tool's name)
    css: str  # which of the style sheet's looks it takes: message, reasoning, call, output, run, search, other
    text: list[str] = field(default_factory=list)  # paragraphs
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (label, preformatted text)
    images: list[str] = field(default_factory=list)  # data: URLs of raster images
    links: list[tuple[str, str]] = field(default_factory=list)  # (title, URL) shown as text, never followed
    status: str = ""
    item_id: str = ""
    turn_id: str = ""  # a session's item: the turn it belongs to (the timeline's groups)


def view(item: dict[str, Any]) -> ItemView:
    kind = str(item.get("type") or ("message" if "role" in item else "item"))
    shown = ItemView(kind, kind.replace("_", " "), "other", status=_text(item.get("status")),
                     item_id=_text(item.get("id") or item.get("call_id")), turn_id=_text(item.get("turn_id")))
    build = _BUILDERS.get(kind)
    if build is not None:
        build(item, shown)
    else:
        shown.blocks.append(("item", pretty(item)))
    return shown


def _message(item: dict[str, Any], shown: ItemView) -> None:
    shown.title, shown.css = _text(item.get("role") or "message"), "message"
    content = item.get("content")
    if isinstance(content, str):
        shown.text.append(_cut(content))
        return
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        part_type = part.get("type")
        if part_type in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            shown.text.append(_cut(_text(part.get("text"))))
            for note in _list(part.get("annotations")):
                if isinstance(note, dict) and note.get("type") == "url_citation":
                    shown.links.append((_text(note.get("title") or note.get("url")), _text(note.get("url"))))
                elif isinstance(note, dict):
                    shown.links.append((_text(note.get("type")), _text(note.get("filename") or note.get("file_id"))))
        elif part_type == "refusal":
            shown.text.append("refused: " + _cut(_text(part.get("refusal"))))
        elif part_type == "input_image":
            _image(shown, part.get("image_url"), part.get("file_id"))
        elif part_type == "input_file":
            shown.blocks.append(("file", _text(part.get("filename") or part.get("file_id") or "inline file")))
        else:
            shown.blocks.append((_text(part_type), pretty(part)))


def _reasoning(item: dict[str, Any], shown: ItemView) -> None:
    shown.title, shown.css = "reasoning", "reasoning"
    for part in _list(item.get("summary")) + _list(item.get("content")):
        if isinstance(part, dict):
            shown.text.append(_cut(_text(part.get("text"))))
    if item.get("encrypted_content"):  # sealed: said, never shown
        shown.blocks.append(("sealed", "encrypted reasoning (sealed: not shown)"))


def _call(item: dict[str, Any], shown: ItemView) -> None:
    shown.css = "call"
    shown.title = f"{shown.kind.replace('_', ' ')}: {_text(item.get('name'))}"
    if item.get("server_label"):
        shown.title += f" on {_text(item.get('server_label'))}"
    for name in ("arguments", "input", "action"):
        if item.get(name) is not None:
            shown.blocks.append((name, pretty(item[name])))
    for name in ("output", "error"):
        if item.get(name) is not None:
            shown.blocks.append((name, pretty(item[name])))


def _output(item: dict[str, Any], shown: ItemView) -> None:
    shown.css = "output"
    shown.title = f"{shown.kind.replace('_', ' ')} for {_text(item.get('call_id'))}"
    output = item.get("output")
    if isinstance(output, dict) and output.get("type") in ("computer_screenshot", "input_image"):
        _image(shown, output.get("image_url"), output.get("file_id"))
    elif isinstance(output, list):
        for part in output:
            if isinstance(part, dict) and part.get("type") == "input_image":
                _image(shown, part.get("image_url"), part.get("file_id"))
            elif isinstance(part, dict) and ("stdout" in part or "stderr" in part):
                shown.blocks.append(("stdout", _cut(_text(part.get("stdout")))))
                if part.get("stderr"):
                    shown.blocks.append(("stderr", _cut(_text(part.get("stderr")))))
            else:
                shown.blocks.append(("output", pretty(part)))
    else:
        shown.blocks.append(("output", pretty(output)))


def _code(item: dict[str, Any], shown: ItemView) -> None:
    shown.title, shown.css = "code interpreter", "run"
    shown.blocks.append(("code", _cut(_text(item.get("code")))))
    for output in _list(item.get("outputs")):
        if isinstance(output, dict) and output.get("type") == "logs":
            shown.blocks.append(("logs", _cut(_text(output.get("logs")))))
        elif isinstance(output, dict) and output.get("type") == "image":
            _image(shown, output.get("url"), None)
    if item.get("container_id"):
        shown.text.append(f"container {_text(item.get('container_id'))}")


def _shell(item: dict[str, Any], shown: ItemView) -> None:
    shown.title, shown.css = shown.kind.replace("_", " "), "run"
    action = item.get("action")
    commands = action.get("commands") or action.get("command") if isinstance(action, dict) else None
    if commands:
        shown.blocks.append(("commands", "\n".join(map(_text, commands)) if isinstance(commands, list)
                             else _text(commands)))
    elif action is not None:
        shown.blocks.append(("action", pretty(action)))
    if item.get("output") is not None:
        _output(item, shown)
        shown.css = "run"


def _search(item: dict[str, Any], shown: ItemView) -> None:
    shown.title, shown.css = shown.kind.replace("_", " "), "search"
    found = item.get("action")
    action: dict[str, Any] = found if isinstance(found, dict) else {}
    query = action.get("query") or item.get("queries")
    if query:
        shown.text.append("query: " + (", ".join(map(_text, query)) if isinstance(query, list) else _text(query)))
    for source in _list(action.get("sources")):
        if isinstance(source, dict):
            shown.links.append((_text(source.get("title") or source.get("url")), _text(source.get("url"))))
    for result in _list(item.get("results")):
        if isinstance(result, dict):
            name = _text(result.get("filename") or result.get("file_id"))
            shown.blocks.append((name, _cut(_text(result.get("text")))))


def _image_call(item: dict[str, Any], shown: ItemView) -> None:
    shown.title, shown.css = "image generation", "run"
    result = item.get("result")
    if isinstance(result, str) and result:
        _image(shown, f"data:image/{_text(item.get('output_format') or 'png')};base64,{result}", None)
    if item.get("revised_prompt"):
        shown.text.append(_cut(_text(item.get("revised_prompt"))))


def _computer(item: dict[str, Any], shown: ItemView) -> None:
    shown.title, shown.css = "computer call", "call"
    shown.blocks.append(("action", pretty(item.get("action") or item.get("actions"))))
    for check in _list(item.get("pending_safety_checks")):
        if isinstance(check, dict):
            shown.text.append(f"safety check: {_text(check.get('message') or check.get('code'))}")


def _session_computer(item: dict[str, Any], shown: ItemView) -> None:
    """An Agents API session's ``computer_use_call``: what it did, and the screenshot after it when kept."""
    shown.title, shown.css = f"computer: {_text(item.get('title'))}", "call"
    output = item.get("output")
    if isinstance(output, dict):
        _image(shown, output.get("image_url"), output.get("file_id"))


def _command(item: dict[str, Any], shown: ItemView) -> None:
    """A session's ``command_execution`` (the hosted shell): the command, its output, its exit code."""
    shown.title, shown.css = "command", "run"
    shown.blocks.append(("command", _cut(_text(item.get("command")))))
    if item.get("output") is not None:
        shown.blocks.append(("output", _cut(_text(item.get("output")))))
    if item.get("exit_code") is not None:
        shown.text.append(f"exit code {_text(item.get('exit_code'))}")


def _approval_request(item: dict[str, Any], shown: ItemView) -> None:
    """A session's ``computer_use_approval_request`` item: what the desktop asked (never what was answered)."""
    shown.title, shown.css = "approval asked", "call"
    found = item.get("request")
    request: dict[str, Any] = found if isinstance(found, dict) else {}
    shown.text.append(_text(request.get("message") or request.get("origin") or request.get("type")))


def _sealed(item: dict[str, Any], shown: ItemView) -> None:
    shown.title, shown.css = "compaction", "reasoning"
    shown.blocks.append(("sealed", "compacted history (sealed: not shown)"))


_BUILDERS = {
    "message": _message, "reasoning": _reasoning,
    "function_call": _call, "mcp_call": _call, "custom_tool_call": _call, "mcp_approval_request": _call,
    "tool_search_call": _call,
    "function_call_output": _output, "custom_tool_call_output": _output, "computer_call_output": _output,
    "mcp_approval_response": _output, "local_shell_call_output": _output, "shell_call_output": _output,
    "apply_patch_call_output": _output,
    "code_interpreter_call": _code, "shell_call": _shell, "local_shell_call": _shell, "apply_patch_call": _shell,
    "web_search_call": _search, "file_search_call": _search, "image_generation_call": _image_call,
    "computer_call": _computer, "compaction": _sealed,
    "computer_use_call": _session_computer, "command_execution": _command,
    "computer_use_approval_request": _approval_request,
}


def clip(shown: ItemView, chars: int) -> bool:
    """Bound ``shown`` to ``chars`` characters of content in all (texts, blocks, images' data, links), the rest
    said as cut (a list page shows each item so, linking to the item's own page); True when anything was cut. An
    image that does not fit whole is named instead of shown."""
    shown.title, shown.status, shown.item_id = (_short(shown.title), _short(shown.status), _short(shown.item_id))
    room, cut = chars, False

    def take(text: str) -> str:
        nonlocal room, cut
        if len(text) <= room:
            room -= len(text)
            return text
        kept, room, cut = text[:room], 0, True
        return kept + f"… ({len(text) - len(kept)} more characters)"

    shown.text = [take(paragraph) for paragraph in shown.text]
    shown.blocks = [(_short(label), take(block)) for label, block in shown.blocks]
    images: list[str] = []
    for image in shown.images:
        if len(image) <= room:
            images.append(image)
            room -= len(image)
        else:
            cut = True
            shown.blocks.append(("image", f"an image of {len(image)} characters: on the item's own page"))
    shown.images = images
    shown.links = [(take(title), take(url)) for title, url in shown.links]
    return cut


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS] + "…"


def _image(shown: ItemView, url: Any, file_id: Any) -> None:
    if isinstance(url, str) and _IMAGE_DATA.fullmatch(url):
        shown.images.append(url)
    elif url or file_id:
        shown.blocks.append(("image", _text(file_id or url)[:500]))


def pretty(value: Any) -> str:
    """JSON (a string holding JSON too: a call's arguments) indented, credentials masked, sealed state left out."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return _cut(mask_text(value))
    if isinstance(value, str):
        return _cut(mask_text(value))
    shown = mask(_unsealed(value))
    try:
        return _cut(orjson.dumps(shown, option=orjson.OPT_INDENT_2, default=str).decode())
    except TypeError:  # past orjson's reach (an integer beyond 64 bits): the standard library's JSON says it
        return _cut(json.dumps(shown, indent=2, default=str))


def _unsealed(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: "(sealed: not shown)" if key in SEALED else _unsealed(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_unsealed(inner) for inner in value]
    return value


def _list(value: Any) -> list[Any]:
    """A field that should hold a list, as one (anything else: nothing to show)."""
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return "" if value is None else mask_text(value if isinstance(value, str) else str(value))


@contextmanager
def blocks_up_to(chars: int) -> Iterator[None]:
    """Views built inside cut each block at ``chars`` instead of :data:`SHOWN_CHARS` (an item's own page, which
    :func:`clip` then bounds as a whole)."""
    token = _SHOWN.set(chars)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def _cut(text: str) -> str:
    limit = _SHOWN.get()
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def tools_used(response: dict[str, Any]) -> list[str]:
    """The tools a response offered or called, by type (a function by its name)."""
    names: list[str] = []
    for tool in _list(response.get("tools")):
        if isinstance(tool, dict):
            name = tool.get("name") if tool.get("type") == "function" else tool.get("type")
            if isinstance(name, str) and name not in names:
                names.append(name)
    for item in _list(response.get("output")):
        if isinstance(item, dict) and str(item.get("type", "")).endswith("_call"):
            name = item.get("name") or item.get("type")
            if isinstance(name, str) and name not in names:
                names.append(name)
    return names


def summary_text(response: dict[str, Any], limit: int = 160) -> str:
    """The first words of a response's answer, for a row of the logs: a message's text, else what the answer is —
    a refusal's words, the tool calls it made by name (a function call waiting for the client, a server tool's
    call), an error's message."""
    calls: list[str] = []
    for item in _list(response.get("output")):
        if isinstance(item, dict) and item.get("type") == "message":
            for part in _list(item.get("content")):
                if isinstance(part, dict) and part.get("type") == "refusal":
                    return _summary_cut("refused: " + mask_text(_text(part.get("refusal"))), limit)
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    return _summary_cut(mask_text(part["text"]), limit)
        elif isinstance(item, dict) and str(item.get("type", "")).endswith("_call"):
            name = str(item["name"]) if isinstance(item.get("name"), str) else str(item.get("type"))
            calls.append(f"{name}()" if item.get("type") in ("function_call", "custom_tool_call") else name)
    if calls:
        return _summary_cut("calls " + ", ".join(calls), limit)
    error = response.get("error")
    if isinstance(error, dict):
        return "error: " + mask_text(str(error.get("message", "")))[:limit]
    return ""


def _summary_cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
