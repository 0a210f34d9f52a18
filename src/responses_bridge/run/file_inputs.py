"""Content parts that name one of the tenant's files (``input_file`` / ``input_image`` with ``file_id``), resolved
before the engine translates (the engine does no I/O) or relays to a native backend: the request's input, a
prompt's variables and the history (a chain's or a conversation's stored items keep their ``file_id``, as OpenAI
lists them, and are resolved again each turn).

What the upstream gets is what it reads (no backend can fetch the bridge's files), in parts both Chat Completions
(engine/content_parts.py) and a native Responses backend take:

* ``input_image``: the file as a ``data:`` URL, its ``detail`` as sent; a file that is not an image is a 400.
* ``input_file``: the text of a kind the retrieval pipeline extracts (text, Markdown, HTML, JSON, CSV, DOCX, PDF),
  as a text part headed with the file's name; where the backend reads files (the profile's ``openai_fields``:
  OpenAI's Chat Completions takes ``file`` parts) a PDF or another kind goes as an ``input_file`` with its bytes
  as ``file_data`` (and its ``detail``, which a native backend reads);
  any other kind on another backend is a 400 naming the part's ``file_id``.

The stored items keep the parts as sent (``file_id``, ``detail``): only the upstream's copy is resolved. One
request inlines at most :data:`MAX_REQUEST_FILE_BYTES` of files in all and :data:`MAX_REQUEST_TEXT_CHARS` of their
extracted text in all, each file read once however often it is named, and reserves the request memory each holds
(its text too) until the response ends (services/files/inputs.py).
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from ..engine.options import EngineOptions
from ..engine.state import RenderedPrompt
from ..fairness.memory_charge import reserve_references
from ..protocol.errors import APIError, invalid_request
from ..protocol.files.file_refs import LoadedFile
from ..protocol.responses.input_items import messages_only
from ..protocol.responses.item_references import ItemFinder, has_references, resolve_stored
from ..protocol.responses.request import ResponsesRequest
from ..protocol.tools.call_outputs import pair_call_outputs

MAX_REQUEST_FILE_BYTES = 32 * 1024 * 1024
"""Bytes of stored files one request may inline, in all. OpenAI takes 50 MB; here the request sent upstream must
stay within what the bridge takes from a client (64 MiB: ``RESPONSES_BRIDGE_MAX_REQUEST_BYTES``' default, and
Envoy's buffer for the body the sidecar hands it), and a file goes as base64, a third larger."""
MAX_REQUEST_TEXT_CHARS = 24_000_000
"""Characters of text one request's files may give, in all: what one file may give for search
(services/files/retrieval/bounds.py), no longer per file — a small file can hold a great deal of text (a 10 KB DOCX, 10
million characters), and the files one request names are summed."""


@dataclass
class PreparedInput:
    """What the upstream gets, where it differs from what is stored: the history, the input (None: the request's
    own items) and the prompt, with their parts naming a file resolved by ``files`` (None when none did), whose
    memory the run gives back when it ends."""

    history: list[dict[str, Any]]
    sent_input: list[dict[str, Any]] | None
    prompt: RenderedPrompt | None
    files: FileResolution | None


def prepared_at_once(request: ResponsesRequest, history: list[dict[str, Any]],
                     prompt: RenderedPrompt | None) -> PreparedInput | None:
    """:func:`prepare_input`'s answer when it has nothing to do (messages only, no part naming a file: nearly every
    request), without a coroutine; None when it has."""
    if not messages_only(request.input_items):
        return None
    if names_files(history) or names_files(request.input_items) or (
            prompt is not None and names_files(prompt.input_items)):
        return None
    return PreparedInput(history, None, prompt, None)


async def prepare_input(request: ResponsesRequest, history: list[dict[str, Any]], prompt: RenderedPrompt | None,
                        loader: FileLoader | None, options: EngineOptions, tenant: str, *,
                        items: ItemFinder | None = None) -> PreparedInput:
    """The request's input made whole once its history is loaded, for every run kind: ``item_reference`` items
    replaced by the items they name (in the stored input too; one not in the history is looked up among the
    tenant's stored ``items``), call outputs without ``call_id`` paired (protocol/tools/call_outputs.py), and the parts
    naming a file resolved for the upstream (here)."""
    if not messages_only(request.input_items):  # references and call outputs are items of their own
        if has_references(request.input_items):
            request.input_items[:] = await resolve_stored(history, request.input_items, items, tenant=tenant,
                                                          reserve=reserve_references)
        pair_call_outputs(history, request.input_items)
    prompt_items = prompt.input_items if prompt is not None else []
    if not (names_files(history) or names_files(request.input_items) or names_files(prompt_items)):
        return PreparedInput(history, None, prompt, None)
    if loader is None:
        raise APIError(400, "Content parts naming a file ('file_id') are not supported here.", param="input",
                       code="unsupported_parameter")
    resolution = FileResolution(loader, options, tenant)
    try:
        history = await resolution.resolve(history, "history")
        sent_input = await resolution.resolve(request.input_items, "input")
        if prompt is not None:  # a prompt's image or file variable may name a file too
            prompt = dataclasses.replace(prompt, input_items=await resolution.resolve(prompt_items, "prompt"))
    except BaseException:
        resolution.release()
        raise
    return PreparedInput(history, sent_input, prompt, resolution)


class FileLoader(Protocol):
    async def load_file(self, file_id: str, *, tenant: str, max_bytes: int, want_text: bool, pdf_as_file: bool,
                        param: str, max_text_chars: int) -> LoadedFile:
        """``tenant``'s file read (404 ``not_found`` for an unknown one, another tenant's among them; 400
        ``file_too_large`` past ``max_bytes``, ``invalid_file`` past ``max_text_chars`` of text; the memory
        budget's 503 when its holder has no room for the text); see services/files/inputs.py."""


class FileResolution:
    """One request's resolution: the files it loaded (each once), what they hold of the memory budget."""

    def __init__(self, loader: FileLoader, options: EngineOptions, tenant: str) -> None:
        self._loader = loader
        self._options = options
        self._tenant = tenant
        self._loaded: dict[tuple[str, bool], LoadedFile] = {}
        self._bytes = 0
        self._chars = 0  # characters of text the loaded files gave
        self._urls: dict[int, str] = {}  # a loaded file's data URL, by the file's identity

    @property
    def bytes(self) -> int:
        """The stored bytes of the files loaded so far."""
        return self._bytes

    def release(self) -> None:
        """Give back the memory the loaded files reserved (idempotent: every end of the run may call it)."""
        loaded, self._loaded = self._loaded, {}
        self._urls = {}
        for file in loaded.values():
            file.release()

    async def resolve(self, items: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
        """``items`` with every part naming a file replaced by what the upstream reads; ``items`` itself when no
        part names one (the common case costs one pass and no copy). ``where``: the items' parameter
        (``input``, or ``history`` for stored items), named in errors."""
        resolved: list[dict[str, Any]] | None = None
        for index, item in enumerate(items):
            new = await self._item(item, f"{where}[{index}]")
            if new is not item:
                if resolved is None:
                    resolved = list(items)
                resolved[index] = new
        return items if resolved is None else resolved

    async def _item(self, item: dict[str, Any], param: str) -> dict[str, Any]:
        if item.get("type") == "message":
            key = "content"
        elif item.get("type") in ("function_call_output", "custom_tool_call_output"):
            key = "output"
        else:
            return item
        parts = item.get(key)
        if not isinstance(parts, list) or not any("file_id" in part for part in parts):
            return item
        new_parts = [await self._part(part, f"{param}.{key}[{i}]") if "file_id" in part else part
                     for i, part in enumerate(parts)]
        return {**item, key: new_parts}

    async def _part(self, part: dict[str, Any], param: str) -> dict[str, Any]:
        file_id: str = part["file_id"]
        image = part["type"] == "input_image"
        file = await self._load(file_id, text=not image, param=f"{param}.file_id")
        if image:
            if not file.media_type.startswith("image/"):
                raise invalid_request(f"File '{file_id}' is not an image ({file.media_type}): 'input_image' takes "
                                      "an image file.", param=f"{param}.file_id", code="invalid_image")
            return {"type": "input_image", "image_url": self._data_url(file), "detail": part.get("detail", "auto")}
        if file.text is not None:
            return {"type": "input_text", "text": f"[file: {file.filename}]\n{file.text}"}
        if file.media_type.startswith("image/"):
            return {"type": "input_image", "image_url": self._data_url(file), "detail": "auto"}
        if self._options.openai_fields:
            resolved = {"type": "input_file", "file_data": self._data_url(file), "filename": file.filename}
            if "detail" in part:  # a native backend takes it; Chat Completions' file part has no place for it
                resolved["detail"] = part["detail"]
            return resolved
        raise invalid_request(
            f"File '{file_id}' ({file.media_type}) cannot be given to this upstream: it reads the text of text, "
            "Markdown, HTML, JSON, CSV, PDF and DOCX files, and images.", param=f"{param}.file_id",
            code="unsupported_file")

    def _data_url(self, file: LoadedFile) -> str:
        """The file as a ``data:`` URL, made once: every part naming it shares the one string, and the bytes it
        was made from are let go (what the reservation covers is the URL from then on)."""
        url = self._urls.get(id(file))
        if url is None:
            url = self._urls[id(file)] = (f"data:{file.media_type};base64,"
                                          f"{base64.b64encode(file.data).decode('ascii')}")
            file.data = b""
        return url

    async def _load(self, file_id: str, *, text: bool, param: str) -> LoadedFile:
        key = (file_id, text)
        if key in self._loaded:
            return self._loaded[key]
        file = await self._loader.load_file(file_id, tenant=self._tenant,
                                            max_bytes=MAX_REQUEST_FILE_BYTES - self._bytes, want_text=text,
                                            pdf_as_file=self._options.openai_fields, param=param,
                                            max_text_chars=MAX_REQUEST_TEXT_CHARS - self._chars)
        self._loaded[key] = file
        self._bytes += file.size
        self._chars += len(file.text or "")
        return file




def names_files(items: list[dict[str, Any]]) -> bool:
    """Does any message or call output of ``items`` have a part naming a file? One pass, no allocation: it runs
    over every request's history and input (parts are objects once normalized, and stored as such)."""
    for item in items:
        parts = item.get("content") or item.get("output")
        if parts.__class__ is list:
            for part in parts:
                if "file_id" in part:
                    return True
    return False
