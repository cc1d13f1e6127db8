"""Questions by the bundled chat model on a prose documentation corpus: Sphinx's own docs, from its sdist.

    .venv/bin/python -m pip download --no-deps --no-binary :all: sphinx==8.1.3 -d /tmp/sphinx
    tar xzf /tmp/sphinx/sphinx-8.1.3.tar.gz -C /tmp/sphinx
    .venv/bin/python bench/bench_questions_prose.py /tmp/sphinx/sphinx-8.1.3/doc /tmp/sphinx-items.txt

Writes 40 (question, chunk) items (seed 0, one question per chunk, ``llm="local"``) for a blind judgement; the
result is in docs/questions.md. Directives are dropped and roles unwrapped; chunks use the store's splitter.
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from dmhelpers import Document, generate_questions, split_documents

RULE = re.compile(r"[=\-~^\"'*#+]{3,}")  # a reStructuredText section underline


def rst_documents(folder: Path) -> list[Document]:
    docs = []
    for path in sorted(folder.rglob("*.rst")):
        raw = path.read_text(errors="replace")
        lines = [re.sub(r":[\w:]+:`(?:[^`<]*<)?([^`>]+)>?`", r"\1", line).replace("``", "")
                 for line in raw.split("\n") if not line.startswith(".. ") and not RULE.fullmatch(line.strip())]
        title = next((line.strip() for line in raw.split("\n")
                      if line.strip() and not line.startswith("..") and not RULE.fullmatch(line.strip())), path.stem)
        docs.append(Document("\n".join(lines), {"source": str(path.relative_to(folder)), "title": title}))
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the doc/ folder of an unpacked Sphinx sdist")
    parser.add_argument("out", type=Path, help="where to write the items to judge")
    parser.add_argument("-n", type=int, default=40)
    args = parser.parse_args()
    docs = rst_documents(args.folder)
    chunks = split_documents(docs)
    texts, ids = [c.page_content for c in chunks], [f"c{i}" for i in range(len(chunks))]
    start = time.perf_counter()
    questions, relevance = generate_questions(texts, ids, args.n, llm="local", seed=0, per_chunk=1,
                                              titles=[c.metadata["title"] for c in chunks])
    seconds = time.perf_counter() - start
    text_of = dict(zip(ids, texts))
    args.out.write_text("\n".join(f"=== ITEM {n} ===\nQUESTION: {q}\nCHUNK:\n{text_of[rel[0][0]]}\n"
                                  for n, (q, rel) in enumerate(zip(questions, relevance), 1)))
    print(f"{len(docs)} pages, {len(chunks)} chunks; {len(questions)} questions in {seconds:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
