"""Prompt templates: the built-in few-shot chain-of-thought prompts per dataset family,
user templates from files, and rendering a template for one problem.

A template is a list of chat messages whose text may contain the placeholders
``{question}``, ``{subject}``, ``{level}`` and ``{dataset}``; nothing else in the text is
interpreted (LaTeX is full of braces). Its id is a hash of its canonical JSON, and the
template is stored under that id in the ``prompts`` table, so every sample can be traced
to the exact prompt that produced it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from curator.errors import CuratorError, InputError
from curator.ids import stable_id

PLACEHOLDERS = ("question", "subject", "level", "dataset")

# Datasets whose reference answers are numbers in word problems.
WORD_DATASETS = {"gsm8k", "svamp", "asdiv", "multiarith"}
MATH_DATASETS = {"math"}


@dataclass(frozen=True)
class Template:
    name: str
    messages: tuple[tuple[str, str], ...]     # (role, text)

    @property
    def canonical(self) -> str:
        return json.dumps([{"role": r, "content": c} for r, c in self.messages],
                          ensure_ascii=False, separators=(",", ":"))

    @property
    def prompt_id(self) -> str:
        return stable_id("t", self.canonical)

    def render(self, problem: dict) -> list[dict]:
        """Chat messages for one problem (a dict with question, subject, level, dataset)."""
        values = {k: "" if problem.get(k) is None else str(problem[k]) for k in PLACEHOLDERS}
        out = []
        for role, text in self.messages:
            for k, v in values.items():
                text = text.replace("{" + k + "}", v)
            out.append({"role": role, "content": text})
        return out


# -- built-in templates ------------------------------------------------------------
# Exemplars: the four MATH exemplars of the Minerva prompt (Lewkowycz et al. 2022) and
# the eight GSM8K chain-of-thought exemplars of Wei et al. (2022), with the final-answer
# sentence the paper's teacher data uses ("The answer is ...").

_MATH_SYSTEM = ("Solve the problem. Think step by step, put the final answer in "
                "\\boxed{}, and finish with a line 'The answer is <answer>'.")
_MATH_SHOTS = [
    ("Find the domain of the expression $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
     "Let's think step by step.\nThe expressions inside each square root must be "
     "non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. "
     "Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. "
     "Therefore, the domain of the expression is $\\boxed{[2,5)}$.\nThe answer is $[2,5)$."),
    ("If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find "
     "$\\det (\\mathbf{A} \\mathbf{B}).$",
     "Let's think step by step.\nWe have that $\\det (\\mathbf{A} \\mathbf{B}) = "
     "(\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = \\boxed{24}.$\nThe answer is $24$."),
    ("Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights "
     "instead, how many times must Terrell lift them in order to lift the same total weight?",
     "Let's think step by step.\nIf Terrell lifts two 20-pound weights 12 times, he lifts a "
     "total of $2\\cdot 12\\cdot20=480$ pounds of weight. If he lifts two 15-pound weights "
     "instead for $n$ times, he will lift a total of $2\\cdot15\\cdot n=30n$ pounds of weight. "
     "Equating this to 480 pounds, we can solve for $n$: $30n=480$, so "
     "$n=480/30=\\boxed{16}$.\nThe answer is $16$."),
    ("If the system of equations\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}"
     "has a solution $(x, y)$ where $x$ and $y$ are both nonzero, find $\\frac{a}{b},$ "
     "assuming $b$ is nonzero.",
     "Let's think step by step.\nIf we multiply the first equation by $-\\frac{3}{2}$, we "
     "obtain $$6y-9x=-\\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have "
     "$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\n"
     "The answer is $-\\frac{2}{3}$."),
]

_WORD_SYSTEM = ("Answer the question. Think step by step and finish with a sentence "
                "'The answer is N.' where N is a number.")
_WORD_SHOTS = [
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
     "After they are done, there will be 21 trees. How many trees did the grove workers "
     "plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were "
     "planted. So there must have been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in "
     "the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they "
     "have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had "
     "32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How "
     "many lollipops did Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he "
     "gave Denny 20 - 12 = 8. The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How "
     "many toys does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is "
     "4 more toys. 5 + 4 = 9. The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed "
     "each day, from monday to thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. "
     "So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost "
     "2 more. How many golf balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had "
     "58 - 23 = 35. After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have "
     "left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So "
     "she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8."),
]


def _few_shot(name: str, system: str, shots, q_label: str) -> Template:
    msgs: list[tuple[str, str]] = [("system", system)]
    for q, a in shots:
        msgs += [("user", f"{q_label}\n{q}"), ("assistant", a)]
    msgs.append(("user", f"{q_label}\n{{question}}"))
    return Template(name, tuple(msgs))


BUILTIN: dict[str, Template] = {
    "math-cot": _few_shot("math-cot", _MATH_SYSTEM, _MATH_SHOTS, "Problem:"),
    "math-zeroshot": Template("math-zeroshot", (("system", _MATH_SYSTEM),
                                                ("user", "Problem:\n{question}"))),
    "word-cot": _few_shot("word-cot", _WORD_SYSTEM, _WORD_SHOTS, "Question:"),
    "word-zeroshot": Template("word-zeroshot", (("system", _WORD_SYSTEM),
                                                ("user", "Question:\n{question}"))),
}


def family_template(dataset: str) -> Template:
    """The built-in few-shot template for a dataset's family."""
    d = dataset.lower()
    if d in MATH_DATASETS:
        return BUILTIN["math-cot"]
    if d in WORD_DATASETS:
        return BUILTIN["word-cot"]
    raise CuratorError(
        f"no built-in prompt for dataset {dataset!r} (built-in families: MATH, and word "
        f"problems {', '.join(sorted(WORD_DATASETS))}); pass --prompt with one of "
        f"{', '.join(BUILTIN)} or a template file")


def load_template(spec: str) -> Template:
    """A built-in template by name, or a template file.

    ``.json`` files hold ``{"messages": [{"role": ..., "content": ...}, ...]}`` (or just
    the list); any other file is one user message. The text must contain ``{question}``.
    """
    if spec in BUILTIN:
        return BUILTIN[spec]
    path = Path(spec)
    if not path.is_file():
        raise CuratorError(f"--prompt {spec!r} is neither a built-in template "
                           f"({', '.join(BUILTIN)}) nor a file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"template is not JSON: {exc.msg}", path=str(path),
                             line=exc.lineno) from exc
        raw = obj.get("messages") if isinstance(obj, dict) else obj
        if not isinstance(raw, list) or not raw:
            raise InputError("expected a non-empty list of messages (or {\"messages\": [...]})",
                             path=str(path))
        msgs = []
        for i, m in enumerate(raw):
            if (not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant")
                    or not isinstance(m.get("content"), str)):
                raise InputError("each message needs role system|user|assistant and a string "
                                 "content", path=str(path), record=f"message {i}")
            msgs.append((m["role"], m["content"]))
    else:
        msgs = [("user", text)]
    if not any("{question}" in c for _, c in msgs):
        raise InputError("the template never uses {question}", path=str(path))
    if msgs[-1][0] != "user":
        raise InputError("the last message of a template must be the user's", path=str(path))
    return Template(path.name, tuple(msgs))


def split_system(messages: list[dict]) -> tuple[str | None, list[dict]]:
    """(system text, the other messages): Anthropic takes the system prompt apart."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None
    return system, [m for m in messages if m["role"] != "system"]
