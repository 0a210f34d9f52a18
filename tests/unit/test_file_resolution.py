"""The run's resolution of parts naming a file: what each kind becomes, per profile; each file read once; the
request's bound; the memory given back."""

from __future__ import annotations

from typing import Any

import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.files.file_refs import LoadedFile
from responses_bridge.run.file_inputs import (
    MAX_REQUEST_FILE_BYTES,
    MAX_REQUEST_TEXT_CHARS,
    FileResolution,
    names_files,
)

PDF = b"%PDF-1.4 lamps"


class Loader:
    def __init__(self, files: dict[str, tuple[str, str, bytes]]) -> None:
        self.files = files  # id -> (filename, media type, bytes)
        self.loads: list[tuple[str, bool, int]] = []
        self.text_left: list[int] = []  # max_text_chars of each load
        self.released: list[str] = []

    async def load_file(self, file_id: str, *, tenant: str, max_bytes: int, want_text: bool, pdf_as_file: bool,
                        param: str, max_text_chars: int) -> LoadedFile:
        assert tenant == "t" and max_text_chars > 0
        self.loads.append((file_id, want_text, max_bytes))
        self.text_left.append(max_text_chars)
        name, media, data = self.files[file_id]
        if len(data) > max_bytes:
            raise APIError(400, "too large", param=param, code="file_too_large")
        as_text = want_text and (name.endswith(".txt") or (name.endswith(".pdf") and not pdf_as_file))
        return LoadedFile(name, media, len(data), b"" if as_text else data,
                          data.decode(errors="replace") if as_text else None,
                          release=lambda: self.released.append(file_id))


def message(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "id": "msg_1", "role": "user", "content": [{"type": "input_text", "text": "x"}, *parts]}


FILES = {"file-t": ("a.txt", "text/plain", b"hello"), "file-i": ("p.png", "image/png", b"\x89PNG"),
         "file-p": ("r.pdf", "application/pdf", PDF), "file-b": ("b.bin", "application/octet-stream", b"\x00")}


async def test_each_kind_becomes_what_a_generic_backend_reads() -> None:
    loader = Loader(FILES)
    resolution = FileResolution(loader, EngineOptions(), "t")
    items = [message({"type": "input_file", "file_id": "file-t"}, {"type": "input_image", "file_id": "file-i",
                                                                   "detail": "original"},
                     {"type": "input_file", "file_id": "file-p"})]
    [resolved] = await resolution.resolve(items, "input")
    assert resolved["content"][1] == {"type": "input_text", "text": "[file: a.txt]\nhello"}
    assert resolved["content"][2] == {"type": "input_image", "image_url": "data:image/png;base64,iVBORw==",
                                      "detail": "original"}
    assert resolved["content"][3]["type"] == "input_text"
    assert items[0]["content"][1] == {"type": "input_file", "file_id": "file-t"}  # the stored item is untouched
    with pytest.raises(APIError) as caught:
        await resolution.resolve([message({"type": "input_file", "file_id": "file-b"})], "input")
    assert (caught.value.param, caught.value.code) == ("input[0].content[1].file_id", "unsupported_file")
    with pytest.raises(APIError) as caught:
        await resolution.resolve([message({"type": "input_image", "file_id": "file-t"})], "input")
    assert caught.value.code == "invalid_image"


async def test_a_backend_that_reads_files_gets_the_pdf_and_other_kinds_as_files() -> None:
    resolution = FileResolution(Loader(FILES), EngineOptions(openai_fields=True), "t")
    [resolved] = await resolution.resolve([message({"type": "input_file", "file_id": "file-p", "detail": "high"},
                                                   {"type": "input_file", "file_id": "file-b"})], "input")
    assert resolved["content"][1] == {"type": "input_file", "filename": "r.pdf", "detail": "high",
                                      "file_data": "data:application/pdf;base64,JVBERi0xLjQgbGFtcHM="}
    assert resolved["content"][2]["file_data"] == "data:application/octet-stream;base64,AA=="


async def test_a_file_is_read_once_the_bound_shrinks_and_the_memory_goes_back() -> None:
    loader = Loader(FILES)
    resolution = FileResolution(loader, EngineOptions(), "t")
    part = {"type": "input_file", "file_id": "file-t"}
    history = [message(part)]
    items = [message(part, {"type": "input_image", "file_id": "file-i"}),
             {"type": "function_call_output", "call_id": "c", "output": [part]}]
    assert names_files(history) and names_files(items) and not names_files([message()])
    await resolution.resolve(history, "history")
    resolved = await resolution.resolve(items, "input")
    assert resolved[1]["output"][0]["type"] == "input_text"
    assert loader.loads == [("file-t", True, MAX_REQUEST_FILE_BYTES), ("file-i", False, MAX_REQUEST_FILE_BYTES - 5)]
    # the text the request's files give is bounded in all, not per file: the second file may give what is left
    assert loader.text_left == [MAX_REQUEST_TEXT_CHARS, MAX_REQUEST_TEXT_CHARS - len("hello")]
    resolution.release()
    resolution.release()  # idempotent
    assert sorted(loader.released) == ["file-i", "file-t"]


async def test_parts_naming_one_image_share_its_data_url_and_its_bytes_are_let_go() -> None:
    loader = Loader(FILES)
    resolution = FileResolution(loader, EngineOptions(), "t")
    image = {"type": "input_image", "file_id": "file-i"}
    [resolved] = await resolution.resolve([message(image, {**image, "detail": "low"})], "input")
    assert resolved["content"][1]["image_url"] is resolved["content"][2]["image_url"]
    assert resolved["content"][2]["detail"] == "low" and len(loader.loads) == 1
    assert all(not file.data for file in resolution._loaded.values())


async def test_items_naming_no_file_are_returned_as_they_are() -> None:
    items = [message(), {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]
    assert await FileResolution(Loader({}), EngineOptions(), "t").resolve(items, "input") is items
