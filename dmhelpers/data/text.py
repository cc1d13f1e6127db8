"""HTML to readable text (``html2text``) and recursive character splitting into chunks that keep their source."""
from __future__ import annotations

import re
from collections.abc import Iterable
from html import unescape
from dataclasses import dataclass, field
from typing import Any

import html2text
from bs4 import BeautifulSoup
from langchain_text_splitters import RecursiveCharacterTextSplitter

from dmhelpers.utils.errors import InputError, check_whole

# An entity left in the text: pages that escape twice (pydoc prints "formatter_class=&amp;lt;class ...&amp;gt;")
# keep "&lt;" after one decoding, and the store would hold, embed and show it.
ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
# Paragraphs, then lines, then sentences, then words, then characters (the tutorial's splitter order).
SEPARATORS: list[str] = ["\n\n", "\n", ". ", "? ", "! ", "; ", " ", ""]


@dataclass
class Document:
    """A chunk of text with its metadata (source URL, title, ...), shaped like LangChain's ``Document``."""

    page_content: str
    metadata: dict[str, Any] = field(default_factory=dict)


def page_title(html: str) -> str:
    """The page's ``<title>``, or its first heading, or an empty string."""
    soup = BeautifulSoup(html, "html.parser")
    for tag in (soup.title, soup.find(["h1", "h2"])):
        if tag is not None and tag.get_text(strip=True):
            return " ".join(tag.get_text().split())
    return ""


class _Converter(html2text.HTML2Text):
    """``html2text`` that keeps paragraphs inside a table cell (or after a stray ``<td>``) apart by a space:
    plain ``html2text`` glues them into one word ("first paragraphsecond")."""

    def handle_tag(self, tag: str, attrs: dict, start: bool) -> None:
        super().handle_tag(tag, attrs, start)
        if tag in ("p", "div") and self.split_next_td:
            self.o(" ")


def html_to_text(html: str) -> str:
    """Readable text of an HTML page: ``html2text`` markdown without link targets or images, tidied, with no HTML
    entity left (a page that escapes twice would otherwise show "&lt;")."""
    if not isinstance(html, str):
        raise InputError(f"html_to_text() takes a page's HTML as a str, got {type(html).__name__}. Pass the "
                         "decoded text, e.g. page.html or data.decode('utf-8').")
    converter = _Converter()
    converter.body_width = 0  # no hard wrapping: lines end where the author's paragraphs end
    converter.ignore_links = True
    converter.ignore_images = True
    converter.ignore_emphasis = True
    text = ENTITY.sub(lambda m: unescape(m.group(0)), converter.handle(html))
    lines = [line.rstrip() for line in text.replace("\xa0", " ").splitlines()]
    lines = [line for line in lines if not re.fullmatch(r"[-|: ]*\|[-|: ]*", line)]  # table rulers
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def split_documents(documents: Iterable[Document], chunk_size: int = 1000,
                    chunk_overlap: int = 100) -> list[Document]:
    """Split documents recursively (paragraphs, lines, sentences, words) into chunks of at most ``chunk_size``.

    Each chunk keeps its document's metadata plus ``chunk`` (its position within the document).
    """
    check_whole("chunk_size", chunk_size, 1, "characters", "Use e.g. CHUNK_SIZE = 1000.")
    check_whole("chunk_overlap", chunk_overlap, 0, "characters", f"It must be smaller than chunk_size ({chunk_size}); "
                f"use e.g. CHUNK_OVERLAP = {chunk_size // 10}.", maximum=chunk_size - 1)
    if isinstance(documents, (str, Document)):
        raise InputError(f"split_documents() takes a list of Documents, got a single {type(documents).__name__}. "
                         "Wrap it: split_documents([Document(text, metadata)]).")
    documents = list(documents)
    bad = next((d for d in documents if not isinstance(getattr(d, "page_content", None), str)), None)
    if bad is not None:
        raise InputError(f"split_documents() needs Documents with a str .page_content, got {type(bad).__name__}. "
                         "Make them with Document(text, metadata) or pages_to_documents(pages).")
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size, chunk_overlap=chunk_overlap, separators=SEPARATORS, keep_separator="end",
        strip_whitespace=True,
    )
    chunks: list[Document] = []
    for doc in documents:
        pieces = [p for p in splitter.split_text(doc.page_content) if p.strip()]  # runs of blanks longer than a chunk
        for i, piece in enumerate(pieces):
            chunks.append(Document(piece, {**(doc.metadata or {}), "chunk": i}))
    return chunks


def unique_documents(documents: Iterable[Document]) -> list[Document]:
    """Drop documents whose text repeats an earlier one (pydoc, for one, repeats a module's docstring on its class)."""
    seen: set[str] = set()
    return [d for d in documents if not (d.page_content in seen or seen.add(d.page_content))]
