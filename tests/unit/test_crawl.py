from __future__ import annotations

import socket

import pytest
from helpers import PAGES

from dmhelpers import CrawlError, InputError, extract_links, get_all_links, load_pages, pages_to_documents


def test_extract_links_resolves_dedupes_and_stays_on_site():
    html = """<a href="a.html#x">a</a><a href="./a.html">again</a><a href="sub/b.html">b</a>
              <a href="../up.html">up</a><a href="http://other.org/docs/c.html">off</a>
              <a href="https://site.org/docs/d.html">other scheme</a><a href="file:///etc/passwd">f</a>
              <a href="mailto:x@y.z">m</a><a href="#top">self</a>"""
    links = extract_links(html, "http://site.org/docs/index.html")
    assert links == ["http://site.org/docs/a.html", "http://site.org/docs/sub/b.html"]


def test_get_all_links_on_a_served_site(tiny_site):
    base = tiny_site.rsplit("/", 1)[0]
    links = get_all_links(tiny_site)
    assert links == [f"{base}/{p}" for p in ("zip.html", "csv.html", "missing.html", "slow.html", "data.pdf")]


def test_load_pages_reports_and_skips_failures(tiny_site, capsys):
    links = get_all_links(tiny_site)
    pages, failed = load_pages(links, timeout=0.5, progress=False)
    assert [p.title for p in pages] == ["Zip archives", "CSV files"]
    reasons = {url.rsplit("/", 1)[-1]: why for url, why in failed.items()}
    assert set(reasons) == {"missing.html", "slow.html", "data.pdf"}
    assert "404" in reasons["missing.html"]
    assert "not HTML (application/pdf)" == reasons["data.pdf"]
    assert "missing.html" in capsys.readouterr().out  # reported to the reader, not silently dropped


def test_load_pages_caps_pages_and_bytes(tiny_site):
    links = get_all_links(tiny_site)
    pages, failed = load_pages(links[:2], max_pages=1, progress=False)
    assert len(pages) == 1 and not failed
    sizes = sorted(len(PAGES[f"docs/{name}"]) for name in ("zip.html", "csv.html"))
    pages, failed = load_pages(links[:2], max_bytes=sum(sizes) // 2, progress=False)
    assert [p.title for p in pages] == ["CSV files"] and "max_bytes" in failed[links[0]]


def test_pages_become_documents_with_source_and_title(tiny_site):
    pages, _ = load_pages(get_all_links(tiny_site)[:2], progress=False)
    docs = pages_to_documents(pages)
    assert docs[0].metadata == {"source": pages[0].url, "title": "Zip archives"}
    assert "read a member of a zip archive" in docs[0].page_content
    assert "x.html" not in docs[0].page_content and "logo" not in docs[0].page_content


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_is_a_clear_error():
    url = f"http://127.0.0.1:{_free_port()}/docs/index.html"
    with pytest.raises(CrawlError, match="Could not load the start page .*BASE_URL"):
        get_all_links(url, timeout=2)


def test_site_with_no_links_is_a_clear_error(tiny_site):
    with pytest.raises(CrawlError, match="has no links.*index or table-of-contents"):
        get_all_links(tiny_site.replace("index.html", "csv.html"))


def test_every_page_failing_is_a_clear_error(tiny_site):
    base = tiny_site.rsplit("/", 1)[0]
    with pytest.raises(CrawlError, match="None of the 2 pages loaded"):
        load_pages([f"{base}/nope1.html", f"{base}/nope2.html"], progress=False)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://x.org/a", "docs/index.html", 42])
def test_non_http_urls_are_refused(url):
    with pytest.raises(InputError, match="not an http"):
        get_all_links(url)
    with pytest.raises(InputError, match="not an http"):
        load_pages([url])


def test_a_folder_without_index_html_is_crawled_from_a_generated_list_of_its_pages(tmp_path):
    from dmhelpers import serve_folder

    (tmp_path / "user guide").mkdir()
    (tmp_path / "intro.html").write_text("<html><title>Intro</title><body>Start here.</body></html>")
    (tmp_path / "user guide" / "setup.html").write_text("<html><title>Setup</title><body>Install it.</body></html>")
    (tmp_path / "notes.txt").write_text("not a page")
    with serve_folder(tmp_path, port=0) as start:
        links = get_all_links(start, include_start=True)  # the generated list is followed, not indexed itself
        base = start.rsplit("/", 1)[0]
        assert links == [f"{base}/intro.html", f"{base}/user%20guide/setup.html"]
        pages, failed = load_pages(links, progress=False)
    assert [p.title for p in pages] == ["Intro", "Setup"] and not failed
    (tmp_path / "index.html").write_text('<html><title>Home</title><body><a href="intro.html">intro</a></body></html>')
    with serve_folder(tmp_path, port=0) as start:  # a folder's own index.html is a page like any other
        assert get_all_links(start, include_start=True) == [start, start.rsplit("/", 1)[0] + "/intro.html"]
