"""Crawling a docs site as the tutorial does: collect the links of a start page, then load the pages concurrently.

Links stay on the start page's host and below its path prefix; only http(s) is followed. Pages load
with bounded concurrency, a per-request timeout, a byte cap and a ``max_pages`` cap; a page that
fails is reported and skipped.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import httpx
from bs4 import BeautifulSoup
from tqdm.auto import tqdm

from dmhelpers.data.docsite import stable_source
from dmhelpers.data.text import Document, html_to_text, page_title
from dmhelpers.utils.errors import CrawlError, InputError, check_number, check_whole
from dmhelpers.utils.progress import progress_bar

USER_AGENT = "dmhelpers-crawler (Deep Memory Notebooks)"
HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass
class Page:
    """A loaded page: its final URL, ``<title>`` and raw HTML."""

    url: str
    title: str
    html: str


def _prefix(url: str) -> tuple[str, str, str]:
    """Scheme, host and the folder of ``url``'s path: the part of the site a crawl may visit."""
    parts = urlsplit(url)
    folder = parts.path.rsplit("/", 1)[0] + "/" if parts.path else "/"
    return parts.scheme, parts.netloc, folder


def _inside(path: str, folder: str) -> bool:
    """Whether a URL path lies under ``folder`` once percent-escapes and dot segments are resolved
    (``/docs/%2e%2e/secret.html`` is ``/secret.html``, which a server serves from outside ``/docs/``)."""
    resolved = posixpath.normpath(unquote(path) or "/")
    return (resolved.rstrip("/") + "/").startswith(folder)


def _check_url(url: str) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise InputError(f"{url!r} is not an http(s) URL. Pass e.g. 'https://docs.python.org/3/library/', a local "
                         "folder of HTML files to open_site(), or BASE_URL = None for the offline docs.")
    return url


def extract_links(html: str, page_url: str) -> list[str]:
    """The page's links resolved with ``urljoin``, fragments dropped, kept on the same host and path prefix."""
    scheme, host, folder = _prefix(page_url)
    seen: dict[str, None] = {}
    for a in BeautifulSoup(html, "html.parser").find_all("a", href=True):
        link, _ = urldefrag(urljoin(page_url, a["href"].strip()))
        parts = urlsplit(link)
        if parts.scheme == scheme and parts.netloc == host and _inside(parts.path, folder) and link != page_url:
            seen.setdefault(link, None)
    return list(seen)


def get_all_links(url: str, timeout: float = 10.0, include_start: bool = False) -> list[str]:
    """Fetch ``url`` and return the links on it that stay on the site (see :func:`extract_links`); with
    ``include_start``, the start page itself first (a folder's ``index.html`` usually has content of its own),
    unless it asks not to be indexed (robots ``noindex``, as a generated folder index does)."""
    _check_url(url)
    check_number("timeout", timeout, 0, hint="A number of seconds, e.g. timeout=10.")
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True, headers={"User-Agent": USER_AGENT})
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise CrawlError(f"Could not load the start page {url}: {exc}. Check the URL and the network, or use "
                         "BASE_URL = None for the offline Python docs.") from exc
    links = extract_links(response.text, str(response.url))
    if not links:
        raise CrawlError(f"The start page {url} has no links under {_prefix(str(response.url))[2]} on its site. Start "
                         "from an index or table-of-contents page of the docs (BASE_URL).")
    if include_start and not _noindex(response.text):
        return [str(response.url)] + [link for link in links if link != str(response.url)]
    return links


def _noindex(html: str) -> bool:
    """Whether a page asks not to be indexed (``<meta name="robots" content="noindex">``): a list of links only."""
    meta = BeautifulSoup(html, "html.parser").find("meta", attrs={"name": "robots"})
    return bool(meta) and "noindex" in str(meta.get("content", "")).lower()


async def _fetch(client: httpx.AsyncClient, url: str, gate: asyncio.Semaphore, max_bytes: int) -> Page:
    async with gate, client.stream("GET", url) as response:
        response.raise_for_status()
        if urlsplit(str(response.url)).netloc != urlsplit(url).netloc:
            raise CrawlError(f"redirected off the site to {response.url}")
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in HTML_TYPES:
            raise CrawlError(f"not HTML ({kind or 'no content type'})")
        body = bytearray()
        async for part in response.aiter_bytes():
            body += part
            if len(body) > max_bytes:
                raise CrawlError(f"larger than max_bytes={max_bytes:,}")
        html = body.decode(response.encoding or "utf-8", errors="replace")
        return Page(str(response.url), page_title(html), html)


async def aload_pages(urls: Sequence[str], concurrency: int = 8, timeout: float = 10.0, max_bytes: int = 5_000_000,
                      progress: bool = True) -> tuple[list[Page], dict[str, str]]:
    """Asynchronous :func:`load_pages`."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    hosts = {httpx.URL(u).netloc for u in urls}
    folder = posixpath.commonpath([_prefix(u)[2] for u in urls] or ["/"]).rstrip("/") + "/"

    async def stay_on_site(request: httpx.Request) -> None:  # every request, each redirect too, before it is sent
        if request.url.scheme not in ("http", "https") or request.url.netloc not in hosts \
                or not _inside(urlsplit(str(request.url)).path, folder):
            raise CrawlError(f"redirected off the site (outside {folder}) to {request.url}")

    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True, limits=limits,
                                 headers={"User-Agent": USER_AGENT},
                                 event_hooks={"request": [stay_on_site]}) as client:
        tasks = [asyncio.ensure_future(_fetch(client, u, gate, max_bytes)) for u in urls]
        bar = progress_bar(total=len(tasks), desc="Loading pages", disable=not progress)
        for task in asyncio.as_completed(tasks):
            try:
                await task
            except Exception:  # collected per URL below
                pass
            bar.update()
        bar.close()
    pages, failed = [], {}
    for url, task in zip(urls, tasks):
        exc = task.exception()
        if exc is None:
            pages.append(task.result())
        else:
            failed[url] = str(exc) or type(exc).__name__
    return pages, failed


def load_pages(urls: Sequence[str], concurrency: int = 8, timeout: float = 10.0, max_pages: int | None = None,
               max_bytes: int = 5_000_000, progress: bool = True) -> tuple[list[Page], dict[str, str]]:
    """Load pages concurrently; returns the pages in the order of ``urls`` and ``{url: reason}`` for failures.

    Args:
        urls: http(s) URLs, e.g. from :func:`get_all_links`.
        concurrency: requests in flight at once.
        timeout: seconds per request.
        max_pages: load at most the first ``max_pages`` URLs.
        max_bytes: skip pages larger than this.
        progress: show a progress bar.
    Raises:
        CrawlError: when no page loads.
    """
    if isinstance(urls, str):
        raise InputError("load_pages() takes a list of URLs, got a single string. Wrap it: load_pages([url]).")
    urls = [_check_url(u) for u in dict.fromkeys(urls)]
    if not urls:
        raise CrawlError("There are no URLs to load. Check the links step found pages (get_all_links).")
    for name, value in (("concurrency", concurrency), ("max_bytes", max_bytes), ("max_pages", max_pages)):
        if value is not None or name != "max_pages":
            check_whole(name, value, 1, hint="Use e.g. MAX_PAGES = 20 (None loads all); concurrency=8.")
    check_number("timeout", timeout, 0, hint="A number of seconds, e.g. timeout=10.")
    urls = urls[:max_pages]
    run = aload_pages(urls, concurrency, timeout, max_bytes, progress)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pages, failed = asyncio.run(run)
    else:  # inside Jupyter's loop: run ours in a worker thread
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pages, failed = pool.submit(asyncio.run, run).result()
    for url, reason in failed.items():
        tqdm.write(f"skipped {url}: {reason}")
    if not pages:
        raise CrawlError(f"None of the {len(urls)} pages loaded (first failure: {next(iter(failed.values()))}). "
                         "Check that the site is reachable and serves HTML.")
    return pages, failed


def pages_to_documents(pages: Sequence[Page]) -> list[Document]:
    """Turn pages into documents of readable text with ``source`` and ``title`` metadata; empty pages are dropped.

    ``source`` is the page's URL, or ``docs://<site>/<page>`` for a local folder served by
    :func:`~dmhelpers.data.docsite.serve_folder` (its 127.0.0.1 address means nothing after the run).
    """
    docs = [Document(html_to_text(p.html), {"source": stable_source(p.url), "title": p.title}) for p in pages]
    return [d for d in docs if d.page_content]
