"""Property tests (hypothesis) for the HTML-to-text path and the text splitter.

- arbitrary HTML and Unicode never crash either step;
- every chunk is non-empty, stripped and at most ``chunk_size`` characters;
- chunks are pieces of the document in order: consecutive chunks share at most ``chunk_overlap`` characters
  and nothing but whitespace is left out between them (so no text is lost beyond the overlap rules);
- every word that fits in a chunk appears whole in some chunk;
- link targets, images and scripts never leak into the text.
"""
from __future__ import annotations

import functools
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmhelpers import Document, html_to_text, split_documents

# Modest example counts: the whole file runs in a few seconds. database=None: no .hypothesis folder in the repo.
FAST = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Text that exercises every separator of the splitter (paragraphs, lines, sentences, words) and odd Unicode:
# other whitespace (tabs, non-breaking and ideographic spaces, line separators), combining marks, emoji.
SEPARATOR_BITS = ["\n\n", "\n", ". ", "? ", "! ", "; ", " ", "\t", "\xa0", "\u3000", "\u2028", "\r\n"]
ODD_BITS = ["é", "e\u0301", "漢字", "🙂", "\u200b", "ß", "İ", "\ufeff", "<", "&amp;", "*", "_", "#", "|"]
text_strategy = st.one_of(
    st.text(max_size=400),
    st.lists(st.one_of(st.sampled_from(SEPARATOR_BITS), st.sampled_from(ODD_BITS),
                       st.text(alphabet="abcdefghij", min_size=1, max_size=30)), max_size=80).map("".join),
)
# Word-and-whitespace text (spaces, newlines, sentence ends) for the "every word survives" property.
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=25)
prose_strategy = st.lists(st.tuples(WORD, st.sampled_from([" ", "  ", "\n", "\n\n", ". ", "? ", "; ", "\n\n\n"])),
                          min_size=1, max_size=60).map(lambda parts: "".join(w + s for w, s in parts))


@st.composite
def sizes(draw, low: int = 1, high: int = 200) -> tuple[int, int]:
    size = draw(st.integers(low, high))
    return size, draw(st.integers(0, size - 1))


def split(text: str, size: int, overlap: int) -> list[str]:
    return [c.page_content for c in split_documents([Document(text, {"source": "s"})], size, overlap)]


def aligned(text: str, chunks: list[str], overlap: int) -> bool:
    """Whether the chunks can be placed in ``text`` in order so that each next one starts and ends no earlier
    than the previous one, shares at most ``overlap`` characters with it, and skips nothing but whitespace;
    the first starts at the first non-blank character and the last ends at the last one.

    (The splitter can emit a chunk made only of the previous chunk's overlap, e.g. "00 0" at size 2, overlap 1
    gives "00", "0", "0": redundant, not lost, so a chunk may end where the previous one ends.)"""
    first = len(text) - len(text.lstrip())
    last = len(text.rstrip())

    def occurrences(chunk: str, lo: int, hi: int):
        at = text.find(chunk, lo)
        while at != -1 and at <= hi:
            yield at
            at = text.find(chunk, at + 1)

    @functools.lru_cache(maxsize=None)
    def place(i: int, start: int) -> bool:
        end = start + len(chunks[i])
        if i == len(chunks) - 1:
            return end == last
        gap_end = len(text[end:]) - len(text[end:].lstrip()) + end  # the next non-blank character after this chunk
        lo = max(start, end - overlap)
        return any(place(i + 1, at) for at in occurrences(chunks[i + 1], lo, gap_end)
                   if at + len(chunks[i + 1]) >= end)  # never ends before the previous one

    if not chunks:
        return not text.strip()
    return any(place(0, at) for at in occurrences(chunks[0], first, first))


# ------------------------------------------------------------------------------------------ split_documents
@FAST
@given(text=text_strategy, size_overlap=sizes())
def test_chunks_fit_are_stripped_and_cover_the_text_in_order(text, size_overlap):
    size, overlap = size_overlap
    chunks = split(text, size, overlap)
    assert all(0 < len(c) <= size for c in chunks), [len(c) for c in chunks]
    assert all(c == c.strip() for c in chunks)
    assert aligned(text, chunks, overlap), (chunks, size, overlap)


@FAST
@given(text=text_strategy, size=st.integers(1, 200))
def test_without_overlap_the_chunks_are_exactly_the_text(text, size):
    chunks = split(text, size, 0)
    assert "".join(re.findall(r"\S", "".join(chunks))) == "".join(re.findall(r"\S", text))


@FAST
@given(text=prose_strategy, size_overlap=sizes(low=25, high=300))
def test_every_word_that_fits_appears_whole_in_a_chunk(text, size_overlap):
    size, overlap = size_overlap
    chunks = split(text, size, overlap)
    words_in_chunks = [set(c.split()) for c in chunks]
    for word in (w for w in text.split() if len(w) <= size):  # with its punctuation ("word." or "word?")
        assert any(word in words for words in words_in_chunks), (word, chunks)


@FAST
@given(texts=st.lists(text_strategy, max_size=4), size_overlap=sizes())
def test_metadata_and_chunk_numbers_follow_each_document(texts, size_overlap):
    docs = [Document(t, {"source": f"page{i}", "title": "T"}) for i, t in enumerate(texts)]
    chunks = split_documents(docs, *size_overlap)
    for i, doc in enumerate(docs):
        mine = [c for c in chunks if c.metadata["source"] == f"page{i}"]
        assert [c.metadata["chunk"] for c in mine] == list(range(len(mine)))
        assert all(c.metadata["title"] == "T" for c in mine)
        assert doc.metadata == {"source": f"page{i}", "title": "T"}  # the input is not changed
    sources = [c.metadata["source"] for c in chunks]
    assert sources == sorted(sources, key=lambda s: int(s[4:]))  # documents stay in order


# ------------------------------------------------------------------------------------------ html_to_text
TAGS = ["p", "div", "span", "h1", "h2", "h3", "li", "ul", "ol", "table", "tr", "td", "th", "pre", "code", "em",
        "strong", "blockquote", "br", "hr", "dl", "dt", "dd", "sup", "b", "i", "section", "article", "nav"]
FRAGMENTS = ["<", ">", "</", "<!--", "-->", "<![CDATA[", "]]>", "&", "&nbsp;", "&#0;", "&#x110000;", "&lt;",
             "&bogus;", '"', "'", "=", "<!DOCTYPE html>", "<?xml?>", "\x00", "\ud7ff", "\U0001f600", "\u202e"]


@st.composite
def html_soup(draw) -> str:
    """Tag soup: real tags, unclosed and stray closing tags, attributes, entities, comments and broken markup."""
    parts = draw(st.lists(st.one_of(
        st.builds(lambda t, a: f"<{t}{a}>", st.sampled_from(TAGS), st.sampled_from(["", ' class="x"', " id=1", " /"])),
        st.builds(lambda t: f"</{t}>", st.sampled_from(TAGS)),
        st.builds(lambda h, s: f'<a href="{h}">{s}</a>', st.sampled_from(["x.html", "javascript:1", "", "#", "//x"]),
                  st.text(max_size=10)),
        st.just('<img src="p.png" alt="alt">'), st.just("<script>var s = '</p>';</script>"),
        st.just("<style>p { x: 1 }</style>"),
        st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=40))
    return "".join(parts)


def check_text_shape(text: str) -> None:
    assert isinstance(text, str)
    assert text == text.strip()
    assert "\xa0" not in text and "\n\n\n" not in text
    assert all(line == line.rstrip() for line in text.split("\n"))


@FAST
@given(html=st.one_of(st.text(max_size=300), html_soup()))
def test_any_html_or_unicode_becomes_tidy_text(html):
    check_text_shape(html_to_text(html))


@st.composite
def page_with_words(draw) -> tuple[str, list[str], list[str]]:
    """A page whose visible words must survive and whose link targets, image names and scripts must not."""
    visible, hidden, blocks = [], [], []
    for n in range(draw(st.integers(1, 8))):
        words = draw(st.lists(WORD.map(lambda w: f"w{w}"), min_size=1, max_size=6))
        visible += words
        tag = draw(st.sampled_from(["p", "li", "h2", "td", "blockquote", "dd", "pre"]))
        target, image, script = f"hrefzz{n}", f"imgzz{n}", f"scriptzz{n}"
        hidden += [target, image, script]
        body = " ".join(words)
        blocks.append(draw(st.sampled_from([
            f"<{tag}>{body}</{tag}>",
            f'<{tag}><a href="https://example.org/{target}.html">{body}</a></{tag}>',
            f'<{tag}>{body} <img src="{image}.png" alt="{image}"></{tag}>',
            f"<{tag}>{body}</{tag}><script>var {script} = 1;</script>",
        ])))
    wrap = "<ul>{}</ul>" if any(b.startswith("<li>") for b in blocks) else "{}"
    return f"<html><head><title>t</title><style>.{hidden[0]} {{}}</style></head><body>{wrap.format(''.join(blocks))}" \
           "</body></html>", visible, hidden


@FAST
@given(page=page_with_words())
def test_visible_words_survive_and_targets_images_and_scripts_do_not(page):
    html, visible, hidden = page
    text = html_to_text(html)
    check_text_shape(text)
    words = set(re.findall(r"\w+", text))
    assert set(visible) <= words, set(visible) - words
    assert not set(hidden) & words, set(hidden) & words


@FAST
@given(html=st.one_of(st.text(max_size=300), html_soup()), size_overlap=sizes())
def test_html_to_chunks_pipeline_never_crashes(html, size_overlap):
    size, overlap = size_overlap
    text = html_to_text(html)
    chunks = split(text, size, overlap)
    assert all(0 < len(c) <= size for c in chunks) and aligned(text, chunks, overlap)
