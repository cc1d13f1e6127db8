"""HTML to readable text (``html2text``) and recursive character splitting into chunks that keep their source."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import html2text
from bs4 import BeautifulSoup
from langchain_text_splitters import RecursiveCharacterTextSplitter

from dmhelpers.errors import InputError

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


def html_to_text(html: str) -> str:
    """Readable text of an HTML page: ``html2text`` markdown without link targets or images, tidied."""
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: lines end where the author's paragraphs end
    converter.ignore_links = True
    converter.ignore_images = True
    converter.ignore_emphasis = True
    text = converter.handle(html)
    lines = [line.rstrip() for line in text.replace("\xa0", " ").splitlines()]
    lines = [line for line in lines if not re.fullmatch(r"[-|: ]*\|[-|: ]*", line)]  # table rulers
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def split_documents(documents: Iterable[Document], chunk_size: int = 1000,
                    chunk_overlap: int = 100) -> list[Document]:
    """Split documents recursively (paragraphs, lines, sentences, words) into chunks of at most ``chunk_size``.

    Each chunk keeps its document's metadata plus ``chunk`` (its position within the document).
    """
    if chunk_size <= 0:
        raise InputError(f"chunk_size must be positive, got {chunk_size}. Use e.g. CHUNK_SIZE = 1000.")
    if not 0 <= chunk_overlap < chunk_size:
        raise InputError(f"chunk_overlap must be >= 0 and smaller than chunk_size ({chunk_size}), "
                         f"got {chunk_overlap}. Use e.g. CHUNK_OVERLAP = {chunk_size // 10}.")
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size, chunk_overlap=chunk_overlap, separators=SEPARATORS, keep_separator="end",
        strip_whitespace=True,
    )
    chunks: list[Document] = []
    for doc in documents:
        for i, piece in enumerate(splitter.split_text(doc.page_content)):
            chunks.append(Document(piece, {**doc.metadata, "chunk": i}))
    return chunks


def unique_documents(documents: Iterable[Document]) -> list[Document]:
    """Drop documents whose text repeats an earlier one (pydoc, for one, repeats a module's docstring on its class)."""
    seen: set[str] = set()
    return [d for d in documents if not (d.page_content in seen or seen.add(d.page_content))]
