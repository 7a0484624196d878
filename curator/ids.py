"""Deterministic content-hash ids and the question normalisation used for linking.

Ids are hashes of what identifies a thing, so loading or importing the same input twice
produces the same ids and adds nothing.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SEP = "\x1f"


def stable_id(prefix: str, *parts: object) -> str:
    """``prefix`` + the first 20 hex digits (80 bits) of SHA-256 over the parts joined by
    the unit separator. SHA-256 because DuckDB computes the same thing in SQL
    (:func:`sample_id_sql`), so bulk paths can derive ids without a Python loop."""
    h = hashlib.sha256(_SEP.join("" if p is None else str(p) for p in parts).encode())
    return f"{prefix}_{h.hexdigest()[:20]}"


def problem_id(dataset: str, split: str, source_id: str) -> str:
    return stable_id("p", dataset, split, source_id)


def sample_id(run_id: str, problem_id: str, sample_index: int) -> str:
    return stable_id("s", run_id, problem_id, sample_index)


def sample_id_sql(run_id: str, problem_id: str, sample_index: str) -> str:
    """SQL expression computing :func:`sample_id` from three column expressions."""
    return (f"'s_' || substr(sha256(concat_ws(chr(31), {run_id}, {problem_id}, "
            f"{sample_index}::VARCHAR)), 1, 20)")


# Prompt labels that files put in front of a question ("Problem:\n..." in the GPT-3.5
# TDG file) or behind it ("... \nSolution:").
LEADING_LABEL = re.compile(r"^\s*(?:problem|question|q)\s*(?:\d+\s*)?[:.]\s*", re.I)
_TRAILING_LABEL = re.compile(r"\s*(?:solution|answer|a)\s*:\s*$", re.I)
_WS = re.compile(r"\s+")


def normalize_question(text: str) -> str:
    """Fold the formatting differences real files have around the same question text."""
    t = unicodedata.normalize("NFKC", text)
    t = LEADING_LABEL.sub("", t, count=1)
    t = _TRAILING_LABEL.sub("", t, count=1)
    return _WS.sub(" ", t).strip()


def question_key(text: str) -> str:
    return stable_id("q", normalize_question(text))


def strip_question_label(text: str) -> str:
    """The question without a leading prompt label ("Problem:\\n"), otherwise unchanged."""
    return LEADING_LABEL.sub("", text, count=1).strip()
