"""What the local teacher server says: recorded rationales replayed by question, or
scripted text, with the token counts and truncation a real model would report.

Pure and synchronous: the HTTP layer (:mod:`curator.server.app`) decides *when* and
*whether* to answer (latency, faults, rate limits); this module decides *what*.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from curator.errors import InputError
from curator.ids import normalize_question

# A deterministic stand-in for a tokenizer: words and single punctuation marks. Real
# tokenizers differ, but the server only has to be self-consistent, and the client
# must learn token counts from the server's `usage`, exactly as with a real provider.
_TOKEN = re.compile(r"\w+|[^\w\s]")

# Where a question starts inside a rendered prompt: a label at the start of a line.
_LABEL = re.compile(r"(?im)^[ \t]*(?:problem|question|q)[ \t]*(?:\d+[ \t]*)?[:.]")

# Substring search over every recorded question is the last resort; above this many
# recorded questions it would cost more per request than the latency it simulates.
_SCAN_LIMIT = 20_000


@functools.lru_cache(maxsize=65536)
def count_tokens(text: str) -> int:
    # cached: the same prompts (K samples per problem) and recorded texts come back
    return len(_TOKEN.findall(text))


def truncate_tokens(text: str, max_tokens: int) -> str:
    """The prefix of ``text`` holding its first ``max_tokens`` tokens."""
    if max_tokens <= 0:
        return ""
    for i, m in enumerate(_TOKEN.finditer(text), start=1):
        if i == max_tokens:
            return text[:m.end()]
    return text


@dataclass
class Completion:
    text: str
    finish_reason: str            # 'stop' | 'length'
    completion_tokens: int
    replayed: bool                # True when the text is a recorded rationale


class Library:
    """Recorded rationales by normalised question text."""

    def __init__(self) -> None:
        self.by_question: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self.by_question)

    def add(self, question: str, rationales: list[str]) -> None:
        key = normalize_question(question)
        if key and rationales:
            self.by_question.setdefault(key, []).extend(rationales)

    @classmethod
    def from_files(cls, paths: list[str | Path]) -> "Library":
        lib = cls()
        for p in paths:
            lib.load(Path(p))
        return lib

    def load(self, path: Path) -> None:
        """Read a TDG-format file (JSONL, optionally gzipped): one problem per line with
        ``question`` and ``generated_answer`` (list of rationales). Lines with
        ``question`` and ``completion`` (the generic import format) are accepted too."""
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            fh = opener(path, "rt", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read replay file: {exc}", path=str(path)) from exc
        with fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"not JSON: {exc}", path=str(path), line=n) from exc
                if not isinstance(rec, dict) or not isinstance(rec.get("question"), str):
                    raise InputError("expected an object with a string 'question'",
                                     path=str(path), line=n)
                texts = rec.get("generated_answer")
                if texts is None and isinstance(rec.get("completion"), str):
                    texts = [rec["completion"]]
                if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                    raise InputError("expected 'generated_answer' as a list of strings "
                                     "(or a string 'completion')", path=str(path), line=n)
                self.add(rec["question"], texts)

    def find(self, prompt: str) -> str | None:
        """The recorded question a rendered prompt asks, or None.

        Few-shot prompts contain other questions too; the one asked is the last, so
        candidates are tried from the end of the prompt backwards.
        """
        if not self.by_question:
            return None
        key = normalize_question(prompt)
        if key in self.by_question:
            return key
        starts = [m.start() for m in _LABEL.finditer(prompt)]
        for s in reversed(starts):
            tail = normalize_question(prompt[s:])
            if tail in self.by_question:
                return tail
            # A template may put instructions after the question ("... Solution:").
            cut = _LABEL.search(prompt, s + 1)
            if cut:
                seg = normalize_question(prompt[s:cut.start()])
                if seg in self.by_question:
                    return seg
        if len(self.by_question) <= _SCAN_LIMIT:
            best, best_pos = None, -1
            for q in self.by_question:
                pos = key.rfind(q)
                if pos > best_pos or (pos == best_pos and pos >= 0 and len(q) > len(best)):
                    best, best_pos = q, pos
            return best if best_pos >= 0 else None
        return None


def scripted_text(prompt: str, index: int, script: list[str] | None, pad_tokens: int) -> str:
    """Text for a prompt with no recorded rationale: the script's lines in turn, or a
    deterministic made-up rationale, padded to about ``pad_tokens`` tokens."""
    h = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
    if script:
        text = script[index % len(script)]
    else:
        a, b = h[0] % 50 + 2, h[1] % 50 + 2
        text = (f"Let's think step by step.\nWe need {a} + {b}.\n"
                f"Adding them gives {a + b}.\nThe answer is $\\boxed{{{a + b}}}$.")
    have = count_tokens(text)
    if pad_tokens > have:
        filler = " ".join(f"step{i}" for i in range(pad_tokens - have))
        text = f"{filler}\n{text}"
    return text


class Responder:
    """Chooses completions for prompts. Successive requests for the same question get
    successive recorded rationales (cycling), so K requests see K different ones."""

    def __init__(self, library: Library | None = None, script: list[str] | None = None,
                 pad_tokens: int = 0) -> None:
        self.library = library or Library()
        self.script = script
        self.pad_tokens = pad_tokens
        self._next: dict[str, int] = defaultdict(int)

    def respond(self, prompt: str, n: int, max_tokens: int | None,
                force_length: bool = False) -> tuple[str | None, list[Completion]]:
        """(matched question key or None, ``n`` completions) for a prompt."""
        key = self.library.find(prompt)
        out = []
        for _ in range(n):
            if key is not None:
                texts = self.library.by_question[key]
                i = self._next[key]
                self._next[key] = i + 1
                text, replayed = texts[i % len(texts)], True
            else:
                i = self._next[prompt]
                self._next[prompt] = i + 1
                text, replayed = scripted_text(prompt, i, self.script, self.pad_tokens), False
            out.append(finish(text, max_tokens, force_length, replayed))
        return key, out


def finish(text: str, max_tokens: int | None, force_length: bool, replayed: bool) -> Completion:
    """Apply the token limit (or a forced truncation fault) to a chosen text."""
    tokens = count_tokens(text)
    limit = max_tokens if max_tokens is not None else tokens
    if force_length:
        limit = min(limit, max(1, tokens // 2))
    if tokens > limit:
        cut = truncate_tokens(text, limit)
        return Completion(cut, "length", count_tokens(cut), replayed)
    return Completion(text, "stop", tokens, replayed)
