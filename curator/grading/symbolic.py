"""Equality of scalar expressions with sympy, parsed by latex2sympy2_extended.

Only :mod:`curator.grading.compare` calls this, and only for scalars that are not plain
numbers. It can be slow (parsing with ANTLR costs milliseconds; ``simplify`` can take
forever), so in the main process it only ever runs inside a worker process that is killed
at the time limit (:mod:`curator.grading.pool`). Size guards refuse power towers, huge
factorials and huge trees before sympy tries to evaluate them.

Decisions:

* Decimal literals are read as exact rationals (``0.5`` is ``1/2``), so a rounded
  decimal is never equal to an irrational or to a non-terminating fraction (``1.414`` is
  not ``\\sqrt2``; ``0.33`` is not ``1/3``), unless the question asks for a decimal or
  rounding (``approx``), in which case it must be the correct rounding to the digits it
  shows.
* Closed-form numbers are compared by value at 50 significant digits: two expressions
  that agree to 40 digits are the same number.
* Expressions with variables are equal when ``expand(a - b)`` is 0, or, as a fallback,
  when ``a - b`` vanishes at several random rational points (rule ``sympy-points``).
* ``i`` is the imaginary unit, ``e`` is Euler's number, ``\\pi`` is pi.
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

import sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig, latex2sympy

from curator.grading.verdict import CORRECT, UNPARSEABLE, WRONG, Verdict
from curator.grading.normalize import Answer

_CONFIG = ConversionConfig(interpret_as_mixed_fractions=True, lowercase_symbols=False,
                           interpret_simple_eq_as_assignment=False)

MAX_TREE_NODES = 400
MAX_DIGITS = 100_000          # an integer with more digits is not evaluated
MAX_EXPONENT = 10 ** 6
PRECISION = 50
TOLERANCE = sympy.Float(10) ** -40


class TooBig(Exception):
    """The expression would take unbounded time or memory to evaluate."""


_DECIMAL = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?![\d.])")
_IMAG = re.compile(r"(?<![A-Za-z\\])i(?![A-Za-z])")


def _exact_decimals(tex: str) -> str:
    """Rewrite decimal literals as exact fractions before parsing (sympy would make a
    15-digit binary float of them)."""
    return _DECIMAL.sub(lambda m: "{\\frac{%s}{1%s}}" % (int(m.group(1) + m.group(2)), "0" * len(m.group(2))), tex)


@functools.lru_cache(maxsize=8192)
def to_sympy(tex: str):
    """The sympy value of a LaTeX scalar; raises on what cannot be parsed."""
    if len(tex) > 1000:
        raise TooBig("answer too long")
    t = _exact_decimals(tex)
    t = _IMAG.sub("I", t)
    expr = latex2sympy(t, normalization_config=None, conversion_config=_CONFIG)
    guard(expr)
    return expr


def _small_value(e) -> complex:
    """Numeric value of an already guarded, small expression (an exponent)."""
    return complex(sympy.N(e, 15))


def _log10_bound(e, depth: int = 0) -> float:
    """A rough upper bound on log10 |value| of a number-valued tree (symbols count as
    about 10), raising TooBig when evaluating it would be unbounded: power towers,
    exponents above a million, factorials of more than 20,000."""
    if depth > 60:
        raise TooBig("nesting too deep")
    if isinstance(e, sympy.Rational):
        p, q = abs(int(e.p)), int(e.q)
        return max(p.bit_length() - q.bit_length() + 1, 0) * 0.30103
    if isinstance(e, sympy.Float):
        return math.log10(abs(float(e)) + 1)
    if isinstance(e, sympy.Pow) or isinstance(e, sympy.exp):
        b, x = (sympy.E, e.args[0]) if isinstance(e, sympy.exp) else e.args
        lb = _log10_bound(b, depth + 1)
        _log10_bound(x, depth + 1)  # refuses exponents that are towers themselves
        if not x.is_number:
            return lb * 10 + 1
        xv = _small_value(x)  # safe: the exponent passed the guard
        if abs(xv) > MAX_EXPONENT:
            if b.is_number and b in (sympy.Integer(0), sympy.Integer(1), sympy.Integer(-1)):
                return 1
            raise TooBig("exponent too large")
        if xv.real < 0 and isinstance(b, sympy.Rational) and b != 0:
            lb = _log10_bound(1 / b, depth + 1)  # (1/10)^(-n) is large, 10^(-n) small
        elif xv.real < 0:
            lb = 1
        bound = lb * max(abs(xv), 1)
        if bound > MAX_DIGITS:
            raise TooBig("power too large")
        return bound
    if isinstance(e, (sympy.factorial, sympy.gamma, sympy.factorial2)):
        ln = _log10_bound(e.args[0], depth + 1)
        if ln > 5:
            raise TooBig("factorial too large")
        if e.args[0].is_number:
            nv = abs(_small_value(e.args[0]))
            if nv > 20_000:
                raise TooBig("factorial too large")
            return nv * math.log10(max(nv, 2)) + 1
        return 10
    if isinstance(e, sympy.Mul):
        return sum(max(_log10_bound(a, depth + 1), 0) for a in e.args)
    if isinstance(e, sympy.Add):
        return max(_log10_bound(a, depth + 1) for a in e.args) + math.log10(len(e.args))
    if e.args:
        return max(_log10_bound(a, depth + 1) if isinstance(a, sympy.Basic) else 1
                   for a in e.args) + 1
    return 1


def guard(expr) -> None:
    """Refuse expressions too large to evaluate safely."""
    if not isinstance(expr, sympy.Basic):
        if isinstance(expr, sympy.MatrixBase):
            for x in expr:
                guard(x)
            return
        return
    n = 0
    for _ in sympy.preorder_traversal(expr):
        n += 1
        if n > MAX_TREE_NODES:
            raise TooBig("expression too large")
    _log10_bound(expr)


def _value(a: Answer):
    if a.kind == "number":
        v = a.value
        return sympy.Rational(v.numerator, v.denominator)
    if a.kind == "infinity":
        return sympy.oo if a.sign > 0 else -sympy.oo
    if a.kind == "expr":
        return to_sympy(a.text)
    raise ValueError(f"not a scalar: {a.kind}")


def _numeric(expr, precision: int = PRECISION):
    """(re, im) at ``precision`` digits, or None when it does not evaluate to a finite number."""
    try:
        v = sympy.N(expr, precision)
    except Exception:
        return None
    if not v.is_number or v.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        return None
    try:
        re_, im_ = v.as_real_imag()
        re_, im_ = sympy.N(re_, precision), sympy.N(im_, precision)
        if not (re_.is_Number and im_.is_Number):
            return None
        return re_, im_
    except Exception:
        return None


def _close(a, b) -> bool:
    """Equal within 1e-40, relative below 1 and absolute above (callers evaluate large
    values with enough digits for an absolute comparison: 2^2005 + 1 is not 2^2005)."""
    scale = min(sympy.Float(1), max(abs(a[0]), abs(a[1]), abs(b[0]), abs(b[1])))
    if scale == 0:
        return True
    return abs(a[0] - b[0]) <= TOLERANCE * scale and abs(a[1] - b[1]) <= TOLERANCE * scale


def _precision_for(*exprs) -> int:
    """Digits needed to compare values absolutely: 50 plus their order of magnitude."""
    mag = 0
    for e in exprs:
        v = _numeric(e, 15)
        if v is not None:
            m = max(abs(v[0]), abs(v[1]))
            if m > 1:
                mag = max(mag, int(sympy.log(m, 10).evalf(15)) + 1)
    return PRECISION + min(mag, MAX_DIGITS)


_POINTS = [(7, 5), (13, 11), (29, 17), (5, 3), (31, 23)]


_INTEGER_POINTS = [3, 4, 6, 7, 9]


def _sample_points(symbols, count: int = 4, integers: bool = False):
    syms = sorted(symbols, key=lambda s: s.name)
    for k in range(count):
        if integers:
            yield {s: sympy.Integer(_INTEGER_POINTS[(k + j) % len(_INTEGER_POINTS)] + j) for j, s in enumerate(syms)}
        else:
            yield {s: sympy.Rational(*_POINTS[(k + j) % len(_POINTS)]) + j for j, s in enumerate(syms)}


def _counts(e) -> bool:
    """True for expressions in a count variable (sums, products, factorials, binomials):
    only integers are meaningful points, and sympy can spend minutes on a sum up to 7/5."""
    return e.has(sympy.Sum, sympy.Product, sympy.factorial, sympy.binomial)


def _decimal_digits(a: Answer) -> int | None:
    if a.kind == "number":
        return a.decimals
    return None


def _value_or_verdict(a: Answer, unparseable_rule: str):
    """``(value, None)``, or ``(None, verdict)`` when ``a`` is too big or will not parse."""
    try:
        return _value(a), None
    except TooBig:
        return None, Verdict(UNPARSEABLE, "size-guard")
    except Exception:
        return None, Verdict(UNPARSEABLE, unparseable_rule)


def scalars_equal(ref: Answer, pred: Answer, *, approx: bool = False) -> Verdict:
    r, bad = _value_or_verdict(ref, "reference-unparseable")
    if bad is not None:
        return bad
    p, bad = _value_or_verdict(pred, "unparseable")
    if bad is not None:
        return bad
    return values_equal(r, p, approx_digits=_approx_digits(ref, pred) if approx else None)


def _approx_digits(ref: Answer, pred: Answer) -> int | None:
    """With a question that asks for rounding: the digits of the decimal side."""
    d = _decimal_digits(pred)
    if d is not None:
        return d
    return _decimal_digits(ref)


def undefined(e) -> bool:
    """True when ``e`` holds an undefined value: a division by zero (sympy's ``zoo``, or an
    unevaluated ``1/0`` or ``x/(2-2)``) or an indeterminate form (``nan``, e.g. 0/0)."""
    if not isinstance(e, sympy.Basic):
        return False
    try:
        if e.has(sympy.zoo, sympy.nan):
            return True
        for node in sympy.preorder_traversal(e):
            if isinstance(node, sympy.Pow) and node.exp.is_negative and node.base.is_zero:
                return True
    except Exception:
        return False
    return False


def values_equal(r, p, *, approx_digits: int | None = None) -> Verdict:
    # Undefined values are equal to nothing, another undefined value included: 1/0 and
    # 2/0 are both sympy's zoo, and would otherwise compare equal.
    if undefined(r) or undefined(p):
        return Verdict(WRONG, "undefined")
    if not isinstance(r, sympy.Expr) or not isinstance(p, sympy.Expr):
        try:
            return Verdict(CORRECT if r == p else WRONG, "sympy-structure")
        except Exception:
            return Verdict(WRONG, "sympy-structure")
    try:
        if r == p:
            return Verdict(CORRECT, "sympy-symbolic")
    except Exception:
        pass
    free = r.free_symbols | p.free_symbols
    if not free:
        prec = _precision_for(r, p)
        rv, pv = _numeric(r, prec), _numeric(p, prec)
        if rv is None or pv is None:
            try:
                same = sympy.simplify(r - p) == 0
            except Exception:
                same = False
            return Verdict(CORRECT if same else WRONG, "sympy-symbolic")
        if _close(rv, pv):
            return Verdict(CORRECT, "sympy-value")
        if approx_digits is not None and pv[1] == 0 and rv[1] == 0:
            half = sympy.Rational(1, 2) * sympy.Rational(1, 10 ** approx_digits)
            if abs(rv[0] - pv[0]) <= half + TOLERANCE:
                return Verdict(CORRECT, "sympy-rounded")
        return Verdict(WRONG, "sympy-value")
    d = r - p
    try:
        if sympy.expand(d) == 0:
            return Verdict(CORRECT, "sympy-symbolic")
    except Exception:
        pass
    evaluated = 0
    integers = _counts(d)
    for point in _sample_points(free, integers=integers):
        try:
            if integers:
                rv, pv = _numeric(r.subs(point).doit()), _numeric(p.subs(point).doit())
            else:
                rv, pv = _numeric(r.subs(point)), _numeric(p.subs(point))
        except Exception:
            rv = pv = None
        if rv is None or pv is None:
            continue
        evaluated += 1
        if not _close(rv, pv):
            return Verdict(WRONG, "sympy-points")
    if evaluated >= 2:
        return Verdict(CORRECT, "sympy-points")
    try:
        return Verdict(CORRECT if sympy.simplify(d) == 0 else WRONG, "sympy-symbolic")
    except Exception:
        return Verdict(WRONG, "sympy-symbolic")


def relations_equivalent(rl: Answer, rr: Answer, pl: Answer, pr: Answer, op: str) -> Verdict:
    """``a op b`` vs ``c op d``: the same relation when ``a - b = k (c - d)`` for a
    constant k != 0 (k > 0 for inequalities, whose direction a negative k would flip)."""
    try:
        e1 = _value(rl) - _value(rr)
        e2 = _value(pl) - _value(pr)
    except TooBig:
        return Verdict(UNPARSEABLE, "size-guard")
    except Exception:
        return Verdict(UNPARSEABLE, "unparseable")
    free = e1.free_symbols | e2.free_symbols
    if not free:
        return Verdict(WRONG, "relation")
    ratio = None
    for point in _sample_points(free, 5):
        a, b = _numeric(e1.subs(point)), _numeric(e2.subs(point))
        if a is None or b is None:
            continue
        a_zero = abs(complex(a[0], a[1])) < 1e-30
        b_zero = abs(complex(b[0], b[1])) < 1e-30
        if a_zero or b_zero:
            if a_zero and b_zero:
                continue
            return Verdict(WRONG, "relation")
        k = complex(a[0], a[1]) / complex(b[0], b[1])
        if ratio is None:
            ratio = k
        elif abs(k - ratio) > 1e-9 * max(1, abs(ratio)):
            return Verdict(WRONG, "relation")
    if ratio is None or abs(ratio) < 1e-12:
        return Verdict(WRONG, "relation")
    if op in ("<", "<=", ">", ">=") and not (abs(ratio.imag) < 1e-12 and ratio.real > 0):
        return Verdict(WRONG, "relation")
    return Verdict(CORRECT, "relation")


def fraction_of(expr) -> Fraction | None:
    """The exact rational value of a sympy number, when it is one."""
    if isinstance(expr, sympy.Rational):
        return Fraction(int(expr.p), int(expr.q))
    return None
