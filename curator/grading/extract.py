"""Find the final answer a rationale commits to.

Extraction is the first of three separate steps (extract, normalise/parse, compare), so
each can be tested and debugged on its own. Every function here is pure and runs in time
linear in the input: it is applied to untrusted model output in the main process, before
any worker process guards the slow sympy step.

Order of the rules (the first that finds something wins; :func:`extract` reports which):

1. ``boxed``: the last balanced ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5``; boxes
   written next to each other in the final sentence ("x = \\boxed{2} or x = \\boxed{3}")
   are joined with ", ".
2. ``phrase``: the text after the last "final answer is", "the answer is", "answer:" of
   the closing part of the rationale, up to the end of its sentence.
3. ``hashes``: GSM8K's ``#### N``.
4. ``bare``: a short one-line completion is itself the answer ("0.5", "$\\frac12$", "Mrs. Hilt").
5. ``last-math``: the last ``$...$`` / ``\\(...\\)`` / ``\\[...\\]`` of the final sentence,
   else the last number in it.

Multiple-choice letters are read from what those rules found (or the final sentence)
only when the caller says the problem is multiple choice, since a lone capital letter is
otherwise a legitimate answer (a point, a variable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from curator.latex import close_brace

# Rationales are a few kilobytes; a hostile one may be megabytes. Only the tail can hold
# the final answer, so everything past this many characters from the end is ignored.
MAX_SCAN_CHARS = 200_000
# How far from the end answer phrases are looked for.
PHRASE_WINDOW = 6_000
# A completion this short, on one line and without sentence structure, is a bare answer.
BARE_MAX_CHARS = 80

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Make any str safe to process and store: lone surrogates (which cannot be encoded
    as UTF-8, e.g. from a broken JSON escape) become U+FFFD, NUL bytes are dropped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub("\ufffd", text)
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text


@dataclass(frozen=True)
class _Box:
    start: int      # index of the backslash
    end: int        # index after the closing brace (or the bare token)
    content: str


def _boxes_from_end(text: str, limit: int = 8) -> list[_Box]:
    """Up to ``limit`` balanced boxes, last first, in time linear in ``len(text)``.

    Scanning right to left, each earlier candidate is only scanned up to the start of the
    candidate after it: if that later box was unbalanced, an enclosing group can never
    close either (the later one never returns to its depth), and if it was balanced only
    boxes that end before it matter (for joining "\\boxed{1} and \\boxed{2}"). So every
    character is visited a bounded number of times, even in a 10 MB string of "\\boxed{".
    """
    found: list[_Box] = []
    starts = [m.start() for m in _BOX.finditer(text)]
    n = len(text)
    bound = n  # the last candidate may close anywhere; earlier ones only before the next
    for s in reversed(starts):
        m = _BOX.match(text, s)
        j = m.end()
        while j < n and text[j] in " \t\n":
            j += 1
        if j < n and text[j] == "{":
            end = close_brace(text, j, max(bound, j + 1))
            if end is not None:
                found.append(_Box(s, end, text[j + 1:end - 1]))
        elif text.startswith("\\boxed", s) and j > m.end():
            tok = re.match(r"[^\s$]+", text[j:j + 200])
            if tok:
                found.append(_Box(s, j + tok.end(), tok.group(0).rstrip(".,")))
        if len(found) >= limit:
            break
        bound = s
    return found


# What may stand between boxes that together make one answer: separators, math
# delimiters, spacing commands and a short "x =" label.
_JOINER = re.compile(
    r"^(?:\\quad|\\qquad|\\text\{\s*(?:and|or)\s*\}|\band\b|\bor\b|[,;.]|\\\\|\s|\$|\\[()\[\]]"
    r"|\\[,;!]|[A-Za-z](?:_\{?\w+\}?)?\s*=)*$", re.I)


def last_boxed_answer(text: str, boxes: list[_Box] | None = None) -> str | None:
    """The content of the last balanced box, joined with the boxes right before it when
    only separators ("and", "or", ",") stand between them."""
    if boxes is None:
        boxes = _boxes_from_end(text)
    if not boxes:
        return None
    group = [boxes[0]]
    for prev in boxes[1:]:
        between = text[prev.end:group[-1].start]
        if len(between) <= 40 and _JOINER.match(between) and prev.content.strip() != group[-1].content.strip():
            group.append(prev)
        else:
            break
    return ", ".join(b.content.strip() for b in reversed(group))


# "The final answer is $x$. I hope it is correct." (Minerva), "The answer is 5.",
# "Final Answer: 5", "Answer: 5". The last occurrence counts.
_PHRASE = re.compile(
    r"(?:final\s+answer\s*(?:is|:)?|the\s+answer\s+(?:is|would\s+be|will\s+be)|answer\s+is|\banswer\s*:|\bans\s*:)\s*:?",
    re.I)
_HASHES = re.compile(r"####\s*([^\n]+)")
_HOPE = re.compile(r"\s*I\s+hope\s+it\s+is\s+correct.*$", re.I | re.S)


_ABBREVIATION = re.compile(r"(?i)(?:mr|mrs|ms|dr|st|a\.m|p\.m|[ap]\.?m|etc|vs|no)")


def _abbreviation_before(s: str, i: int) -> bool:
    """True when the period at ``s[i]`` ends a short abbreviation ("Mrs.", "p.m.")."""
    j = i
    while j > 0 and not s[j - 1].isspace() and i - j < 8:
        j -= 1
    return _ABBREVIATION.fullmatch(s[j:i]) is not None


def _sentence_end(s: str) -> str:
    """Cut ``s`` at the end of its first sentence: a period, '!' or '?' followed by space
    or the end, outside ``$...$`` and brackets (so "3.5" and "$x = 1.$" stay whole)."""
    depth = 0
    in_dollar = False
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "$":
            in_dollar = not in_dollar
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        elif c == "\n" and not in_dollar:
            return s[:i]
        elif c in ".!?" and not in_dollar and depth == 0:
            if i + 1 >= n or s[i + 1] in " \n\t":
                # "p.m." and "Mrs." are not sentence ends; "The answer is 8!" is a
                # factorial (in the TDG rationales always), "It is 5! Great." is not
                if _abbreviation_before(s, i) or (c == "!" and i > 0 and (s[i - 1].isdigit() or s[i - 1] in ")}")
                                                  and not s[i + 1:].lstrip()[:1].isupper()):
                    i += 1
                    continue
                return s[:i]
        i += 1
    return s


def strip_math_delimiters(s: str) -> str:
    """Remove surrounding ``$``, ``$$``, ``\\(...\\)``, ``\\[...\\]`` and spaces."""
    s = s.strip()
    for _ in range(3):
        before = s
        if s.startswith("$$") and s.endswith("$$") and len(s) >= 4:
            s = s[2:-2].strip()
        elif s.startswith("$") and s.endswith("$") and len(s) >= 2:
            s = s[1:-1].strip()
        elif (s.startswith("\\(") and s.endswith("\\)")) or (s.startswith("\\[") and s.endswith("\\]")):
            s = s[2:-2].strip()
        if s == before:
            break
    return s


def _last_phrase(tail: str) -> re.Match | None:
    """The last match of ``_PHRASE`` in ``tail``. Every phrase contains "ans", at most a
    dozen characters from its start, so the regex (slow: case-insensitive, no literal
    prefix) runs only from just before each "ans", last first."""
    low = tail.lower()
    end = len(low)
    while True:
        pos = low.rfind("ans", 0, end)
        if pos < 0:
            return None
        last = None
        for m in _PHRASE.finditer(tail, max(0, pos - 12)):
            last = m
        if last is not None:
            return last
        end = pos


# 'The answer is "A,B,E".', 'The answer is "P" for parabola.': the quoted part
_QUOTED = re.compile(r'\\?["\u201c]([^"\u201c\u201d\n]{1,300}?)\\?["\u201d]')


# Where the answer ends and a remark about it begins: "24, which is 4 more", "8 because
# 4 * 2 = 8", "24 (4 more than last week)", "10 (option B)".
_CLAUSE = re.compile(
    r",\s*(?:which|so|because|since|as|that|meaning)\b|,\s*i\.\s?e\b|\s+(?:because|since|which)\b"
    r"|\s\((?=[^()]*?(?<![\\A-Za-z])[A-Za-z]{3})", re.I)


def _cut_clause(ans: str) -> str:
    """``ans`` up to the first clause boundary outside math and braces; lists ("2, 3 and
    5"), intervals, ``f(x)`` and ``2 (\\sqrt{3})`` are not cut."""
    if not ans:
        return ans
    for m in _CLAUSE.finditer(ans):
        i = m.start()
        if i == 0:
            continue
        before = ans[:i]
        if before.count("$") % 2 or before.count("{") != before.count("}") \
                or before.count("\\(") > before.count("\\)") or before.count("\\[") > before.count("\\]"):
            continue
        if before.count("(") != before.count(")") or before.count("[") != before.count("]"):
            continue
        # "The reason why the answer is 0 is because ...": the value, not "0 is"
        return re.sub(r"\s+(?:is|are|was|were)$", "", before.rstrip(), flags=re.I)
    return ans


# Markdown emphasis around an answer or a phrase ("**Final Answer:** 5", "is **5**."),
# but not Python's power operator ("2**3", "x**(n+1)").
_EMPHASIS = re.compile(r"(?<![\w)}\]])(?:\*\*|__)|(?:\*\*|__)(?![\w({\\\[])")


def strip_emphasis(text: str) -> str:
    """Markdown ``**``/``__`` markers replaced by spaces (positions are kept)."""
    if "**" not in text and "__" not in text:
        return text
    return _EMPHASIS.sub(lambda m: " " * len(m.group(0)), text)


def _phrase_answer(text: str) -> tuple[int, str | None]:
    """(position in ``text``, answer) after the last answer phrase, or (-1, None)."""
    offset = max(0, len(text) - PHRASE_WINDOW)
    tail = text[offset:]
    last = _last_phrase(tail)
    if last is None:
        return -1, None
    rest = tail[last.end():]
    rest = _HOPE.sub("", rest).lstrip(" :\t")
    # "Final Answer: The final answer is 5" is handled by taking the last phrase; an
    # answer on the next line ("The answer is:\n\n$5$") is allowed.
    if rest.startswith("\n"):
        rest = rest.lstrip()
    quoted = _QUOTED.match(rest)
    ans = quoted.group(1) if quoted else _cut_clause(_sentence_end(rest).strip())
    ans = strip_math_delimiters(ans.strip().rstrip(" .,;:"))
    if _is_sentence(ans):
        # "The final answer is: the volume of $ABCD$ is 120" -> 120
        ans = _last_math(ans) or ans
    return offset + last.start(), ans or None


_DISPLAY_MATH = re.compile(r"\\\[.*?\\\]|\$\$.*?\$\$", re.S)
_CHAT_TOKEN = re.compile(r"<\|[^|>]{1,40}\|>\w*")


def _final_sentence(text: str) -> str:
    """The last non-empty line of the text, and of it the last sentence (math kept
    whole; chat-template tokens and "I hope it is correct." dropped)."""
    tail = _CHAT_TOKEN.sub(" ", text[-4000:])
    tail = _HOPE.sub("", tail)
    tail = _DISPLAY_MATH.sub(lambda m: " " + m.group(0).replace("\n", " ") + " ", tail)
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1].strip()
    # Split into sentences at ". " outside math; keep the last one that has content.
    parts = []
    buf = []
    in_dollar = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            buf.append(line[i:i + 2])
            i += 2
            continue
        if c == "$":
            in_dollar = not in_dollar
        buf.append(c)
        if c == "\u3002" or c in ".!?" and not in_dollar and (i + 1 == len(line) or line[i + 1] == " ") \
                and not (c == "." and _abbreviation_before(line, i)):
            parts.append("".join(buf))
            buf = []
        i += 1
    if buf:
        parts.append("".join(buf))
    parts = [p.strip() for p in parts if p.strip(" .!?")]
    return parts[-1] if parts else line


_MATH_SPANS = re.compile(r"\$\$(.+?)\$\$|\$([^$\n]+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)
# a number in running text: "1,000.99", "-3", ".5", "2/3", "25%"; not inside a word
# ("AZYUK2A"), but units may follow ("1,000.99m²", "3页")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.,/])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?:\s?%)?(?![0-9])"
                     r"|(?<![A-Za-z0-9_.])-?\.\d+(?![0-9])")


def _last_math(sentence: str) -> str | None:
    """The last math span or the last number, whichever comes later."""
    best_end, best = -1, None
    for m in _MATH_SPANS.finditer(sentence):
        inner = next(g for g in m.groups() if g is not None).strip()
        if inner:
            best_end, best = m.end(), inner.rstrip(" .,;")
    for m in _NUMBER.finditer(sentence):
        if m.start() >= best_end:
            best_end, best = m.end(), m.group(0).replace(" ", "")
    return best


_CHOICE = re.compile(r"(?<![A-Za-z\\])\(?([A-J])\)?(?![A-Za-z])")


def choice_letter(answer: str, *, last: bool = False) -> str | None:
    """A multiple-choice letter in ``answer``: ``C``, ``(C)``, ``\\text{(C)}``,
    ``\\textbf{(C) } 65.13``, "C. it can't be A": the first one, or the last with
    ``last=True`` (for a free sentence such as "It is not A, therefore it's B")."""
    s = re.sub(r"\\(?:text|textbf|mathrm|mathbf|textrm|mbox)\s*\{([^{}]*)\}", r"\1", answer)
    s = s.replace("$", " ")
    found = [m.group(1) for m in _CHOICE.finditer(s)]
    # "I" and "A" are also English words: only count them when they stand alone or in
    # parentheses.
    keep = []
    for m in _CHOICE.finditer(s):
        letter = m.group(1)
        whole = m.group(0)
        if letter in "AI" and not whole.startswith("("):
            after = s[m.end():m.end() + 2]
            before = s[max(0, m.start() - 1):m.start()]
            if re.match(r" [a-z]", after) or (letter == "I" and before in ("", " ") and re.match(r" \w", after)):
                continue
        keep.append(letter)
    found = keep
    if not found:
        return None
    return found[-1] if last else found[0]


_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_NOT_WORDS = {"and", "or", "sin", "cos", "tan", "log", "ln", "pi", "sqrt", "frac"}


def _words(s: str) -> int:
    """English words outside math spans (two letters or more, not "and"/"or")."""
    outside = _MATH_SPANS.sub(" ", s)
    return sum(1 for w in _WORD.findall(outside) if w.lower() not in _NOT_WORDS)


def _is_sentence(s: str) -> bool:
    return _words(s) >= 3


# two or more Chinese, Japanese or Korean characters: words, which _WORD does not see
_CJK_WORD = re.compile("[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]{2,}")


def _is_bare(s: str) -> bool:
    """A short one-line answer rather than a sentence ("0.5", "$\\frac12$",
    "(2x-1)(2x+1)", "Mrs. Hilt", "10 square units"): at most 3 words outside math."""
    if len(s) > BARE_MAX_CHARS or "\n" in s:
        return False
    if _CJK_WORD.search(s):
        return False  # "计划的比例为13/28" is a sentence ("the planned ratio is 13/28")
    n = _words(s)
    if n and _MATH_SPANS.search(s):
        return False  # "We find that $x < 3$": the math is the answer, not the words
    return n <= 3


@dataclass(frozen=True)
class Extraction:
    """What :func:`extract` found: the answer text and the rule that found it."""
    answer: str | None
    rule: str


def extract(text: str, *, multiple_choice: bool = False) -> Extraction:
    """The final answer of a rationale (or a bare answer) and the rule that found it."""
    if not isinstance(text, str):
        return Extraction(None, "no-answer")
    text = clean_text(text)
    if len(text) > MAX_SCAN_CHARS:
        text = text[-MAX_SCAN_CHARS:]
    text = strip_emphasis(text)
    stripped = text.strip()
    if not stripped:
        return Extraction(None, "no-answer")

    found: Extraction | None = None
    boxes = _boxes_from_end(text)
    boxed = last_boxed_answer(text, boxes)
    phrase_at, ph = _phrase_answer(text)
    # A closing "The final answer is X" after the last box is what the rationale commits
    # to last (a box may hold an intermediate result).
    if boxed is not None and not (ph and phrase_at > boxes[0].end):
        found = Extraction(boxed.strip(), "boxed")
    elif ph:
        found = Extraction(ph, "phrase")
    if found is None:
        m = None
        for m in _HASHES.finditer(text[-PHRASE_WINDOW:]):
            pass
        if m is not None:
            found = Extraction(strip_math_delimiters(m.group(1).strip().rstrip(".")), "hashes")
    # A box that never closes is a truncated or broken answer: guessing from the text
    # around it would grade the model on something it did not commit to.
    broken_box = boxed is None and _BOX.search(text) is not None
    if found is None and not broken_box and _is_bare(stripped):
        found = Extraction(strip_math_delimiters(stripped.rstrip(" .")), "bare")
    if multiple_choice:
        if found is not None and found.answer:
            letter = choice_letter(found.answer)
            if letter:
                return Extraction(letter, found.rule + "-choice")
            return found
        # "B.", "(B):", "B" alone, or "B。不是 A" (the letter, then a sentence in Chinese)
        m = re.match(r"\s*\(?([A-J])\)?(?:[.:)\u3002\uff0c\uff1a]|\s*$|\s*[\u3400-\u9fff])", text)
        if m:
            return Extraction(m.group(1), "leading-choice")
        letter = choice_letter(_final_sentence(text), last=True)
        if letter:
            return Extraction(letter, "last-choice")
        return Extraction(None, "no-answer")
    if found is None and not broken_box:
        sentence = _final_sentence(text)
        last = _last_math(sentence) if sentence else None
        if last:
            found = Extraction(last, "last-math")
    if found is None or not found.answer or not found.answer.strip():
        return Extraction(None if found is None else found.answer, "no-answer")
    return found


def extract_answer(text: str, *, multiple_choice: bool = False) -> str | None:
    """The final answer a rationale commits to, as raw text, or None when it has none.

    See the module docstring for the rules and their order.
    """
    got = extract(text, multiple_choice=multiple_choice)
    return got.answer if got.rule != "no-answer" else None
