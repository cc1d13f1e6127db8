from __future__ import annotations

import sys

from dmhelpers import build_python_docs, get_all_links, load_pages, open_site, pages_to_documents


def test_python_docs_site_is_crawlable_and_has_no_machine_paths(tmp_path):
    folder = build_python_docs(tmp_path / "site", modules=("json", "zipfile"), language_topics=True)
    html = "".join(p.read_text() for p in folder.glob("*.html"))
    assert sys.prefix not in html and sys.base_prefix not in html and 'href="file:' not in html
    with open_site(str(folder)) as url:
        links = get_all_links(url)
        names = [u.rsplit("/", 1)[-1] for u in links]
        assert names[:2] == ["json.html", "zipfile.html"] and "topic-with.html" in names
        pages, failed = load_pages(links[:2], progress=False)
    assert not failed
    zip_text = pages_to_documents(pages)[1].page_content
    assert "Read and write ZIP files" in zip_text and "Lib/zipfile.py" in zip_text


def test_built_site_is_reused_and_rebuilt_when_the_module_list_changes(tmp_path):
    folder = build_python_docs(tmp_path, modules=("json",), language_topics=False)
    (folder / "json.html").write_text("edited")
    build_python_docs(tmp_path, modules=("json",), language_topics=False)
    assert (folder / "json.html").read_text() == "edited"  # reused, not re-rendered
    build_python_docs(tmp_path, modules=("json", "csv"), language_topics=False)
    assert (folder / "json.html").read_text() != "edited" and (folder / "csv.html").exists()


def test_open_site_passes_urls_through_and_serves_the_default(tmp_path):
    with open_site("https://docs.example.org/index.html") as url:
        assert url == "https://docs.example.org/index.html"
    with open_site(None, cache=tmp_path / "docs") as url:
        assert url.startswith("http://127.0.0.1:")
        assert len(get_all_links(url)) > 100
