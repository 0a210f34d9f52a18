"""A message's content parts in Chat Completions' shape: text, images, audio (where the upstream takes it), and files
(text files inlined as text, others as ``file`` parts), with the media type read from a data URL or the file name.
An ``input_file``'s ``detail`` has no place in Chat Completions' ``file`` part: it is kept in the stored item and
goes to native backends only.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..protocol.errors import invalid_request
from .options import EngineOptions

# Media types whose file_data is sent to the model as text: every backend reads text, few read files.
_TEXT_MEDIA_PREFIXES = ("text/", "application/json", "application/xml", "application/x-yaml", "application/yaml")


_TEXT_FILE_SUFFIXES = (".txt", ".md", ".csv", ".json", ".xml", ".yaml", ".yml", ".py", ".log", ".html", ".tsv")


def user_content(parts: list[dict[str, Any]], options: EngineOptions) -> str | list[dict[str, Any]]:
    if len(parts) == 1 and parts[0]["type"] in ("input_text", "output_text"):
        text: str = parts[0]["text"]
        return text  # a plain string is what every chat template accepts
    return [chat_part(part, options) for part in parts]


def chat_part(part: dict[str, Any], options: EngineOptions) -> dict[str, Any]:
    """One part as Chat Completions takes it. Parts naming a stored file (``file_id``) were resolved by the run
    (run/file_inputs.py); one reaching here is a bug, not the client's."""
    kind = part["type"]
    if "file_id" in part:  # a path that resolves no file parts (none should remain): a 400, never a KeyError
        raise invalid_request(f"'{kind}' parts naming a file ('file_id') cannot be sent to the model here.",
                              param="file_id", code="unsupported_parameter")
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal":
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image":
        return {"type": "image_url", "image_url": {"url": part["image_url"],
                                                   "detail": image_detail(part.get("detail"), options)}}
    if kind == "input_file":
        return _file_part(part)
    if kind == "input_audio":
        if not options.openai_fields:
            raise invalid_request("'input_audio' parts cannot be sent to this upstream: its Chat Completions does "
                                  "not take audio (an upstream with the openai profile does).",
                                  param="input_audio", code="unsupported_content_type")
        return {"type": "input_audio", "input_audio": dict(part["input_audio"])}
    raise invalid_request(f"Content part type '{kind}' cannot be sent to the model.", code="unsupported_content_type")


def image_detail(detail: str | None, options: EngineOptions) -> str:
    """``detail`` as the upstream takes it: OpenAI's Chat Completions (``openai_fields``) knows ``original``;
    other backends know ``low``, ``high`` and ``auto`` (vLLM's request model refuses another value), so
    ``original`` (the image at full resolution) is sent to them as ``high``, the most they render (docs/api.md)."""
    if detail is None:
        return "auto"
    if detail == "original" and not options.openai_fields:
        return "high"
    return detail


def _file_part(part: dict[str, Any]) -> dict[str, Any]:
    filename = part.get("filename")
    data = part.get("file_data")
    if data is None:
        url = part["file_url"]
        if url.startswith("data:"):
            data = url
        else:
            raise invalid_request(
                "input_file.file_url must be a data: URL; Chat Completions upstreams cannot fetch files. "
                "Send the content as 'file_data'.", param="input_file.file_url", code="unsupported_parameter")
    media_type, payload = _split_data_url(data)
    if _is_text(media_type, filename):
        try:
            text = base64.b64decode(payload, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise invalid_request("input_file.file_data is not valid base64-encoded UTF-8 text.",
                                  param="input_file.file_data") from None
        header = f"[file: {filename}]\n" if filename else ""
        return {"type": "text", "text": header + text}
    file: dict[str, Any] = {"file_data": data if data.startswith("data:") else
                            f"data:{media_type or 'application/octet-stream'};base64,{payload}"}
    if filename:
        file["filename"] = filename
    return {"type": "file", "file": file}


def _split_data_url(data: str) -> tuple[str | None, str]:
    if data.startswith("data:") and "," in data:
        head, payload = data[5:].split(",", 1)
        return head.split(";", 1)[0] or None, payload
    return None, data


def _is_text(media_type: str | None, filename: str | None) -> bool:
    if media_type:
        return media_type.startswith(_TEXT_MEDIA_PREFIXES)
    if not filename:
        return False
    return filename.lower().endswith(_TEXT_FILE_SUFFIXES)
