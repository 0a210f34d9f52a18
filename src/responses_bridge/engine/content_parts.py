"""A message's content parts in Chat Completions' shape: text, images, and files (text files inlined as text,
others as ``file`` parts), with the media type read from a data URL or the file name.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..protocol.errors import invalid_request

# Media types whose file_data is sent to the model as text: every backend reads text, few read files.
_TEXT_MEDIA_PREFIXES = ("text/", "application/json", "application/xml", "application/x-yaml", "application/yaml")


_TEXT_FILE_SUFFIXES = (".txt", ".md", ".csv", ".json", ".xml", ".yaml", ".yml", ".py", ".log", ".html", ".tsv")


def user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if len(parts) == 1 and parts[0]["type"] in ("input_text", "output_text"):
        text: str = parts[0]["text"]
        return text  # a plain string is what every chat template accepts
    return [chat_part(part) for part in parts]


def chat_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal":
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image":
        return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail", "auto")}}
    if kind == "input_file":
        return _file_part(part)
    raise invalid_request(f"Content part type '{kind}' cannot be sent to the model.", code="unsupported_content_type")


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
