"""The question-file format: the tutorial's ``(questions, relevance)`` lists, split, saved and loaded.

``relevance[i]`` is a list of ``(chunk_id, score)`` pairs for question ``i`` (scores in [0, 1]); notebook 02 saves
``train.jsonl`` and ``test.jsonl`` under the store folder, one ``{"question", "relevance"}`` object per line.
"""
from __future__ import annotations

import json
import numbers
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dmhelpers.utils.errors import InputError, check_number
from dmhelpers.utils.files import atomic_write_text, write_failure

Relevance = list[list[tuple[str, float]]]
FORMAT = "UTF-8 JSON lines as save_questions writes them"


def dedupe(pairs: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """Each chunk once, with the highest score it was given, in the order first listed: a chunk listed twice in one
    relevance list would otherwise count twice (recall 1.00 would read 0.50). The one rule train, evaluate,
    save_questions and context_recall all use."""
    best: dict[str, float] = {}
    for cid, score in pairs:
        if cid not in best or score > best[cid]:
            best[cid] = score
    return list(best.items())


def relevance_pairs(n: int, rel: Any) -> list[tuple[str, float]]:
    """Question ``n``'s relevance as checked ``(chunk_id, score)`` pairs, de-duplicated (:func:`dedupe`); an
    :class:`InputError` naming the first bad entry otherwise."""
    if isinstance(rel, (str, bytes, dict)) or not isinstance(rel, (list, tuple)):
        raise InputError(f"Relevance of query {n} must be a list of (chunk_id, score) pairs, got {rel!r}. Pass one "
                         "such list per question, e.g. [('c1', 1.0)].")
    pairs = []
    for pair in rel:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (list, tuple)) or len(pair) != 2 or \
                isinstance(pair[1], bool) or not isinstance(pair[1], (numbers.Real, str)):
            raise InputError(f"Relevance of query {n} must be (chunk_id, score) pairs, got {pair!r}. Write each as "
                             "(chunk_id, score), e.g. ('c1', 1.0).")
        cid, score = pair
        try:
            score = float(score)
        except ValueError:
            raise InputError(f"Relevance of query {n} must be (chunk_id, score) pairs, got {pair!r}. Write each as "
                             "(chunk_id, score), e.g. ('c1', 1.0).") from None
        if not isinstance(cid, str) or not cid:
            raise InputError(f"Relevance of query {n} names the chunk id {cid!r}, which is not a string. Chunk ids "
                             "are the strings of db.ids, e.g. ('c1', 1.0).")
        if not 0.0 <= score <= 1.0:  # also refuses NaN
            raise InputError(f"Relevance score {score} of query {n} is outside [0, 1]. Use 1.0 for relevant, "
                             "smaller values for partly relevant.")
        pairs.append((cid, score))
    return dedupe(pairs)


def as_list(name: str, value: Any, what: str) -> list:
    """``value`` (any iterable but a string or a mapping) as a list; an :class:`InputError` naming ``name``
    otherwise."""
    if value is None or isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise InputError(f"{name} must be {what}, got {value!r}. Pass e.g. what generate_questions or "
                         "load_questions returns.")
    return list(value)


def check_lists(questions: Any, relevance: Any) -> tuple[list, list]:
    """Questions and relevance as lists of the same length, or an :class:`InputError`."""
    questions = as_list("questions", questions, "a list of questions")
    relevance = as_list("relevance", relevance, "a list with one list of (chunk_id, score) pairs per question")
    if len(questions) != len(relevance):
        raise InputError(f"Got {len(questions)} questions but {len(relevance)} relevance lists; pass one per question.")
    return questions, relevance


def split_questions(questions: Sequence[str], relevance: Relevance, train_fraction: float = 0.5, seed: int = 0
                    ) -> tuple[tuple[list[str], Relevance], tuple[list[str], Relevance]]:
    """A seeded random split by question into ``(train_questions, train_relevance), (test_questions, test_relevance)``."""
    questions, relevance = check_lists(questions, relevance)
    check_number("train_fraction", train_fraction, 0, 1, "Use e.g. TRAIN_FRACTION = 0.5.")
    order = random.Random(seed).sample(range(len(questions)), len(questions))
    cut = round(train_fraction * len(order))
    if cut < 1 or cut == len(order):
        raise InputError(f"{len(questions)} questions are too few to split with train_fraction={train_fraction}: "
                         "one side would be empty. Write more questions (N_QUESTIONS).")
    pick = lambda idx: ([questions[i] for i in idx], [list(map(tuple, relevance[i])) for i in idx])  # noqa: E731
    return pick(sorted(order[:cut])), pick(sorted(order[cut:]))


def save_questions(path: str | Path, questions: Sequence[str], relevance: Relevance) -> None:
    """Write questions and their relevance as JSON lines ``{"question", "relevance": [[id, score], ...]}``, atomically.

    Each relevance list must hold ``(chunk_id, score)`` pairs (a string id, a score in [0, 1]); a chunk listed twice
    is saved once, with its highest score.
    """
    questions, relevance = check_lists(questions, relevance)
    for n, q in enumerate(questions):
        if not isinstance(q, str):
            raise InputError(f"Question {n} must be a string, got {q!r}. Pass the questions as a list of strings.")
    rows = [relevance_pairs(n, rel) for n, rel in enumerate(relevance)]
    lines = [json.dumps({"question": q, "relevance": [list(p) for p in rel]}, ensure_ascii=False, allow_nan=False)
             for q, rel in zip(questions, rows)]
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; save_questions needs a file path, e.g. {str(path / 'train.jsonl')!r}.")
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(line + "\n" for line in lines))
    except OSError as exc:
        for folder in created:  # the folders this call made, deepest first
            try:
                folder.rmdir()
            except OSError:
                pass
        unchanged = f"{path.name} is unchanged." if path.exists() else f"nothing was written at {path}."
        raise write_failure(exc, path, unchanged, "save the questions in a writable folder") from exc


def load_questions(path: str | Path) -> tuple[list[str], Relevance]:
    """Read questions saved by :func:`save_questions` (notebook 02 saves ``train.jsonl`` and ``test.jsonl``).

    Lines are split on ``\\n`` only, as they are written (a question may hold U+2028 and other line separators);
    blank lines and a UTF-8 byte-order mark are accepted.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"No questions at {path}. Run notebook 02 first (it saves train.jsonl and test.jsonl "
                         "under the store folder), or check STORE_PATH.")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a question file. Pass the file, e.g. "
                         f"{str(path / 'train.jsonl')!r} ({FORMAT}).")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): a question file must be "
                         f"{FORMAT}. Rerun notebook 02 to rewrite it, or re-save it as UTF-8.") from None
    questions, relevance = [], []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip(" \t\r"):
            continue
        try:
            entry = json.loads(line)
            questions.append(str(entry["question"]))
            relevance.append([(str(cid), float(score)) for cid, score in entry["relevance"]])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path} line {n} is not a saved question ({exc}). Rerun notebook 02 to rewrite it.") from exc
    return questions, relevance


def check_question_lists(questions: Sequence[str], relevance: Sequence, caller: str) -> None:
    """Refuse anything but a list of questions with one relevance list each (what :func:`load_questions` returns)."""
    if isinstance(questions, str) or not questions or len(questions) != len(relevance):
        raise InputError(f"{caller} needs a list of questions and one relevance list per question "
                         "(as load_questions returns them).")
