"""A fast numeric screen that rejects two scalar answers whose values clearly differ.

Parsing with latex2sympy2_extended costs about 10 ms per expression (its ANTLR parser is
pure Python), and most pairs that reach sympy are simply wrong answers (``8`` against
``6\\sqrt{15}``). This screen evaluates a small, common subset of LaTeX (numbers,
``+ - * / ^``, ``\\frac``, ``\\sqrt``, ``\\pi``, ``e``, ``i``, ``\\cdot``, ``\\times``,
single-letter variables, ``\\sin``-style functions with a bracketed argument) in complex
floating point, following latex2sympy's reading of it (juxtaposition binds tighter than
``/``; ``2\\frac{1}{2}`` is a mixed number; ``\\log`` is base 10), and at random points
when there are variables.

It can only say *different*: when the values differ by far more than rounding error the
pair is wrong (rule ``numeric-screen``). Everything else, including every acceptance and
every input outside the subset, is decided by latex2sympy and sympy. So the screen can
speed grading up but cannot make an answer correct.
"""

from __future__ import annotations

import cmath
import math
import re

_TOKEN = re.compile(r"\s*(?:(\d+\.\d*|\.\d+|\d+)|(\\[A-Za-z]+)|([A-Za-z])|([-+*/^(){}\[\]]))")
_FUNCS = {r"\sin": cmath.sin, r"\cos": cmath.cos, r"\tan": cmath.tan, r"\ln": cmath.log,
          r"\exp": cmath.exp, r"\log": lambda z: cmath.log(z) / math.log(10),
          r"\sec": lambda z: 1 / cmath.cos(z), r"\csc": lambda z: 1 / cmath.sin(z),
          r"\cot": lambda z: 1 / cmath.tan(z)}
_CONSTS = {r"\pi": math.pi}
_MULS = {"*", r"\cdot", r"\times"}
_DIVS = {"/", r"\div"}
MAX_TOKENS = 200


class _Unsupported(Exception):
    pass


def _tokens(s: str) -> list[tuple[str, str]] | None:
    out = []
    pos = 0
    n = len(s)
    while pos < n:
        m = _TOKEN.match(s, pos)
        if not m:
            if s[pos:].strip() == "":
                break
            return None
        pos = m.end()
        if m.group(1) is not None:
            out.append(("num", m.group(1)))
        elif m.group(2) is not None:
            out.append(("cmd", m.group(2)))
        elif m.group(3) is not None:
            out.append(("var", m.group(3)))
        else:
            out.append(("op", m.group(4)))
        if len(out) > MAX_TOKENS:
            return None
    return out


class _Eval:
    """Recursive descent over the tokens, evaluating as it goes."""

    def __init__(self, toks, env):
        self.t = toks
        self.i = 0
        self.env = env

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else (None, None)

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, kind, val):
        tok = self.take()
        if tok != (kind, val):
            raise _Unsupported
        return tok

    def run(self) -> complex:
        v = self.additive()
        if self.i != len(self.t):
            raise _Unsupported
        return v

    def additive(self) -> complex:
        v = self.multiplicative()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            w = self.multiplicative()
            v = v + w if op == "+" else v - w
        return v

    def multiplicative(self) -> complex:
        v = self.unary()
        while True:
            k, val = self.peek()
            if (k in ("op", "cmd")) and val in _MULS:
                self.take()
                v = v * self.unary()
            elif (k in ("op", "cmd")) and val in _DIVS:
                self.take()
                v = v / self.unary()
            else:
                return v

    def unary(self) -> complex:
        if self.peek() == ("op", "-"):
            self.take()
            return -self.unary()
        if self.peek() == ("op", "+"):
            self.take()
            return self.unary()
        return self.juxtaposed()

    def _starts_atom(self) -> bool:
        k, val = self.peek()
        if k in ("num", "var"):
            return True
        if k == "op":
            return val in ("(", "{")
        if k == "cmd":
            return val in _FUNCS or val in _CONSTS or val in (r"\frac", r"\sqrt")
        return False

    def juxtaposed(self) -> complex:
        # "2\frac{1}{2}" is 5/2 in latex2sympy: a mixed number
        start = self.i
        items = [self.power()]
        kinds = [self.t[start]]
        while self._starts_atom():
            kinds.append(self.peek())
            items.append(self.power())
        if len(items) >= 2 and kinds[0][0] == "num" and kinds[1] == ("cmd", r"\frac"):
            raise _Unsupported  # mixed numbers and friends: leave to latex2sympy
        v = items[0]
        for w in items[1:]:
            v = v * w
        return v

    def power(self) -> complex:
        base = self.atom()
        if self.peek() == ("op", "^"):
            self.take()
            k, val = self.peek()
            if (k, val) == ("op", "{"):
                self.take()
                e = self.additive()
                self.expect("op", "}")
            elif k == "num" and len(val) == 1:
                self.take()
                e = complex(float(val))
            elif k == "var":
                self.take()
                e = self._var(val)
            elif k == "cmd" and val in _CONSTS:
                self.take()
                e = complex(_CONSTS[val])
            else:
                raise _Unsupported
            if abs(e) > 1000:
                raise _Unsupported
            if self.peek() == ("op", "^"):
                raise _Unsupported  # a^b^c: leave the reading to latex2sympy
            return base ** e
        return base

    def _var(self, name: str) -> complex:
        if name in ("e", "E"):
            return complex(math.e)
        if name in ("i", "I"):
            return 1j
        if name not in self.env:
            raise _Unsupported
        return self.env[name]

    def group(self) -> complex:
        self.expect("op", "{")
        v = self.additive()
        self.expect("op", "}")
        return v

    def atom(self) -> complex:
        k, val = self.take()
        if k == "num":
            if self.peek() == ("op", "."):
                raise _Unsupported
            return complex(float(val))
        if k == "var":
            return self._var(val)
        if k == "op" and val == "(":
            v = self.additive()
            self.expect("op", ")")
            return v
        if k == "op" and val == "{":
            v = self.additive()
            self.expect("op", "}")
            return v
        if k == "cmd":
            if val in _CONSTS:
                return complex(_CONSTS[val])
            if val == r"\frac":
                a = self.group()
                b = self.group()
                return a / b
            if val == r"\sqrt":
                if self.peek() == ("op", "["):
                    self.take()
                    n = self.additive()
                    self.expect("op", "]")
                    x = self.group()
                    return x ** (1 / n)
                return cmath.sqrt(self.group())
            if val in _FUNCS:
                k2, v2 = self.peek()
                if (k2, v2) == ("op", "("):
                    self.take()
                    x = self.additive()
                    self.expect("op", ")")
                elif (k2, v2) == ("op", "{"):
                    x = self.group()
                else:
                    raise _Unsupported
                return _FUNCS[val](x)
        raise _Unsupported


_POINTS = (0.7371, 1.3813, 2.2191)


def _variables(toks) -> set[str]:
    return {v for k, v in toks if k == "var" and v not in "eEiI"}


def evaluate(tex: str, env: dict[str, complex]) -> complex | None:
    toks = _tokens(tex)
    if not toks:
        return None
    try:
        v = _Eval(toks, env).run()
    except (_Unsupported, ZeroDivisionError, OverflowError, ValueError, TypeError):
        return None
    if not (math.isfinite(v.real) and math.isfinite(v.imag)):
        return None
    return v


def clearly_different(a_tex: str, b_tex: str) -> bool:
    """True when both parse in the subset and their values differ by far more than
    floating-point error (at each of three random points, for variables)."""
    ta, tb = _tokens(a_tex), _tokens(b_tex)
    if not ta or not tb:
        return False
    names = sorted(_variables(ta) | _variables(tb))
    if len(names) > 4:
        return False
    differs = False
    for k, x in enumerate(_POINTS if names else _POINTS[:1]):
        env = {n: complex(x + 0.5173 * j + 0.1 * k) for j, n in enumerate(names)}
        try:
            va = _Eval(ta, env).run()
            vb = _Eval(tb, env).run()
        except (_Unsupported, ZeroDivisionError, OverflowError, ValueError, TypeError):
            return False
        if not all(math.isfinite(z) for z in (va.real, va.imag, vb.real, vb.imag)):
            return False
        scale = max(1.0, abs(va), abs(vb))
        if abs(va - vb) > 1e-6 * scale:
            differs = True
        else:
            return False  # equal somewhere: let sympy decide
    return differs
