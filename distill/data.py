"""Reading `curator export` files and turning records into token ids.

``distill`` reads nothing but the export contract: training records valid against
``schemas/export_record.schema.json`` and evaluation problems valid against
``schemas/eval_record.schema.json``, as JSONL (optionally gzipped), Parquet, or a
Hugging Face ``save_to_disk`` directory. Anything else is refused with the file, the line
(or row) and what is wrong.

Token ids are built here, once, for every method: a *prompt* (the question, rendered by a
plain template or by the tokenizer's chat template) followed by a *completion* (the
rationale and the end-of-sequence token). Rows keep ``prompt_length`` so that the
collator can mask the prompt out of the loss.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from curator.errors import CuratorError, InputError
# The prompt text is shared with `curator export --layout ...` (one definition).
from curator.student_prompts import DEFAULT_TEMPLATE, check_template, render_prompt

EXPORT_SCHEMA = "export_record.schema.json"
EVAL_SCHEMA = "eval_record.schema.json"


# -- validation --------------------------------------------------------------------------

@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    from curator.warehouse import contract_dir
    return json.loads((contract_dir("schemas") / name).read_text())


# The JSON-Schema keywords the fast checker below implements exactly. When a contract uses
# anything else, every record goes through the full `jsonschema` validator instead.
_FAST_KEYWORDS = {"type", "enum", "description"}
_JSON_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


class RecordValidator:
    """Validates records against one of the contract schemas. A record-at-a-time check
    (about 100x faster than ``jsonschema`` on 120k records) is used when the schema only
    uses required/additionalProperties/type/enum, which is exactly the JSON-Schema
    semantics for those keywords; otherwise ``jsonschema`` validates every record."""

    def __init__(self, schema_name: str):
        self.schema_name = schema_name
        self.schema = load_schema(schema_name)
        props = self.schema.get("properties", {})
        self.required = list(self.schema.get("required", []))
        self.allowed = set(props)
        self.closed = self.schema.get("additionalProperties", True) is False
        self.fast = all(set(p) <= _FAST_KEYWORDS for p in props.values()) and set(
            self.schema) <= {"$schema", "$id", "title", "description", "type",
                             "additionalProperties", "required", "properties"}
        self.props = props
        self._full = None

    def errors(self, rec: Any) -> list[str]:
        """Human-readable problems with ``rec`` (empty when valid)."""
        if not self.fast:
            if self._full is None:
                import jsonschema
                self._full = jsonschema.Draft202012Validator(self.schema)
            return [f"{'/'.join(map(str, e.path)) or 'record'}: {e.message}"
                    for e in self._full.iter_errors(rec)]
        if not isinstance(rec, dict):
            return [f"expected a JSON object, got {type(rec).__name__}"]
        out = [f"missing field {k!r}" for k in self.required if k not in rec]
        if self.closed:
            out += [f"unexpected field {k!r}" for k in rec if k not in self.allowed]
        for key, spec in self.props.items():
            if key not in rec:
                continue
            v = rec[key]
            if "enum" in spec and v not in spec["enum"]:
                out.append(f"{key}: {v!r} is not one of {spec['enum']}")
            types = spec.get("type")
            if types is not None:
                types = [types] if isinstance(types, str) else types
                if not any(_JSON_TYPES[t](v) for t in types):
                    out.append(f"{key}: {v!r} is not of type {' or '.join(types)}")
        return out


# -- reading -------------------------------------------------------------------------------

def _iter_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno})",
                                     str(path), lineno) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read as UTF-8 JSONL: {exc}", str(path)) from None


# Data files inside an export directory (its manifest.json is not one).
_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


def _is_hf_dir(path: Path) -> bool:
    return any((path / f).is_file() for f in ("dataset_dict.json", "dataset_info.json", "state.json"))


def resolve_split(path: Path, split: str | None) -> Path:
    """An export directory (``<split>.jsonl``/``.parquet`` files, as `curator export`
    writes them) -> the file of ``split``; the only data file when ``split`` is None."""
    if not path.is_dir() or _is_hf_dir(path):
        return path
    files = sorted(f for f in path.iterdir() if f.is_file() and f.name.endswith(_DATA_SUFFIXES))
    if split is not None:
        hits = [f for f in files if f.name.split(".")[0] == split]
        if not hits:
            raise InputError(f"no {split}.jsonl or {split}.parquet here (has "
                             f"{[f.name for f in files] or 'no data files'}); use --split", str(path))
        return hits[0]
    if len(files) == 1:
        return files[0]
    raise InputError(f"several data files {[f.name for f in files] or '(none)'}; "
                     f"choose one with --split", str(path))


def _arrow_rows(path: Path, split: str | None):
    """A ``datasets.Dataset`` from a Parquet file or a ``save_to_disk`` directory."""
    import datasets
    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # datasets raises FileNotFoundError/ValueError variants
            raise InputError(f"not a Hugging Face save_to_disk directory: {exc}",
                             str(path)) from None
        if isinstance(ds, datasets.DatasetDict):
            if split is not None and split in ds:
                ds = ds[split]
            elif len(ds) == 1:
                ds = next(iter(ds.values()))
            else:
                raise InputError(f"holds splits {sorted(ds)}; choose one with --split", str(path))
        return ds
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise InputError(f"cannot read as Parquet: {exc}", str(path)) from None
    return datasets.Dataset(table)


def read_records(path: str | Path, schema_name: str = EXPORT_SCHEMA,
                 split: str | None = None) -> list[dict]:
    """All records of an export, each validated against ``schema_name``.

    ``path`` is a file, an export directory (``split`` picks ``<split>.jsonl`` or
    ``.parquet``), or a ``save_to_disk`` directory (``split`` picks a split of a
    DatasetDict). JSONL (``.jsonl``, ``.json``, ``.jsonl.gz``) is read line by line so
    that errors name the line; Parquet and ``save_to_disk`` data are read with ``datasets``
    and errors name the row (1-based). Raises :class:`InputError` on the first invalid
    record."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", str(path))
    path = resolve_split(path, split)
    validator = RecordValidator(schema_name)
    what = "`curator export`" if schema_name == EXPORT_SCHEMA else "`curator export-eval`"
    name = path.name.lower()
    if path.is_file() and (name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz"))):
        rows: Iterable[tuple[int | None, Any]] = _iter_jsonl(path)
        where = "line"
    elif path.is_dir() or name.endswith(".parquet"):
        ds = _arrow_rows(path, split)
        rows = enumerate(ds, 1)
        where = "row"
    else:
        raise InputError(f"unknown format: expected {what} output as .jsonl, .jsonl.gz, "
                         f".parquet or a save_to_disk directory", str(path))
    out = []
    for n, rec in rows:
        problems = validator.errors(rec)
        if problems:
            _refuse_trl_layout(path)
            raise InputError(f"not a valid {schema_name.split('.')[0]} ({what} output): "
                             + "; ".join(problems[:5]),
                             str(path), n if where == "line" else None,
                             None if where == "line" else f"row {n}")
        out.append(rec)
    if not out:
        raise InputError(f"no records: expected {what} output", str(path))
    return out


def _refuse_trl_layout(path: Path) -> None:
    """A clear error when ``path`` is a data file of an export written with ``--layout``
    (rows for a TRL trainer, not the records distill reads)."""
    manifest = (path if path.is_dir() else path.parent) / "manifest.json"
    try:
        layout = json.loads(manifest.read_text()).get("layout") or {}
    except (OSError, ValueError, AttributeError):
        return
    name = layout.get("name", "default") if isinstance(layout, dict) else "default"
    if name != "default":
        trainer = layout.get("trainer")
        raise InputError(f"written by `curator export --layout {name}`"
                         + (f" (rows for {trainer})" if trainer else "")
                         + "; distill reads the default layout, which keeps every rationale with "
                           "its label: export again without --layout (docs/trl.md)", str(path))


def read_export(path: str | Path, split: str | None = "train") -> list[dict]:
    """Training records (rationales labelled positive/negative) of a `curator export`
    (its ``split`` when ``path`` is an export directory)."""
    return read_records(path, EXPORT_SCHEMA, split)


def read_eval(path: str | Path, split: str | None = None) -> list[dict]:
    """Evaluation problems of a `curator export-eval`. An export file (training records)
    is accepted too, one problem per distinct ``problem_id``, since both carry the
    question and the reference answer."""
    path = Path(path)
    try:
        return read_records(path, EVAL_SCHEMA, split)
    except InputError as eval_err:
        try:
            records = read_records(path, EXPORT_SCHEMA, split)
        except InputError:
            raise eval_err from None
    seen: dict[str, dict] = {}
    for r in records:
        seen.setdefault(r["problem_id"], {
            "problem_id": r["problem_id"], "dataset": r["dataset"], "split": "train",
            "subject": r["subject"], "level": r["level"], "question": r["question"],
            "reference_answer": r["reference_answer"], "metadata": None})
    return list(seen.values())


# -- prompts -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt and a rationale a completion.

    ``chat=False``: ``template.format(question=...)`` then the rationale and EOS.
    ``chat=True``: the tokenizer's chat template with the question as the user turn and the
    rationale as the assistant turn; the prompt is the rendering with the generation prompt.
    Training saves it next to the adapter so that generation uses the same format."""
    template: str = DEFAULT_TEMPLATE
    chat: bool = False

    def __post_init__(self):
        if not self.chat:
            check_template(self.template)

    def plain_prompt(self, question: str) -> tuple[str, str]:
        """(prompt text, the whitespace it ended with). The trailing whitespace of a plain
        template ("Answer: ") belongs to the completion: tokenisers attach a space to
        the word after it (BPE's "Ġword"), so a prompt tokenised with its trailing space
        ends in a token the joined text never has, and a model trained or pre-trained on
        joined text would be asked to continue from it."""
        text = render_prompt(self.template, question)
        body = text.rstrip()
        return body, text[len(body):]

    def prompt_ids(self, tokenizer, question: str) -> list[int]:
        if self.chat:
            text = self._chat(tokenizer, [{"role": "user", "content": question}], True)
            return tokenizer(text, add_special_tokens=False)["input_ids"]
        return tokenizer(self.plain_prompt(question)[0])["input_ids"]

    def completion_ids(self, tokenizer, question: str, rationale: str) -> list[int]:
        """The rationale's token ids (and EOS) as they follow the prompt: for a plain
        template, the tokens of the joined text ``prompt + rationale`` after the prompt's
        tokens, so that prompt + completion tokenise exactly as the joined text does."""
        if self.chat:
            prompt = self._chat(tokenizer, [{"role": "user", "content": question}], True)
            full = self._chat(tokenizer, [{"role": "user", "content": question},
                                          {"role": "assistant", "content": rationale}], False)
            if not full.startswith(prompt):
                raise CuratorError("the tokenizer's chat template does not render the prompt "
                                   "as a prefix of the conversation; use --prompt-template")
            return tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        body, space = self.plain_prompt(question)
        return self.after_prompt(tokenizer, tokenizer(body)["input_ids"],
                                 tokenizer(body + space + rationale)["input_ids"],
                                 space + rationale)

    @staticmethod
    def after_prompt(tokenizer, prompt: list[int], joined: list[int], tail: str) -> list[int]:
        """The completion's ids (and EOS) from the ids of the joined text: what follows the
        prompt's ids, or, for a tokeniser that merges across the boundary, ``tail`` (the
        prompt's trailing whitespace and the rationale) tokenised alone."""
        if joined[:len(prompt)] == prompt:
            ids = joined[len(prompt):]
        else:   # the closest we can do
            ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
        return ids + [tokenizer.eos_token_id]

    def completion_text(self, decoded: str) -> str:
        """A generated completion as a rationale: without the whitespace that the plain
        template's prompt ended with (which the completion now starts with)."""
        if self.chat:
            return decoded
        tail = self.template.rsplit("{question}", 1)[-1]
        space = tail[len(tail.rstrip()):]
        return decoded[len(space):] if space and decoded.startswith(space) else decoded

    @staticmethod
    def _chat(tokenizer, messages, add_generation_prompt: bool) -> str:
        if not getattr(tokenizer, "chat_template", None):
            raise CuratorError("--chat-template: this tokenizer has no chat template; use "
                               "--prompt-template")
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "PromptFormat":
        return cls(template=d.get("template", DEFAULT_TEMPLATE), chat=bool(d.get("chat", False)))


@dataclass
class EncodeReport:
    """What happened to records on the way to token ids (shown after training)."""
    encoded: int = 0
    truncated: int = 0
    dropped_prompt_too_long: int = 0


def encode(tokenizer, fmt: PromptFormat, question: str, rationale: str, max_length: int,
           report: EncodeReport | None = None) -> dict | None:
    """``{'input_ids', 'prompt_length'}`` for one rationale, cut to ``max_length`` tokens
    (the completion's tail is cut; None when the prompt alone does not fit)."""
    prompt = fmt.prompt_ids(tokenizer, question)
    completion = fmt.completion_ids(tokenizer, question, rationale)
    return _fit(prompt, completion, max_length, report)


def _fit(prompt: list[int], completion: list[int], max_length: int,
         report: EncodeReport | None) -> dict | None:
    """``prompt + completion`` cut to ``max_length`` tokens and counted on ``report``; None
    when the prompt alone does not fit."""
    if len(prompt) >= max_length:
        if report:
            report.dropped_prompt_too_long += 1
        return None
    ids = prompt + completion
    if len(ids) > max_length:
        ids = ids[:max_length]
        if report:
            report.truncated += 1
    if report:
        report.encoded += 1
    return {"input_ids": ids, "prompt_length": len(prompt)}


def encode_many(tokenizer, fmt: PromptFormat, items: list[tuple[str, str]], max_length: int,
                report: EncodeReport | None = None, chunk: int = 1024) -> list[dict | None]:
    """:func:`encode` of every ``(question, rationale)``, the same ids, in far less time on
    large exports: with a plain template each distinct prompt is tokenized once and the
    texts go to the tokenizer in batches (one call per ``chunk``) instead of one call each."""
    if fmt.chat:
        return [encode(tokenizer, fmt, q, r, max_length, report) for q, r in items]
    questions = list(dict.fromkeys(q for q, _ in items))
    prompts: dict[str, tuple[list[int], str, str]] = {}   # question -> (ids, body, space)
    for s in range(0, len(questions), chunk):
        part = questions[s:s + chunk]
        plain = [fmt.plain_prompt(q) for q in part]
        ids = tokenizer([body for body, _ in plain])["input_ids"]
        prompts.update((q, (i, body, space)) for q, i, (body, space) in zip(part, ids, plain))
    out: list[dict | None] = []
    for s in range(0, len(items), chunk):
        part = items[s:s + chunk]
        # the joined text, as PromptFormat.completion_ids tokenises it (one call per chunk)
        joined = tokenizer([prompts[q][1] + prompts[q][2] + r for q, r in part])["input_ids"]
        for (q, r), full in zip(part, joined):
            prompt, _, space = prompts[q]
            comp = fmt.after_prompt(tokenizer, prompt, full, space + r)
            out.append(_fit(prompt, comp, max_length, report))
    return out


# -- training sets ---------------------------------------------------------------------------

def select(records: list[dict], labels: tuple[str, ...]) -> list[dict]:
    return [r for r in records if r["label"] in labels]


def rationale_dataset(records: list[dict], tokenizer, fmt: PromptFormat, max_length: int,
                      report: EncodeReport | None = None):
    """One row per rationale: ``input_ids``, ``prompt_length``, ``is_negative``. Used by
    SFT (positives), NAT stage 1 (negatives) and 2 (positives), MIX, NT and UL (both)."""
    import datasets
    rows = encoded_rows(records, tokenizer, fmt, max_length, report,
                        {"is_negative": lambda r, _: r["label"] == "negative"},
                        "the selection is empty")
    return datasets.Dataset.from_dict(rows)


def encoded_rows(records: list[dict], tokenizer, fmt: PromptFormat, max_length: int,
                 report: EncodeReport | None, columns: dict, or_else: str) -> dict[str, list]:
    """The columns of a rationale dataset: ``input_ids`` and ``prompt_length`` of every
    record that fits (:func:`encode_many`), and per ``columns`` entry ``name: f`` the value
    ``f(record, index among the kept rows)``. None fitting is an error that ends with
    ``or_else`` (the other reason there may be nothing to train on)."""
    rows: dict[str, list] = {"input_ids": [], "prompt_length": [], **{c: [] for c in columns}}
    encoded = encode_many(tokenizer, fmt, [(r["question"], r["rationale"]) for r in records],
                          max_length, report)
    for r, enc in zip(records, encoded):
        if enc is None:
            continue
        kept = len(rows["input_ids"])
        rows["input_ids"].append(enc["input_ids"])
        rows["prompt_length"].append(enc["prompt_length"])
        for c, f in columns.items():
            rows[c].append(f(r, kept))
    if not rows["input_ids"]:
        raise CuratorError("no trainable rationales: every prompt is longer than --max-length "
                           f"or {or_else}")
    return rows


def group_dataset(records: list[dict], tokenizer, fmt: PromptFormat, max_length: int,
                  group_size: int, seed: int = 0, report: EncodeReport | None = None):
    """One row per problem with up to ``group_size`` candidate rationales (for CL):
    positives first, then negatives, keeping both kinds when the problem has both.
    Problems without any positive are skipped (nothing to contrast towards)."""
    import datasets
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_problem[r["problem_id"]].append(r)
    rng = random.Random(seed)
    rows = {"input_ids": [], "prompt_length": [], "is_negative": []}
    for pid in sorted(by_problem):
        cands = by_problem[pid]
        pos = [r for r in cands if r["label"] == "positive"]
        neg = [r for r in cands if r["label"] == "negative"]
        if not pos:
            continue
        rng.shuffle(pos)
        rng.shuffle(neg)
        n_neg = min(len(neg), max(group_size // 2, group_size - len(pos)))
        chosen = pos[:group_size - n_neg] + neg[:n_neg]
        encs = [(encode(tokenizer, fmt, r["question"], r["rationale"], max_length, report), r)
                for r in chosen]
        encs = [(e, r) for e, r in encs if e is not None]
        if not encs:
            continue
        rows["input_ids"].append([e["input_ids"] for e, _ in encs])
        rows["prompt_length"].append([e["prompt_length"] for e, _ in encs])
        rows["is_negative"].append([r["label"] == "negative" for _, r in encs])
    if not rows["input_ids"]:
        raise CuratorError("no problem has a positive rationale to contrast with")
    return datasets.Dataset.from_dict(rows)
