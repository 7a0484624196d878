"""Decide whether two parsed answers are equal, and by which rule.

The third of the grader's steps. Structure (lists, sets, tuples, intervals, relations,
matrices) and plain numbers are compared here without sympy; only scalar expressions
that are not plain numbers (``\\sqrt{2}/2``, ``x^2+1``, ``3+4i``) reach
:mod:`curator.grading.symbolic`. A caller that must not run sympy in its own process
(the main process, which has no hard time limit) passes ``Context(sympy=False)`` and gets
:class:`NeedsSympy` when the verdict needs it, so it can send the pair to a worker that
can be killed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from curator.grading import screen
from curator.grading.normalize import Answer, is_label, normalize_text, parse_number
from curator.grading.verdict import CORRECT, UNPARSEABLE, WRONG, Verdict



class NeedsSympy(Exception):
    """The verdict needs sympy and the context does not allow it here."""


@dataclass(frozen=True)
class Context:
    """``approx``: the question asks for a rounded or decimal answer, so a decimal that
    rounds to the reference (or that the exact reference rounds to) counts.
    ``sympy``: whether sympy may run in this process."""
    approx: bool = False
    sympy: bool = True


_APPROX_Q = re.compile(
    r"nearest|round(?:ed|ing)?\b|decimal|approximat|estimate|significant\s+(?:fig|dig)|"
    r"\b(?:one|two|three|four|\d+)\s+(?:decimal\s+)?places?|tenths?\b|hundredths?\b|thousandths?\b|"
    r"\bcents?\b", re.I)


def asks_for_approximation(question: str | None) -> bool:
    """True when the problem asks for a rounded or decimal answer."""
    return bool(question) and bool(_APPROX_Q.search(question))


def _sym():
    from curator.grading import symbolic  # heavy: sympy and the LaTeX parser
    return symbolic


def _ok(rule: str) -> Verdict:
    return Verdict(CORRECT, rule)


def _no(rule: str) -> Verdict:
    return Verdict(WRONG, rule)


# -- labels ("x = 5", "f(x) = 2x+3", "x \in [0, 1)") ----------------------------------

def _operand_text(a: Answer) -> str:
    return a.text if a.kind in ("expr", "interval", "tuple") else a.canonical()


def _is_label_operand(a: Answer) -> bool:
    if a.kind == "text":
        return len(a.text.split()) <= 3
    if a.kind in ("interval", "tuple", "ratio") and all(i.kind in ("expr", "choice") and is_label(i.text)
                                                         for i in a.items):
        return True  # "(p, q) = (3, 2)", "V_1 : V_2 = 11 : 21"
    return a.kind in ("expr", "choice") and is_label(_operand_text(a))


def strip_label(a: Answer) -> Answer:
    """``x = 5`` -> ``5``; ``x = 5 + 5 + 1 = 11`` -> ``11``; ``x \\in [0,1)`` -> the
    interval; lists are stripped element by element."""
    if a.kind == "relation" and a.ops and all(op in ("=", "in") for op in a.ops) \
            and _is_label_operand(a.items[0]):
        v = a.items[-1]
        if a.percent or a.degrees:
            from curator.grading.normalize import _with
            v = _with(v, percent=a.percent or v.percent, degrees=a.degrees or v.degrees)
        return v
    if a.kind in ("list", "set") and any(i.kind == "relation" for i in a.items):
        from curator.grading.normalize import _with
        return _with(a, items=tuple(strip_label(i) for i in a.items))
    return a


def _last_value(a: Answer) -> Answer:
    """``2 + 3 = 5`` -> ``5``: when the reference is not an equation, a chain of
    equalities commits to its last member."""
    if a.kind == "relation" and a.ops and all(op == "=" for op in a.ops):
        return a.items[-1]
    return a


# -- numbers ----------------------------------------------------------------------------

def _rounds_to(exact: Fraction, rounded: Fraction, digits: int) -> bool:
    """``rounded`` is ``exact`` rounded to ``digits`` decimals (either tie rule)."""
    return abs(exact - rounded) <= Fraction(1, 2) * Fraction(1, 10 ** digits)


def compare_numbers(ref: Answer, pred: Answer, ctx: Context) -> Verdict:
    rv, pv = ref.value, pred.value
    # Percent: "25\%" in the reference means the answer is the number 25 (the question
    # asked for a percent); "25\%" in a prediction is the value 0.25 or the percent 25.
    candidates = [pv]
    if pred.percent and not ref.percent:
        candidates.append(pv / 100)
    for v in candidates:
        if v == rv:
            return _ok("number" if not (pred.percent or ref.percent) else "percent")
    if ctx.approx:
        for v in candidates:
            rd, pd = ref.decimals, pred.decimals
            if rd is not None and (pd is None or pd > rd) and _rounds_to(v, rv, rd):
                return _ok("number-rounded")
            if pd is not None and rd is None and pd >= 1 and _rounds_to(rv, v, pd):
                return _ok("number-rounded")
    return _no("number")


def _as_number(a: Answer) -> Answer | None:
    if a.kind == "number":
        return a
    if a.kind == "ratio" and all(i.kind == "number" for i in a.items) and a.items[1].value != 0:
        return Answer("number", value=a.items[0].value / a.items[1].value)
    return None


# -- order-free matching ------------------------------------------------------------------

def _dedupe(items: tuple[Answer, ...]) -> tuple[Answer, ...]:
    seen, out = set(), []
    for i in items:
        c = i.canonical()
        if c not in seen:
            seen.add(c)
            out.append(i)
    return tuple(out)


def _match_unordered(refs: tuple[Answer, ...], preds: tuple[Answer, ...], ctx: Context) -> bool:
    """Every reference element matches a distinct predicted one and nothing is left over
    (repeated elements count once: these are sets of answers)."""
    refs, preds = _dedupe(refs), _dedupe(preds)
    if len(refs) != len(preds):
        return False
    left = list(preds)
    # exact canonical matches first, so sympy runs only on what is left
    rest = []
    for r in refs:
        c = r.canonical()
        for j, p in enumerate(left):
            if p.canonical() == c:
                del left[j]
                break
        else:
            rest.append(r)
    for r in rest:
        for j, p in enumerate(left):
            if compare(r, p, ctx).correct:
                del left[j]
                break
        else:
            return False
    return not left


def _match_ordered(refs, preds, ctx: Context) -> bool:
    return len(refs) == len(preds) and all(compare(r, p, ctx).correct for r, p in zip(refs, preds))


# -- intervals and relations -----------------------------------------------------------

_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}


def relation_as_interval(a: Answer) -> Answer | None:
    """``x \\ge 5`` -> ``[5, \\infty)``; ``-1 < x \\le 2`` -> ``(-1, 2]``, when the
    variable is a single label and the bounds are not."""
    if a.kind != "relation" or not all(op in ("<", "<=", ">", ">=") for op in a.ops):
        return None
    items, ops = list(a.items), list(a.ops)
    inf = Answer("infinity", sign=1)
    ninf = Answer("infinity", sign=-1)
    if len(items) == 2:
        if _is_label_operand(items[0]) and not _is_label_operand(items[1]):
            op, b = ops[0], items[1]
        elif _is_label_operand(items[1]) and not _is_label_operand(items[0]):
            op, b = _FLIP[ops[0]], items[0]
        else:
            return None
        if op == "<":
            return Answer("interval", items=(ninf, b), brackets="()")
        if op == "<=":
            return Answer("interval", items=(ninf, b), brackets="(]")
        if op == ">":
            return Answer("interval", items=(b, inf), brackets="()")
        return Answer("interval", items=(b, inf), brackets="[)")
    if len(items) == 3 and _is_label_operand(items[1]):
        if all(op in ("<", "<=") for op in ops):
            lo, hi = items[0], items[2]
            return Answer("interval", items=(lo, hi),
                          brackets=("(" if ops[0] == "<" else "[") + (")" if ops[1] == "<" else "]"))
        if all(op in (">", ">=") for op in ops):
            lo, hi = items[2], items[0]
            return Answer("interval", items=(lo, hi),
                          brackets=("(" if ops[1] == ">" else "[") + (")" if ops[0] == ">" else "]"))
    return None


def compare_intervals(ref: Answer, pred: Answer, ctx: Context) -> Verdict:
    if ref.brackets != pred.brackets:
        return _no("interval")
    return _ok("interval") if _match_ordered(ref.items, pred.items, ctx) else _no("interval")


def compare_relations(ref: Answer, pred: Answer, ctx: Context) -> Verdict:
    ri, pi = relation_as_interval(ref), relation_as_interval(pred)
    if ri is not None and pi is not None:
        return compare_intervals(ri, pi, ctx)
    if len(ref.ops) != 1 or len(pred.ops) != 1:
        if ref.ops == pred.ops and _match_ordered(ref.items, pred.items, ctx):
            return _ok("relation")
        return _no("relation")
    rop, pop = ref.ops[0], pred.ops[0]
    rl, rr = ref.items
    pl, pr = pred.items
    if pop == _FLIP[rop] and pop != rop:
        pl, pr, pop = pr, pl, rop
    if rop != pop:
        return _no("relation")
    # same sides first: cheap and covers most cases
    if _match_ordered((rl, rr), (pl, pr), ctx):
        return _ok("relation")
    if rop in ("=", "!=") and _match_ordered((rl, rr), (pr, pl), ctx):
        return _ok("relation")
    if not ctx.sympy:
        raise NeedsSympy
    return _sym().relations_equivalent(rl, rr, pl, pr, rop)


# -- the dispatcher ---------------------------------------------------------------------

_SEQ = ("list", "set", "tuple")
# a number, a space and a one-letter unit: metres, grams, seconds, hours, litres
_ONE_LETTER_UNIT = re.compile(r"^(-?[\d.]+)\s+[mgshlL]$")


_PLAIN_WORDS = re.compile(r"[A-Za-z]{2,}(?:\s+[A-Za-z]{2,})*")


def _plain_words(a: Answer) -> str | None:
    """The lower-cased text of an answer made only of words of 2+ letters, else None."""
    if a.kind not in ("expr", "text") or not a.text or a.percent or a.degrees:
        return None
    t = a.text.strip()
    return t.lower() if _PLAIN_WORDS.fullmatch(t) else None


# A literal division by zero: \frac{a}{0}, \dfrac{a}{0}, a/0 (not a/0.5 or a/05)
_DIVISION_BY_ZERO = re.compile(r"\\[dt]?frac\{[^{}]*\}\{0\}|/\s*0(?![\d.])")


def compare(ref: Answer, pred: Answer, ctx: Context = Context()) -> Verdict:
    """Is ``pred`` (an extracted answer) equal to ``ref`` (the reference)?"""
    if pred.kind == "empty":
        return _no("empty")
    if ref.kind == "toolong" or pred.kind == "toolong":
        if ref.kind == pred.kind and ref.text == pred.text:
            return _ok("exact")
        return Verdict(UNPARSEABLE, "size-guard")
    ref = strip_label(ref)
    pred = strip_label(pred)
    if ref.kind != "relation":
        pred = _last_value(pred)
    if ref.kind == pred.kind and ref.canonical() == pred.canonical() and ref.percent == pred.percent:
        if _DIVISION_BY_ZERO.search(ref.canonical()):
            return _no("undefined")  # undefined values match nothing, not even themselves
        return _ok("exact")

    rk, pk = ref.kind, pred.kind

    # "No" and "no", "YES" and "yes": words, whose case is ignored (single letters keep
    # theirs: x and X are different variables)
    rw, pw = _plain_words(ref), _plain_words(pred)
    if rw is not None and rw == pw:
        return _ok("text")

    if pk == "choice" and rk != "choice" and pred.extra.get("value"):
        # "The answer is (A) 29" to a question that is not multiple choice: the value
        # counts, the letter the model put in front of it does not
        from curator.grading.normalize import parse
        return compare(ref, parse(pred.extra["value"]), ctx)

    if rk == "choice":
        if pk == "choice":
            return _ok("choice") if ref.text == pred.text else _no("choice")
        if pk == "text" and ref.extra.get("label"):
            label = normalize_text(re.sub(r"^\([A-J]\)\s*", "", ref.extra["label"]))
            return _ok("choice-text") if pred.text == label else _no("choice")
        return _no("choice")

    if rk == "text":
        other = pred.text if pk == "text" else normalize_text(pred.text or pred.canonical())
        return _ok("text") if other == ref.text else _no("text")
    if pk == "text":
        return _ok("text") if normalize_text(ref.text or ref.canonical()) == pred.text else _no("text")

    if rk == "number":
        pn = _as_number(pred)
        if pn is not None:
            return compare_numbers(ref, _keep_flags(pn, pred), ctx)
        m = _ONE_LETTER_UNIT.match(pred.text) if pk == "expr" else None
        if m and parse_number(m.group(1)) is not None:
            # "24 m" against the number 24 is a length in metres, not 24 times m
            return compare_numbers(ref, parse_number(m.group(1)), ctx)
        if pk == "expr":
            return _sympy_scalar(ref, pred, ctx)
        if pk in _SEQ and len(pred.items) == 1:
            return compare(ref, pred.items[0], ctx)
        if pk == "time" and pred.ampm is None:
            return _no("number")
        if pk == "time" and ref.decimals is None and ref.value.denominator == 1 and 1 <= ref.value <= 12:
            # "What time will it be?": "9" and "9 p.m." are the same clock reading
            return _ok("time") if pred.value % 60 == 0 and pred.value // 60 % 12 == ref.value % 12 \
                else _no("time")
        if pk == "base" and ref.decimals is None and ref.value.denominator == 1 and ref.value >= 0:
            # the reference wrote the digits of a base-b answer without the subscript
            # ("110111" for "110111_2"): the same digits are the same answer
            return _ok("base") if str(ref.value.numerator) == pred.text else _no("base")
        return _no("kind")

    if rk == "infinity":
        return _ok("infinity") if pk == "infinity" and pred.sign == ref.sign else _no("infinity")

    if rk == "time":
        if pk == "time":
            if ref.ampm is None and pred.ampm is None or ref.ampm and pred.ampm:
                return _ok("time") if ref.value == pred.value else _no("time")
            if ref.ampm is None and ref.value >= 12 * 60 or pred.ampm is None and pred.value >= 12 * 60:
                return _ok("time") if ref.value == pred.value else _no("time")
            # one side wrote "8:34 p.m.", the other "8:34": the same clock reading
            return _ok("time") if ref.value % 720 == pred.value % 720 else _no("time")
        if ref.items and pk in ("ratio", "number"):
            return compare(Answer("ratio", items=ref.items), pred, ctx)
        return _no("kind")

    if rk == "ratio":
        if pk in ("ratio", "time") and pred.items:
            a, b = ref.items
            c, d = pred.items
            if all(x.kind == "number" for x in (a, b, c, d)):
                return _ok("ratio") if a.value * d.value == b.value * c.value else _no("ratio")
            return _ok("ratio") if _match_ordered(ref.items, pred.items, ctx) else _no("ratio")
        rn = _as_number(ref)
        if rn is not None and pk == "number":
            return compare_numbers(rn, pred, ctx)
        return _no("kind")

    if rk == "base":
        if pk == "base":
            if pred.base == ref.base:
                return _ok("base") if pred.text == ref.text else _no("base")
            return _no("base")
        if pk == "number" and pred.value.denominator == 1 and pred.value >= 0 and pred.decimals is None:
            # the question asked for base b; digits written without the subscript count
            return _ok("base") if str(pred.value.numerator) == ref.text else _no("base")
        return _no("kind")

    if rk == "matrix":
        if pk == "matrix":
            if [len(r) for r in ref.rows] != [len(r) for r in pred.rows]:
                return _no("matrix")
            flat_r = tuple(c for r in ref.rows for c in r)
            flat_p = tuple(c for r in pred.rows for c in r)
            return _ok("matrix") if _match_ordered(flat_r, flat_p, ctx) else _no("matrix")
        vec = _vector(ref)
        if vec is not None and pk in ("tuple", "list") or (vec is not None and pk == "interval"):
            return _ok("vector") if _match_ordered(vec, pred.items, ctx) else _no("vector")
        return _no("kind")

    if rk in _SEQ or rk == "interval":
        return _compare_sequences(ref, pred, ctx)

    if rk == "union":
        if pk == "union":
            return _ok("union") if _match_unordered(ref.items, pred.items, ctx) else _no("union")
        return _no("kind")

    if rk == "relation":
        if pk == "relation":
            return compare_relations(ref, pred, ctx)
        ri = relation_as_interval(ref)
        if ri is not None and pk == "interval":
            return compare_intervals(ri, pred, ctx)
        return _no("relation")

    if rk == "expr":
        if pk in ("number", "expr"):
            return _sympy_scalar(ref, pred, ctx)
        if pk == "choice":
            return _ok("text") if ref.text == pred.text else _no("kind")
        if pk in _SEQ and len(pred.items) == 1:
            return compare(ref, pred.items[0], ctx)
        if pk == "relation" and pred.ops and pred.ops[-1] == "=":
            return compare(ref, pred.items[-1], ctx)
        return _no("kind")

    return _no("kind")


def _as_point(ref: Answer, pred: Answer, ctx: Context, kinds: tuple[str, ...]) -> Verdict:
    """An ordered reference against a prediction of one of ``kinds`` or a column/row
    vector: compared element by element."""
    if pred.kind in kinds:
        return _ok("tuple") if _match_ordered(ref.items, pred.items, ctx) else _no("tuple")
    if pred.kind == "matrix":
        vec = _vector(pred)
        if vec is not None:
            return _ok("vector") if _match_ordered(ref.items, vec, ctx) else _no("vector")
    return _no("kind")


def _keep_flags(n: Answer, like: Answer) -> Answer:
    if n is like:
        return n
    from curator.grading.normalize import _with
    return _with(n, percent=like.percent)


def _vector(m: Answer) -> tuple[Answer, ...] | None:
    if len(m.rows) == 1:
        return m.rows[0]
    if all(len(r) == 1 for r in m.rows):
        return tuple(r[0] for r in m.rows)
    return None


def _compare_sequences(ref: Answer, pred: Answer, ctx: Context) -> Verdict:
    rk, pk = ref.kind, pred.kind
    if rk == "interval":
        if pk == "interval":
            return compare_intervals(ref, pred, ctx)
        if pk == "relation":
            pi = relation_as_interval(pred)
            if pi is not None:
                return compare_intervals(ref, pi, ctx)
        # a point "(3, -1)" written without its parentheses
        return _as_point(ref, pred, ctx, ("list",) if ref.brackets == "()" else ())
    if rk == "tuple":
        return _as_point(ref, pred, ctx, ("tuple", "list"))
    # list or set: the order of the answers does not matter
    if pk in ("list", "set"):
        return _ok(rk) if _match_unordered(ref.items, pred.items, ctx) else _no(rk)
    if pk in ("tuple", "interval") and rk == "list":
        if _match_ordered(ref.items, pred.items, ctx):
            return _ok("list")
        return _no("list")
    if len(ref.items) == 1:
        return compare(ref.items[0], pred, ctx)
    if pk == "number" and pred.extra.get("grouped"):
        # "81,256" where the reference lists "81, 256": the comma separates two answers
        from curator.grading.normalize import parse
        items = tuple(parse(x) for x in pred.extra["grouped"].split(","))
        return compare(ref, Answer("list", items=items, text=pred.extra["grouped"]), ctx)
    return _no("count")


def _screen_text(a: Answer) -> str | None:
    if a.kind == "number" and not a.percent:
        return a.canonical()
    if a.kind == "expr":
        return a.text
    return None


def _sympy_scalar(ref: Answer, pred: Answer, ctx: Context) -> Verdict:
    if not ctx.approx:
        rt, pt = _screen_text(ref), _screen_text(pred)
        if rt and pt and screen.clearly_different(rt, pt):
            return _no("numeric-screen")
    if not ctx.sympy:
        raise NeedsSympy
    return _sym().scalars_equal(ref, pred, approx=ctx.approx)
