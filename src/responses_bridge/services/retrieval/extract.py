"""Text out of an uploaded file, chosen by the file name's extension (as OpenAI chooses: a file whose
extension it does not know fails with ``unsupported_file``; one it cannot read fails with ``invalid_file``).

Plain text and source code are decoded (UTF-8, or UTF-16/32 with a byte-order mark); Markdown stays as written
(its markup is text the model reads well); HTML loses its tags, scripts and styles; JSON and JSON Lines are
re-rendered indented, so keys and values are words the keyword index sees; CSV rows become ``column: value``
lines, so every chunk carries its column names; PDF text comes from ``pypdf``, DOCX text from ``docx2txt``.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

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


def extract_text(path: Path, filename: str) -> str:
    """The file's text. Synchronous and CPU-bound (a large PDF takes seconds): callers run it in a thread."""
    extension = Path(filename).suffix.lower()
    if extension not in SUPPORTED_EXTENSIONS:
        shown = extension or "(none)"
        raise ExtractionError("unsupported_file", f"Files with extension {shown} are not supported for search.")
    try:
        if extension == ".pdf":
            text = _pdf(path)
        elif extension == ".docx":
            text = _docx(path)
        else:
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
    except OSError as exc:
        raise ExtractionError("invalid_file", f"The file could not be read: {exc.strerror or exc}.") from exc
    if not text.strip():
        raise ExtractionError("invalid_file", "No text could be extracted from the file.")
    return text


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
    except ValueError as exc:
        raise ExtractionError("invalid_file", f"The file is not valid JSON (line {_line(exc)}).") from exc


def _jsonl(raw: str) -> str:
    records: list[str] = []
    for number, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.dumps(json.loads(line), ensure_ascii=False))
            except ValueError as exc:
                raise ExtractionError("invalid_file", f"Line {number} of the file is not valid JSON.") from exc
    return "\n".join(records)


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


def _pdf(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError("invalid_file", "The PDF is encrypted.")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError,
            NotImplementedError) as exc:
        # pypdf raises its own errors for most damage and plain ones for some (a bad object reference, a
        # malformed stream): all of them mean the same thing here
        raise ExtractionError("invalid_file", "The PDF could not be parsed.") from exc
    return "\n\n".join(page.strip() for page in pages if page.strip())


def _docx(path: Path) -> str:
    import docx2txt

    try:
        text: str = docx2txt.process(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError, ElementTree.ParseError) as exc:
        raise ExtractionError("invalid_file", "The DOCX file could not be parsed.") from exc
    return text.strip()
