"""Text extraction for vector store ingestion: each supported format from a small file made here, and the
failures a bad or unknown file gives (OpenAI's ``last_error`` codes)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from responses_bridge.services.files.retrieval.extract import ExtractionError, extract_text


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def pdf_with_text(pages: list[str]) -> bytes:
    """A PDF written by hand: one Helvetica text line per page, with a correct cross-reference table."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * index for index in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{page_id} 0 R" for page_id in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for index, text in enumerate(pages):
        stream = f"BT /F1 18 Tf 50 700 Td ({text}) Tj ET".encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {page_ids[index] + 1} 0 R "
                       "/Resources << /Font << /F1 3 0 R >> >> >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def docx_with_paragraphs(paragraphs: list[str]) -> bytes:
    import io

    body = "".join(f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>" for text in paragraphs)
    document = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
                f"<w:body>{body}</w:body></w:document>")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types '
                         'xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>')
        archive.writestr("word/document.xml", document)
    return buffer.getvalue()


def test_plain_text_and_markdown_are_kept_as_written(tmp_path: Path) -> None:
    assert extract_text(write(tmp_path, "a", "héllo\nworld\n"), "notes.txt") == "héllo\nworld\n"
    markdown = "# Title\n\n* item with `code`\n"
    assert extract_text(write(tmp_path, "b", markdown), "README.md") == markdown


def test_text_with_a_byte_order_mark_is_decoded_by_it(tmp_path: Path) -> None:
    assert extract_text(write(tmp_path, "a", "grüße".encode("utf-16")), "a.txt") == "grüße"
    assert extract_text(write(tmp_path, "b", b"\xef\xbb\xbfplain"), "b.txt") == "plain"


def test_html_loses_tags_scripts_and_styles(tmp_path: Path) -> None:
    html = ("<html><head><title>T</title><style>p {color: red}</style></head><body><h1>Heading</h1>"
            "<p>First &amp; <b>bold</b> para.</p><script>var secret = 1;</script><ul><li>one</li><li>two</li></ul>"
            "</body></html>")
    text = extract_text(write(tmp_path, "a", html), "page.html")
    assert text.splitlines() == ["Heading", "First & bold para.", "one", "two"]
    assert "secret" not in text and "color" not in text


def test_json_and_jsonl_become_indented_text(tmp_path: Path) -> None:
    text = extract_text(write(tmp_path, "a", json.dumps({"name": "Ada", "tags": ["x", "y"]})), "a.json")
    assert json.loads(text) == {"name": "Ada", "tags": ["x", "y"]} and '"name": "Ada"' in text
    lines = extract_text(write(tmp_path, "b", '{"a": 1}\n\n{"b": "é"}\n'), "b.jsonl").splitlines()
    assert lines == ['{"a": 1}', '{"b": "é"}']


def test_csv_rows_carry_their_column_names(tmp_path: Path) -> None:
    csv_text = 'city,country,population\nParis,France,"2,100,000"\nLyon,,500000\n'
    assert extract_text(write(tmp_path, "a", csv_text), "cities.csv").splitlines() == [
        "city: Paris; country: France; population: 2,100,000", "city: Lyon; population: 500000"]
    assert extract_text(write(tmp_path, "b", "a\tb\n1\t2\n"), "t.tsv") == "a: 1; b: 2"


def test_pdf_text_of_every_page(tmp_path: Path) -> None:
    path = write(tmp_path, "a", pdf_with_text(["First page words", "Second page words"]))
    assert len(PdfReader(path).pages) == 2  # the hand-made file is a real PDF
    text = extract_text(path, "report.PDF")
    assert "First page words" in text and "Second page words" in text
    assert text.index("First") < text.index("Second")


def test_pdf_without_text_and_damaged_pdf_are_invalid(tmp_path: Path) -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    blank = tmp_path / "blank.pdf"
    with blank.open("wb") as handle:
        writer.write(handle)
    for path in (blank, write(tmp_path, "broken", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage"),
                 write(tmp_path, "cut", pdf_with_text(["words"])[:120])):
        with pytest.raises(ExtractionError) as caught:
            extract_text(path, "x.pdf")
        assert caught.value.code == "invalid_file"


def test_docx_paragraphs(tmp_path: Path) -> None:
    text = extract_text(write(tmp_path, "a", docx_with_paragraphs(["Alpha para", "Beta para"])), "memo.docx")
    assert "Alpha para" in text and "Beta para" in text
    with pytest.raises(ExtractionError) as caught:
        extract_text(write(tmp_path, "b", b"PK not a zip"), "memo.docx")
    assert caught.value.code == "invalid_file"


@pytest.mark.parametrize(("name", "data"), [
    ("bad.txt", b"\xff\xfe\xfa not utf-8 \xc3"),
    ("bin.txt", b"text\x00with nul"),
    ("bad.json", b'{"a": '),
    ("bad.jsonl", b'{"a": 1}\nnot json\n'),
    ("empty.txt", b""),
    ("blank.md", b"  \n\t\n"),
    ("empty.html", b"<html><script>only()</script></html>"),
])
def test_unreadable_files_are_invalid(tmp_path: Path, name: str, data: bytes) -> None:
    with pytest.raises(ExtractionError) as caught:
        extract_text(write(tmp_path, "f", data), name)
    assert caught.value.code == "invalid_file" and caught.value.message


@pytest.mark.parametrize("name", ["photo.png", "archive.zip", "no_extension", "sheet.xlsx"])
def test_unknown_extensions_are_unsupported(tmp_path: Path, name: str) -> None:
    with pytest.raises(ExtractionError) as caught:
        extract_text(write(tmp_path, "f", "some text"), name)
    assert caught.value.code == "unsupported_file"


def test_a_missing_file_is_invalid_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError) as caught:
        extract_text(tmp_path / "gone", "gone.txt")
    assert caught.value.code == "invalid_file"
