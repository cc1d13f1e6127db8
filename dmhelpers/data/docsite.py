"""The offline default site: Python's own documentation rendered by ``pydoc`` and served on 127.0.0.1.

The crawler reaches it over HTTP exactly as it would reach a remote docs site, so the tutorial's
"find links -> load pages" steps run unchanged with no network.
"""
from __future__ import annotations

import contextlib
import functools
import html
import http.server
import importlib
import pydoc
import re
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote
from pydoc_data.topics import topics as LANGUAGE_TOPICS

from bs4 import BeautifulSoup

from dmhelpers.utils.errors import CrawlError, InputError
from dmhelpers.utils.files import atomic_write_text

# Standard-library modules that import with no GUI, no network and no side effects,
# chosen to cover what people ask about every day: files, text, data formats, time, maths, concurrency.
DEFAULT_MODULES: tuple[str, ...] = (
    "abc", "argparse", "array", "base64", "bisect", "bz2", "calendar", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum",
    "filecmp", "fnmatch", "fractions", "functools", "getopt", "glob", "gzip", "hashlib", "heapq", "hmac",
    "html", "html.parser", "ipaddress", "itertools", "json", "logging", "lzma", "math", "mimetypes",
    "operator", "pathlib", "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "shelve",
    "shlex", "shutil", "sqlite3", "statistics", "string", "struct", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "tomllib", "traceback", "urllib.parse", "uuid", "warnings", "weakref",
    "zipfile", "zlib", "zoneinfo",
)

# The workshop preset: 20 everyday modules' pages (01 -> 05 in about two minutes), covering the notebooks' demo
# questions (a zip archive in 01) and the questions people ask most: files, formats, text, dates, collections, logs.
WORKSHOP_PAGES: tuple[str, ...] = tuple(f"{m}.html" for m in (
    "zipfile", "tarfile", "gzip", "json", "csv", "pathlib", "shutil", "tempfile", "glob", "datetime", "re", "string",
    "textwrap", "collections", "itertools", "functools", "random", "statistics", "logging", "sqlite3"))
PRESETS = {"workshop": WORKSHOP_PAGES}


def preset_pages(preset: str | None) -> tuple[str, ...] | None:
    """The page names a preset keeps (``None``: every page)."""
    if preset is None:
        return None
    if preset not in PRESETS:
        raise InputError(f"PRESET must be None (every page) or one of {sorted(PRESETS)}, got {preset!r}. Use e.g. "
                         "PRESET = 'workshop'.")
    return PRESETS[preset]


_SITE_VERSION = "3"  # bump when the rendering below changes, so cached sites are rebuilt


def _machine_paths() -> list[str]:
    """Install locations that pydoc prints into pages; they differ per machine, so they are stripped."""
    paths = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return sorted((p for p in paths if p), key=len, reverse=True)


def _strip_machine_paths(page: str) -> str:
    """Replace absolute install paths with ``Lib`` (as in CPython's source tree) and drop ``file:`` links."""
    page = re.sub(r'<a href="file:[^"]*">([^<]*)</a>', r"\1", page)
    for path in _machine_paths():
        page = page.replace(path, "Lib")
    return page


_ADDRESS = re.compile(r"\s+at\s+0x[0-9a-fA-F]+")  # "<function copy2 at 0x7f...>": a different number in every process
_WEAKREFS = re.compile(r"\[(?:&(?:amp;)?lt;weakref;[^\]]*)\]")  # logging's live handler list, which varies by process


def _stable(page: str) -> str:
    """``page`` without what differs between two renderings: memory addresses, and lists of live objects."""
    return _WEAKREFS.sub("[...]", _ADDRESS.sub("", page))


_INHERITED = re.compile(r"<hr>\n[A-Za-z ]+ inherited from <a [^>]*>[^<]*</a>:<br>\n.*?(?=<hr>|</td></tr>)", re.S)
_BOILERPLATE = re.compile(r"<dl><dt><strong>__(weakref|dict)__</strong></dt>\n<dd>.*?</dd>\n</dl>\n?", re.S)


def _module_page(name: str) -> str:
    """A module's pydoc page without inherited members (documented on their own class) and slot boilerplate."""
    module = importlib.import_module(name)
    page = pydoc.html.page(pydoc.describe(module), pydoc.html.document(module, name))
    page = _BOILERPLATE.sub("", _INHERITED.sub("", page))
    soup = BeautifulSoup(page, "html.parser")
    for title in soup.find_all("strong", class_="bigsection", string="Modules"):
        title.find_parent("table").decompose()  # the list of modules this one imports: a table of names
    return str(soup)


def _topic_page(key: str) -> str:
    body = f"<h1>{html.escape(key)}</h1>\n<pre>{html.escape(LANGUAGE_TOPICS[key])}</pre>"
    return pydoc.html.page(f"Python language reference: {key}", body)


def _index_page(modules: tuple[str, ...], topics: list[str]) -> str:
    mods = "".join(f'<li><a href="{m}.html">{m}</a></li>' for m in modules)
    tops = "".join(f'<li><a href="topic-{t}.html">{t}</a></li>' for t in topics)
    body = (
        f"<h1>Python {sys.version_info.major}.{sys.version_info.minor} documentation (offline)</h1>"
        f"<h2>Standard library modules</h2><ul>{mods}</ul>"
        f"<h2>Language reference</h2><ul>{tops}</ul>"
    )
    return pydoc.html.page("Python documentation index", body)


def build_python_docs(folder: str | Path, modules: tuple[str, ...] = DEFAULT_MODULES,
                      language_topics: bool = True) -> Path:
    """Render the standard-library docs to static HTML in ``folder`` (reused when already built).

    Args:
        folder: where to write ``index.html`` and one page per module and language topic.
        modules: importable module names to document.
        language_topics: also render pydoc's language-reference topics (``if``, ``with``, ...).
    Returns:
        The folder, holding an ``index.html`` that links every page.
    """
    folder = Path(folder)
    stamp = folder / ".complete"
    wanted = f"{_SITE_VERSION} {sys.version.split()[0]} {' '.join(modules)} {language_topics}"
    if stamp.exists() and stamp.read_text() == wanted:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    topics = sorted(LANGUAGE_TOPICS) if language_topics else []
    for name in modules:
        atomic_write_text(folder / f"{name}.html", _stable(_strip_machine_paths(_module_page(name))))
    for key in topics:
        atomic_write_text(folder / f"topic-{key}.html", _topic_page(key))
    atomic_write_text(folder / "index.html", _index_page(modules, topics))
    atomic_write_text(stamp, wanted)  # written last: a crash mid-build leaves no stamp, so it rebuilds
    return folder


NOINDEX = '<meta name="robots" content="noindex">'  # a page of links only: follow its links, do not index it


def folder_index(folder: Path) -> str:
    """A generated start page for a folder without ``index.html``: a link to every HTML file in it (subfolders
    too), marked ``noindex`` so the crawl follows the links but does not index the list itself."""
    pages = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.suffix.lower() in (".html", ".htm") and p.is_file())
    items = "".join(f'<li><a href="{html.escape(quote(page))}">{html.escape(page)}</a></li>' for page in pages)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>{NOINDEX}<title>Pages of {html.escape(folder.name)}"
            f"</title></head><body><ul>{items}</ul></body></html>")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; ``/index.html``, when the folder has none, is :func:`folder_index`."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        folder = Path(self.directory)
        if self.path.split("?")[0] == "/index.html" and not (folder / "index.html").exists():
            body = folder_index(folder).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


DEFAULT_PORT = 8731  # a fixed port keeps page URLs identical between runs; a free one is used when taken
_SERVED: dict[str, str] = {}  # "http://127.0.0.1:<port>/" -> "docs://<name>/" of the last folder served there


def stable_source(url: str) -> str:
    """The name a page keeps after the run: ``docs://<site>/<page>`` for a page of a folder served here (its
    127.0.0.1 address dies with the server), the URL itself for any other site."""
    for base, name in _SERVED.items():
        if url.startswith(base):
            return name + url[len(base):]
    return url


@contextlib.contextmanager
def serve_folder(folder: str | Path, port: int = DEFAULT_PORT, name: str | None = None) -> Iterator[str]:
    """Serve a folder of HTML files on 127.0.0.1 and yield its ``index.html`` URL (``port``, or a free one); a
    folder without one gets a generated list of its HTML files there (:func:`folder_index`).

    :func:`stable_source` names its pages ``docs://<name>/<page>`` (``name``: the folder's), also after the server
    stops, since pages are turned into documents after loading them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CrawlError(f"{folder} is not a folder of HTML files. Pass a folder that exists "
                         "(for example a Sphinx `_build/html`), an http(s) URL, or None for the offline site.")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    _SERVED[base] = f"docs://{name or folder.resolve().name}/"
    try:
        yield base + "index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def open_site(base_url: str | None, cache: str | Path = "python-docs") -> Iterator[str]:
    """Yield a URL to crawl: the offline Python docs (``None``), a served local folder, or ``base_url`` as is.

    Args:
        base_url: ``None`` for the offline default, a path to a folder of HTML files, or an http(s) URL.
        cache: folder where the offline Python docs are rendered (built once, then reused).
    """
    if base_url is not None and not isinstance(base_url, (str, Path)):
        raise InputError(f"BASE_URL must be None, an http(s) URL or a folder of HTML files, got {base_url!r}. "
                         "Use BASE_URL = None for the offline Python docs.")
    if base_url is None:
        with serve_folder(build_python_docs(cache), name="python") as url:
            yield url
    elif re.match(r"https?://", str(base_url)):
        yield base_url
    else:
        with serve_folder(base_url) as url:
            yield url
