"""PDFs made here (fpdf2) with what real ones have: several pages, running headers and page
numbers, words hyphenated at line ends, metadata or none, no text layer, a password, damage.
Each goes through the real PDFium reader and, for answers, a real library."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from fpdf import FPDF
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.wording import for_cli
from embeddings import HashEncoder, InputError, Library, LocalStore
from embeddings.articles import load_bytes

HEADER = "Harbour Operations Manual"


def make_pdf(
    pages: list[list[str]],
    *,
    header: str | None = HEADER,
    title: str | None = None,
    author: str | None = None,
    password: str | None = None,
) -> bytes:
    """A PDF with ``pages`` of paragraphs, each wrapped to lines of about 80 characters.

    A paragraph given as a list of strings is written line by line as given (to control
    where a line breaks).
    """
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=10)
    if title:
        pdf.set_title(title)
    if author:
        pdf.set_author(author)
    if password:
        pdf.set_encryption(owner_password="owner", user_password=password)
    for number, paragraphs in enumerate(pages, start=1):
        pdf.add_page()
        if header:
            pdf.set_xy(20, 10)
            pdf.cell(0, 5, header)
        y = 25
        for paragraph in paragraphs:
            lines = paragraph if isinstance(paragraph, list) else textwrap.wrap(paragraph, 80)
            for line in lines:
                pdf.set_xy(20, y)
                pdf.cell(0, 5, line)
                y += 5
            y += 4
        pdf.set_xy(100, 285)
        pdf.cell(0, 5, str(number))
    return bytes(pdf.output())


def sentences(topic: str, n: int) -> str:
    return " ".join(
        f"The {topic} rule number {i} is written down in the ledger kept by the office." for i in range(n)
    )


PAGES = [
    [sentences("mooring", 3), sentences("pilot", 2)],
    [sentences("cargo", 3)],
    [
        sentences("crane", 2),
        "The harbour master rings the brass bell at noon every day, so that the crews know the tide is "
        "turning and the gates will close within the hour.",
    ],
    [sentences("customs", 3)],
]


def parse(data: bytes, name: str = "manual.pdf"):
    (doc,) = load_bytes(data, name=name, key=f"file:{name}")
    return doc


def test_every_paragraph_knows_its_page_and_the_citation_names_it(tmp_path: Path):
    doc = parse(make_pdf(PAGES, title="Harbour Manual", author="Port Authority"))
    assert not isinstance(doc, InputError)
    assert (doc.title, doc.byline) == ("Harbour Manual", "Port Authority")
    assert [doc.layout.page(n) for n in range(1, len(doc.paragraphs) + 1)] == [1, 1, 2, 3, 3, 4]
    lib = Library(LocalStore(tmp_path), HashEncoder(), "t")
    lib.ingest([doc])
    answer = lib.ask("When does the harbour master ring the brass bell?")
    assert answer.best is not None and "brass bell at noon" in answer.best.passage.text
    citation = answer.best.citation
    assert (citation.page, citation.page_paragraph) == (3, 2)
    assert citation.place == "p. 3, ¶ 2"
    assert "p. 3, ¶ 2" in citation.format()


def test_running_headers_and_page_numbers_are_not_text():
    doc = parse(make_pdf(PAGES))
    assert HEADER not in doc.text
    paragraphs = [doc.text[a:b] for a, b in doc.paragraphs]
    assert not any(p.strip().isdigit() for p in paragraphs)
    # Without metadata, the title is the line that heads the first page.
    assert doc.title == HEADER


def test_a_word_broken_at_a_line_end_is_whole_again_and_a_compound_keeps_its_hyphen():
    paragraph = [
        "Every vessel reports its position to the harbour office, and the infor-",
        "mation is kept for a year; the well-known lighthouse keeper reads it. The well-",
        "known rules apply to every crew that enters the harbour after dark.",
    ]
    doc = parse(make_pdf([[paragraph, sentences("anchor", 3)]]))
    assert "the information is kept" in doc.text
    assert "The well-known rules" in doc.text


def test_a_pdf_without_text_says_it_needs_ocr():
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 50, style="F")  # a picture of something, no text
    (result,) = load_bytes(bytes(pdf.output()), name="scan.pdf", key="k")
    assert isinstance(result, InputError)
    assert "no text layer" in str(result) and "OCR" in str(result)


def test_an_encrypted_pdf_says_so():
    (result,) = load_bytes(make_pdf(PAGES, password="secret"), name="locked.pdf", key="k")
    assert isinstance(result, InputError)
    assert "encrypted" in str(result)


def test_a_damaged_pdf_is_skipped_with_its_reason_and_the_rest_ingested(tmp_path: Path):
    good = tmp_path / "good.pdf"
    good.write_bytes(make_pdf(PAGES))
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(make_pdf(PAGES)[:700])  # cut off in the middle
    fake = tmp_path / "fake.pdf"
    fake.write_bytes(b"this is plain text saved with the wrong name\n" * 5)
    lib = Library(LocalStore(tmp_path / "store"), HashEncoder(), "t")
    report = lib.ingest_paths([good, bad, fake])
    assert report.count("added") == 1
    skipped = [r for r in report.results if r.status == "skipped"]
    assert len(skipped) == 2
    assert all(r.reason and "PDF" in r.reason for r in skipped)
    assert all("Traceback" not in for_cli(InputError(r.reason or "")) for r in skipped)


@pytest.mark.parametrize("name", ["report.PDF", "download"])
def test_a_pdf_is_known_by_its_suffix_or_its_signature(name: str):
    doc = parse(make_pdf(PAGES), name=name)
    assert not isinstance(doc, InputError) and doc.layout.pages


_WORDS = st.sampled_from("ship crew tide gate pilot cargo crane bell dock quay rope sail wind".split())


@st.composite
def _paragraph(draw: st.DrawFn) -> str:
    out = []
    for _ in range(draw(st.integers(2, 4))):
        words = draw(st.lists(_WORDS, min_size=6, max_size=14))
        out.append(" ".join([words[0].capitalize(), *words[1:]]) + ".")
    return " ".join(out)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(_paragraph(), min_size=1, max_size=4), min_size=1, max_size=4))
def test_paragraphs_come_back_whole_on_their_pages(pages: list[list[str]]):
    doc = parse(make_pdf(pages, header=None, title="T"))
    assert not isinstance(doc, InputError)
    got = [(doc.layout.page(n), doc.text[a:b]) for n, (a, b) in enumerate(doc.paragraphs, start=1)]
    assert got == [(number, p) for number, paragraphs in enumerate(pages, start=1) for p in paragraphs]


def test_a_two_column_page_reads_column_by_column():
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=9)
    pdf.add_page()
    left = [
        "The first column opens the paper and explains why the harbour needs a",
        "new breakwater before the winter storms arrive on the coast.",
    ]
    right = [
        "The second column gives the cost of the breakwater and the months the",
        "work will take, from the first stone to the opening of the gate.",
    ]
    for x, lines in ((15, left), (110, right)):
        for i, line in enumerate(lines):
            pdf.set_xy(x, 30 + 5 * i)
            pdf.cell(90, 5, line)
    (doc,) = load_bytes(bytes(pdf.output()), name="paper.pdf", key="k")
    assert not isinstance(doc, InputError)
    text = " ".join(doc.text.split())
    # Each column's words come together and in order, the left column first.
    assert text.index("first column") < text.index("second column")
    assert "The second column gives the cost" in text


def test_slides_cite_their_page():
    pdf = FPDF(orientation="L", format="A4")
    pdf.set_auto_page_break(False)
    slides = [
        ("Harbour plan 2027", ["A new breakwater protects the inner basin.", "Work starts in March."]),
        ("Budget", ["The breakwater costs four million.", "The city pays half of it."]),
        ("Timeline", ["The gate opens in October.", "Ferries return the week after."]),
    ]
    for title, bullets in slides:
        pdf.add_page()
        pdf.set_font("Helvetica", size=28)
        pdf.set_xy(20, 20)
        pdf.cell(0, 12, title)
        pdf.set_font("Helvetica", size=18)
        for i, bullet in enumerate(bullets):
            pdf.set_xy(30, 60 + 15 * i)
            pdf.cell(0, 10, f"- {bullet}")
    (doc,) = load_bytes(bytes(pdf.output()), name="slides.pdf", key="k")
    assert not isinstance(doc, InputError)
    where = {doc.text[a:b]: doc.layout.page(n) for n, (a, b) in enumerate(doc.paragraphs, start=1)}
    assert where["- The gate opens in October."] == 3
    assert where["- The breakwater costs four million."] == 2


def test_a_summary_of_a_pdf_cites_pages(tmp_path: Path):
    from bot.cli import Terminal

    doc = parse(make_pdf(PAGES, title="Harbour Manual"))
    lib = Library(LocalStore(tmp_path), HashEncoder(), "t")
    lib.ingest([doc])
    summary = lib.summarize("Harbour Manual", sentences=3)
    assert summary.sentences
    for s in summary.sentences:
        assert s.page == doc.layout.page(s.paragraph) and s.place == f"p. {s.page}, ¶ {s.page_paragraph}"

    class Out:
        def write(self, text: str) -> int:
            return len(text)

        def isatty(self) -> bool:
            return False

    shown = Terminal(Out()).summary(summary)  # type: ignore[arg-type]
    assert all(f"[p. {s.page}, ¶ {s.page_paragraph}]" in shown for s in summary.sentences)


_GOOD = make_pdf(PAGES[:2], title="Harbour Manual")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_a_damaged_pdf_gives_its_text_or_a_reason_never_an_exception(flips: list[tuple[int, int]]):
    data = bytearray(_GOOD)
    for at, value in flips:
        data[at] = value
    for item in load_bytes(bytes(data), name="damaged.pdf", key="k"):
        assert isinstance(item, InputError) or item.text
