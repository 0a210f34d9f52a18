"""Text out of an uploaded file, chosen by the file name's extension (as OpenAI chooses: a file whose
extension it does not know fails with ``unsupported_file``; one it cannot read fails with ``invalid_file``).

Plain text and source code are decoded (UTF-8, or UTF-16/32 with a byte-order mark); Markdown stays as written
(its markup is text the model reads well); HTML loses its tags, scripts and styles; JSON and JSON Lines are
re-rendered indented, so keys and values are words the keyword index sees; CSV rows become ``column: value``
lines, so every chunk carries its column names; PDF text comes from ``pypdf``, DOCX text from its XML parts, read
as a stream. Every extractor stays inside the file's :class:`~.bounds.Budget` (decompressed bytes, characters of
text, seconds): a file past one fails with ``invalid_file`` and the reason, whatever its format.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zipfile
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.parsers import expat

from .bounds import MAX_TEXT_CHARS, BoundedReader, BoundExceeded, Budget

TEXT_EXTENSIONS = frozenset({
    ".txt", ".text", ".md", ".markdown", ".rst", ".log", ".tex", ".xml", ".yaml", ".yml", ".toml", ".ini",
    ".py", ".pyi", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".scala", ".c", ".h", ".cc", ".cpp",
    ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".pl", ".sh", ".bash", ".zsh", ".sql", ".css", ".swift", ".r",
    ".lua", ".m", ".dart",
})
HTML_EXTENSIONS = frozenset({".html", ".htm", ".xhtml"})
JSON_EXTENSIONS = frozenset({".json"})
JSONL_EXTENSIONS = frozenset({".jsonl", ".ndjson"})
CSV_EXTENSIONS = frozenset({".csv", ".tsv"})
SUPPORTED_EXTENSIONS = (TEXT_EXTENSIONS | HTML_EXTENSIONS | JSON_EXTENSIONS | JSONL_EXTENSIONS | CSV_EXTENSIONS
                        | {".pdf", ".docx"})

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class ExtractionError(Exception):
    """Why a file gives no text: ``code`` is OpenAI's ``last_error.code`` (``unsupported_file`` or
    ``invalid_file``), ``message`` says what was wrong without echoing the file's content."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def extract_text(path: Path, filename: str, max_text_chars: int = MAX_TEXT_CHARS,
                 on_text: Callable[[int], None] | None = None) -> str:
    """The file's text, at most ``max_text_chars`` characters of it (else ``invalid_file``); ``on_text``: told of
    the characters as they come (:class:`~.bounds.Budget`), and may stop the extraction by raising. Synchronous and
    CPU-bound (a large PDF takes seconds): callers run it in a thread."""
    extension = Path(filename).suffix.lower()
    if extension not in SUPPORTED_EXTENSIONS:
        shown = extension or "(none)"
        raise ExtractionError("unsupported_file", f"Files with extension {shown} are not supported for search.")
    budget = Budget(max_text_chars=max_text_chars, on_text=on_text)
    try:
        if extension == ".pdf":
            text = _pdf(path, budget)  # each spends the text it gives as it goes
        elif extension == ".docx":
            text = _docx(path, budget)
        else:
            budget.spend_bytes(path.stat().st_size)  # read whole: refused before the read when too large
            raw = _decode(path.read_bytes())
            if extension in HTML_EXTENSIONS:
                text = _html(raw)
            elif extension in JSON_EXTENSIONS:
                text = _json(raw)
            elif extension in JSONL_EXTENSIONS:
                text = _jsonl(raw)
            elif extension in CSV_EXTENSIONS:
                text = _csv(raw, "\t" if extension == ".tsv" else ",")
            else:
                text = raw
            budget.spend_text(len(text))
    except OSError as exc:
        raise ExtractionError("invalid_file", f"The file could not be read: {exc.strerror or exc}.") from exc
    except BoundExceeded as exc:
        raise ExtractionError("invalid_file", exc.message) from None
    if not text.strip():
        raise ExtractionError("invalid_file", "No text could be extracted from the file.")
    return text


def text_bound(path: Path, filename: str) -> int | None:
    """The most characters :func:`extract_text` can give for the file, read off the file without extracting it
    (None: only the extraction can tell — a PDF, or JSON and CSV, which are re-rendered longer than written). Plain
    text and HTML decode to no more characters than their bytes; a DOCX's text is at most the bytes its parts
    decompress to, which its zip directory states and the zip reader never reads past (a member stating less is
    cut there, its check failing). Callers hold room for the bound before the extraction, so that requests
    extracting at once never each hold a part of their text while waiting for the rest."""
    extension = Path(filename).suffix.lower()
    try:
        if extension in TEXT_EXTENSIONS or extension in HTML_EXTENSIONS:
            return path.stat().st_size
        if extension == ".docx":
            with zipfile.ZipFile(path) as archive:
                return sum(info.file_size for info in archive.infolist()
                           if any(pattern.fullmatch(info.filename) for pattern in _DOCX_PARTS))
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        return None  # the extraction says what is wrong with the file
    return None


def _decode(data: bytes) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise ExtractionError("invalid_file", "The file is not valid text in its declared encoding.") from exc
    if b"\x00" in data:
        raise ExtractionError("invalid_file", "The file holds binary data, not text.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExtractionError("invalid_file", "The file is not valid UTF-8 text.") from exc


class _TextOfHTML(HTMLParser):
    """Character data outside ``script``/``style``/``template``, with a line break at each block element."""

    _SKIP = frozenset({"script", "style", "template", "noscript", "head"})
    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section",
                         "article", "table", "ul", "ol", "blockquote", "header", "footer", "dd", "dt", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html(raw: str) -> str:
    parser = _TextOfHTML()
    parser.feed(raw)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _render_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1)


def _json(raw: str) -> str:
    try:
        return _render_json(json.loads(raw))
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise ExtractionError("invalid_file", f"The file is not valid JSON (line {_line(exc)}).") from exc


def _jsonl(raw: str) -> str:
    records: list[str] = []
    for number, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.dumps(json.loads(line), ensure_ascii=False))
            except RecursionError:
                raise _too_deep(number) from None
            except ValueError as exc:
                raise ExtractionError("invalid_file", f"Line {number} of the file is not valid JSON.") from exc
    return "\n".join(records)


def _too_deep(line: int | None = None) -> ExtractionError:
    """JSON nested deeper than the parser goes (about a thousand levels: no real document is): refused, as a
    file that cannot be read, rather than crashing the worker with a RecursionError."""
    where = "The file's JSON" if line is None else f"Line {line} of the file"
    return ExtractionError("invalid_file", f"{where} is nested too deeply to be read.")


def _line(exc: ValueError) -> int:
    return getattr(exc, "lineno", 0)


def _csv(raw: str, delimiter: str) -> str:
    try:
        rows = [row for row in csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter) if any(row)]
    except csv.Error as exc:
        raise ExtractionError("invalid_file", f"The file is not valid CSV: {exc}.") from exc
    if len(rows) < 2:
        return "\n".join(delimiter.join(row) for row in rows)
    header, body = rows[0], rows[1:]
    lines = []
    for row in body:
        cells = [f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {cell}"
                 for i, cell in enumerate(row) if cell]
        lines.append("; ".join(cells))
    return "\n".join(lines)


def _pdf(path: Path, budget: Budget) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError as error:
        from ....extras import explain  # the extra not installed, or installed and its import broken: which

        raise ExtractionError("server_error", explain(
            "retrieval", "pypdf", error, "Reading PDF files needs the retrieval extra, which is not installed here: "
            "pip install 'responses-bridge[retrieval]'", public=True) + ".") from None

    pages: list[str] = []
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError("invalid_file", "The PDF is encrypted.")
        for page in reader.pages:  # pypdf bounds each stream it inflates; the pages together are bounded here
            budget.check()
            text = (page.extract_text() or "").strip()
            budget.spend_text(len(text))
            if text:
                pages.append(text)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError,
            NotImplementedError, MemoryError) as exc:
        # pypdf raises its own errors for most damage and plain ones for some (a bad object reference, a
        # malformed stream): all of them mean the same thing here
        raise ExtractionError("invalid_file", "The PDF could not be parsed.") from exc
    return "\n\n".join(pages)


_WORD = "http://schemas.openxmlformats.org/wordprocessingml/2006/main}"  # expat's name for w:x is _WORD + "x"
_DOCX_PARTS = (re.compile(r"word/header[0-9]*\.xml"), re.compile(r"word/document\.xml"),
               re.compile(r"word/footer[0-9]*\.xml"))
"""The parts whose text a DOCX gives, in this order: headers, the body, footers (as docx2txt reads them)."""
_BREAKS = {_WORD + "tab": "\t", _WORD + "br": "\n", _WORD + "cr": "\n", _WORD + "p": "\n\n"}
_TEXT = _WORD + "t"
_READ = 256 * 1024


def _docx(path: Path, budget: Budget) -> str:
    """The text of the parts named in ``_DOCX_PARTS``, each fed from its zip member through the budget to an
    expat parser that builds nothing (no element tree): a part is never decompressed or held whole, so a bomb
    costs at most the budget's bytes of reading and the text it gives."""
    parts: list[str] = []
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "word/document.xml" not in names:
                raise ExtractionError("invalid_file", "The DOCX file has no document part.")
            for pattern in _DOCX_PARTS:
                for name in names:
                    if pattern.fullmatch(name):
                        with archive.open(name) as member:
                            _docx_part(BoundedReader(member, budget), budget, parts)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, EOFError, expat.ExpatError,
            NotImplementedError) as exc:
        raise ExtractionError("invalid_file", "The DOCX file could not be parsed.") from exc
    return "".join(parts).strip()


def _docx_part(source: BoundedReader, budget: Budget, parts: list[str]) -> None:
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    inside_text = 0

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal inside_text
        if name == _TEXT:
            inside_text += 1
        else:
            brk = _BREAKS.get(name)
            if brk is not None:
                parts.append(brk)

    def end(name: str) -> None:
        nonlocal inside_text
        if name == _TEXT:
            inside_text -= 1

    def text(data: str) -> None:
        if inside_text:
            parts.append(data)
            budget.spend_text(len(data))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    while chunk := source.read(_READ):
        parser.Parse(chunk, False)
    parser.Parse(b"", True)
