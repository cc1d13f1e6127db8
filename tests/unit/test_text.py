from __future__ import annotations

import re

import pytest

from dmhelpers import Document, InputError, html_to_text, page_title, split_documents, unique_documents

PROSE = " ".join(f"Sentence number {i} talks about zip files and csv rows." for i in range(120))


def test_html_to_text_keeps_words_drops_link_targets_and_images():
    html = '<h1>Title</h1><p>Read <a href="https://x.org/zip">the zip docs</a>.</p><img src="a.png" alt="pic">'
    text = html_to_text(html)
    assert "Title" in text and "the zip docs" in text
    assert "x.org" not in text and "a.png" not in text


@pytest.mark.parametrize(("html", "text"), [
    ("<pre>f(timer=&amp;lt;built-in function perf_counter&amp;gt;)</pre>", "f(timer=<built-in function perf_counter>)"),
    ("<p>x &amp;amp; y &amp;#39;z&amp;#39; &amp;#x3C;</p>", "x & y 'z' <"),
    ("<p>AT&amp;T and &amp;copy without a semicolon stay</p>", "AT&T and &copy without a semicolon stay"),
])
def test_html_to_text_leaves_no_entity_from_a_page_that_escapes_twice(html, text):
    assert html_to_text(html) == text


def test_page_title_falls_back_to_heading():
    assert page_title("<html><title> A  page </title></html>") == "A page"
    assert page_title("<h1>Heading</h1>") == "Heading"
    assert page_title("<p>none</p>") == ""


@pytest.mark.parametrize("size,overlap", [(200, 0), (300, 50), (1000, 100)])
def test_chunks_respect_size_keep_metadata_and_lose_no_words(size, overlap):
    doc = Document(PROSE + "\n\n" + PROSE.upper(), {"source": "http://s/a.html", "title": "A"})
    chunks = split_documents([doc], chunk_size=size, chunk_overlap=overlap)
    assert all(len(c.page_content) <= size for c in chunks)
    assert [c.metadata["chunk"] for c in chunks] == list(range(len(chunks)))
    assert all(c.metadata["source"] == "http://s/a.html" and c.metadata["title"] == "A" for c in chunks)
    words = re.findall(r"\S+", doc.page_content)
    joined = re.findall(r"\S+", " ".join(c.page_content for c in chunks))
    it = iter(joined)
    assert all(any(w == j for j in it) for w in words)  # every word appears, in order


def test_splitter_prefers_paragraph_boundaries():
    doc = Document("First paragraph about zip.\n\nSecond paragraph about csv.", {})
    assert [c.page_content for c in split_documents([doc], chunk_size=30, chunk_overlap=0)] == [
        "First paragraph about zip.", "Second paragraph about csv."]


@pytest.mark.parametrize("size,overlap,match", [(0, 0, "chunk_size must be a whole number"),
                                                 (100, 100, "chunk_overlap must be"), (100, -1, "chunk_overlap")])
def test_bad_split_parameters(size, overlap, match):
    with pytest.raises(InputError, match=match):
        split_documents([Document("x", {})], chunk_size=size, chunk_overlap=overlap)


def test_unique_documents_keeps_first_copy():
    docs = [Document("a", {"n": 1}), Document("b", {}), Document("a", {"n": 2})]
    assert [(d.page_content, d.metadata) for d in unique_documents(docs)] == [("a", {"n": 1}), ("b", {})]
