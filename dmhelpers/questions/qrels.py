"""The question-file format: the tutorial's ``(questions, relevance)`` lists, split, saved and loaded.

``relevance[i]`` is a list of ``(chunk_id, score)`` pairs for question ``i`` (scores in [0, 1]); notebook 02 saves
``train.jsonl`` and ``test.jsonl`` under the store folder, one ``{"question", "relevance"}`` object per line.
"""
from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from dmhelpers.utils.errors import InputError, check_number
from dmhelpers.utils.files import atomic_write_text

Relevance = list[list[tuple[str, float]]]


def split_questions(questions: Sequence[str], relevance: Relevance, train_fraction: float = 0.5, seed: int = 0
                    ) -> tuple[tuple[list[str], Relevance], tuple[list[str], Relevance]]:
    """A seeded random split by question into ``(train_questions, train_relevance), (test_questions, test_relevance)``."""
    if len(questions) != len(relevance):
        raise InputError(f"Got {len(questions)} questions but {len(relevance)} relevance lists; pass one per question.")
    check_number("train_fraction", train_fraction, 0, 1, "Use e.g. TRAIN_FRACTION = 0.5.")
    order = random.Random(seed).sample(range(len(questions)), len(questions))
    cut = round(train_fraction * len(order))
    if cut < 1 or cut == len(order):
        raise InputError(f"{len(questions)} questions are too few to split with train_fraction={train_fraction}: "
                         "one side would be empty. Write more questions (N_QUESTIONS).")
    pick = lambda idx: ([questions[i] for i in idx], [list(map(tuple, relevance[i])) for i in idx])  # noqa: E731
    return pick(sorted(order[:cut])), pick(sorted(order[cut:]))


def save_questions(path: str | Path, questions: Sequence[str], relevance: Relevance) -> None:
    """Write questions and their relevance as JSON lines ``{"question", "relevance": [[id, score], ...]}``, atomically."""
    if len(questions) != len(relevance):
        raise InputError(f"Got {len(questions)} questions but {len(relevance)} relevance lists; pass one per question.")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"question": q, "relevance": [list(p) for p in rel]}, ensure_ascii=False)
             for q, rel in zip(questions, relevance)]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def load_questions(path: str | Path) -> tuple[list[str], Relevance]:
    """Read questions saved by :func:`save_questions` (notebook 02 saves ``train.jsonl`` and ``test.jsonl``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"No questions at {path}. Run notebook 02 first (it saves train.jsonl and test.jsonl "
                         "under the store folder), or check STORE_PATH.")
    questions, relevance = [], []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
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
