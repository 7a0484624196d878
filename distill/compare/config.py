"""The comparison config: the method registry, :class:`CompareConfig` and
:func:`load_config` (TOML, YAML or JSON; see ``distill/configs/compare-tiny.toml``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.errors import CuratorError
BASELINES = ("sft", "mix", "nt", "ul", "cl")
PREFERENCE = ("dpo", "kto")   # TRL's DPO and KTO (distill.preference)
#: method (table row) -> (student it evaluates, which report rule it shows)
METHODS: dict[str, tuple[str, str]] = {
    "base": ("base", "rule"), "sft": ("sft", "rule"), "mix": ("mix", "rule"),
    "nt": ("nt", "rule"), "ul": ("ul", "rule"), "cl": ("cl", "rule"), "nat": ("nat", "rule"),
    "nat+nce": ("nce", "rule"), "nat+nce+asc": ("nce", "asc_rule"),
    "dpo": ("dpo", "rule"), "kto": ("kto", "rule"),
}
TITLES = {"base": "base model (no training)", "sft": "CoT KD", "mix": "MIX", "nt": "NT",
          "ul": "UL", "cl": "CL", "nat": "NAT", "nat+nce": "NAT+NCE",
          "nat+nce+asc": "NAT+NCE+ASC", "dpo": "DPO", "kto": "KTO"}
DEFAULT_METHODS = ("sft", "mix", "nt", "ul", "cl", "nat", "nat+nce", "nat+nce+asc")

EVAL_KEYS = ("samples", "max_new_tokens", "temperature", "top_p", "batch_size", "seed",
             "greedy", "limit", "asc_weight", "dtype", "device")
TOP_KEYS = {"out", "model", "data", "eval", "methods", "train", "ranker", "evaluate",
            "report", "prepare", "name", "seeds", "teacher", "warehouse"}
TEACHER_KEYS = {"model", "title", "export", "db", "grader_version"}
WAREHOUSE_KEYS = {"db", "comparison"}
#: students whose result does not depend on the seed (evaluated once in a multi-seed run)
SEEDLESS = ("base",)
REFERENCE = "sft"   # paired differences are taken against CoT KD


# -- config ----------------------------------------------------------------------------------

@dataclass
class CompareConfig:
    """A parsed, validated comparison config (see ``distill/configs/compare-tiny.toml``)."""
    path: Path
    out: Path
    base: str
    tiny: dict | None
    dtype: str
    prompt: dict
    train_data: Path
    validation: Path | None
    evals: list[dict]
    methods: list[str]
    train: dict
    per_method: dict[str, dict]
    ranker: dict
    evaluate: dict
    rule: str
    asc_rule: str
    prepare: list[dict] = field(default_factory=list)
    name: str = "comparison"
    # The seeds of the run; [None] (the default) is one run with the configured [train]
    # seed, in the one-seed layout. With more than one seed, every trained student and
    # its evaluations exist once per seed (stage names ``train:sft@s1``, directories
    # ``students/sft/seed-1``); the rest (prepare, the model, the base's evaluation, the
    # ranker) once.
    seeds: list = field(default_factory=lambda: [None])
    teacher: dict | None = None
    gguf: str | None = None      # [model] gguf: convert this GGUF file (or `smollm2`) into base
    # [warehouse] db: every student's rationales, grades and results go there too, under
    # one comparison id ([warehouse] comparison, default the config's name)
    warehouse: dict | None = None

    @property
    def multi_seed(self) -> bool:
        return len(self.seeds) > 1

    def suffix(self, student: str, seed) -> str:
        """What a per-seed stage's name ends with (nothing in the one-seed layout)."""
        return f"@s{seed}" if self.multi_seed and student not in SEEDLESS else ""

    def student_dir(self, student: str, seed) -> Path:
        d = self.out / "students" / student
        return d / f"seed-{seed}" if self.multi_seed else d

    def eval_dir(self, set_name: str, student: str, seed) -> Path:
        d = self.out / "eval" / set_name / student
        return d / f"seed-{seed}" if self.multi_seed and student not in SEEDLESS else d

    def seeds_of(self, student: str) -> list:
        """The seeds a student exists for: one (None) for a seed-independent one."""
        return [None] if student in SEEDLESS else list(self.seeds)


def _read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise CuratorError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib
            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise CuratorError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); "
                                   f"or write the config as TOML") from None
            data = yaml.safe_load(text)
            if not isinstance(data, dict):
                raise CuratorError(f"{path}: the config must be a mapping at the top level")
            return data
        if suffix == ".json":
            return json.loads(text)
    except CuratorError:
        raise
    except Exception as exc:  # tomllib/yaml/json each raise their own error types
        line = getattr(exc, "lineno", None) or getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f"{path}:{line}" if line else str(path)
        raise CuratorError(f"{where}: not valid {suffix[1:].upper()}: {exc}") from None
    raise CuratorError(f"{path}: unknown config format {suffix!r}; use .toml, .yaml or .json")


def _subst(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in mapping.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, list):
        return [_subst(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _subst(v, mapping) for k, v in value.items()}
    return value


def parse_seeds(value: Any, where: str) -> list[int]:
    """A seed list from a config value (list of ints) or a CLI string ``0,1,2``."""
    if isinstance(value, str):
        parts = [x.strip() for x in value.split(",") if x.strip()]
        try:
            value = [int(x) for x in parts]
        except ValueError:
            raise CuratorError(f"{where}: seeds must be whole numbers separated by commas "
                               f"(e.g. 0,1,2), got {value!r}") from None
    if not isinstance(value, list) or not value or \
            not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value):
        raise CuratorError(f"{where}: seeds must be a non-empty list of whole numbers >= 0 "
                           f"(e.g. seeds = [0, 1, 2]), got {value!r}")
    if len(set(value)) != len(value):
        raise CuratorError(f"{where}: seeds {value} repeat a seed")
    return list(value)


def load_config(path: str | Path, out: str | Path | None = None,
                seeds: str | list[int] | None = None, db: str | Path | None = None,
                no_warehouse: bool = False) -> CompareConfig:
    """Read and check a comparison config; ``out`` overrides its ``out``, ``seeds``
    (a list or ``"0,1,2"``) its ``seeds``, ``db`` its ``[warehouse] db``;
    ``no_warehouse`` drops its ``[warehouse]``."""
    path = Path(path)
    raw = _read_config_file(path)

    def bad(msg: str) -> CuratorError:
        return CuratorError(f"{path}: {msg}")

    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise bad(f"unknown key(s) {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    out_dir = str(out if out is not None else raw.get("out", "compare-out"))
    mapping = {"out": out_dir, "config_dir": str(path.resolve().parent)}
    raw = _subst(raw, mapping)

    model = raw.get("model") or {}
    if "base" not in model:
        raise bad("[model] base is required (a local model directory or a hub name)")
    unknown = set(model) - {"base", "tiny", "gguf", "dtype", "prompt_template", "chat_template"}
    if unknown:
        raise bad(f"unknown key(s) {sorted(unknown)} in [model]")
    tiny = model.get("tiny")
    if tiny is True:
        tiny = {}
    if tiny is not None and model.get("gguf"):
        raise bad("[model] takes tiny or gguf, not both")
    data = raw.get("data") or {}
    if "train" not in data:
        raise bad("[data] train is required (a `curator export` file)")
    evals = raw.get("eval") or []
    if isinstance(evals, dict):
        evals = [evals]
    if not evals:
        raise bad("at least one [[eval]] set is required (name and data)")
    names = set()
    for i, e in enumerate(evals):
        if not isinstance(e, dict) or "data" not in e or "name" not in e:
            raise bad(f"[[eval]] number {i + 1} needs a name and data")
        if e["name"] in names or "/" in e["name"] or ":" in e["name"]:
            raise bad(f"[[eval]] name {e['name']!r} is repeated or has '/' or ':'")
        names.add(e["name"])
        extra = set(e) - {"name", "data", *EVAL_KEYS}
        if extra:
            raise bad(f"unknown key(s) {sorted(extra)} in [[eval]] {e['name']}")
    methods_cfg = raw.get("methods") or {}
    methods = list(methods_cfg.get("run", DEFAULT_METHODS)) if isinstance(methods_cfg, dict) \
        else list(methods_cfg)
    for m in methods:
        if m not in METHODS:
            raise bad(f"unknown method {m!r} in [methods] run; choose from {', '.join(METHODS)}")
    train = dict(raw.get("train") or {})
    per_method = {k: train.pop(k) for k in list(train) if isinstance(train[k], dict)}
    for k in per_method:
        if k not in (*BASELINES, *PREFERENCE, "nat", "nce"):
            raise bad(f"[train.{k}]: no such method (per-method tables: "
                      f"{', '.join((*BASELINES, *PREFERENCE, 'nat', 'nce'))})")
    evaluate = dict(raw.get("evaluate") or {})
    extra = set(evaluate) - set(EVAL_KEYS)
    if extra:
        raise bad(f"unknown key(s) {sorted(extra)} in [evaluate]; known: {', '.join(EVAL_KEYS)}")
    report = raw.get("report") or {}
    prepare = raw.get("prepare") or []
    for i, p in enumerate(prepare):
        if not isinstance(p, dict) or not p.get("name") or not isinstance(p.get("run"), list) \
                or not all(isinstance(a, str) for a in p["run"]):
            raise bad(f"[[prepare]] number {i + 1} needs a name and run = [\"cmd\", \"arg\", ...]")
        if set(p) - {"name", "run", "env"}:
            raise bad(f"unknown key(s) {sorted(set(p) - {'name', 'run', 'env'})} in "
                      f"[[prepare]] {p['name']}")
    if seeds is not None:
        seed_list: list = parse_seeds(seeds, "--seeds")
    elif "seeds" in raw:
        if not isinstance(raw["seeds"], list):   # a string is the CLI's spelling only
            raise bad(f"seeds must be a non-empty list of whole numbers >= 0 (e.g. seeds = "
                      f"[0, 1, 2]), got {raw['seeds']!r}")
        seed_list = parse_seeds(raw["seeds"], f"{path}: seeds")
    else:
        seed_list = [None]
    teacher = raw.get("teacher")
    if teacher is not None:
        if not isinstance(teacher, dict) or not teacher.get("model"):
            raise bad("[teacher] needs model = \"<the teacher_model of the export's records>\"")
        extra = set(teacher) - TEACHER_KEYS
        if extra:
            raise bad(f"unknown key(s) {sorted(extra)} in [teacher]; known: "
                      f"{', '.join(sorted(TEACHER_KEYS))}")
        teacher = dict(teacher)
    warehouse = raw.get("warehouse")
    if warehouse is not None and (not isinstance(warehouse, dict) or not warehouse.get("db")):
        raise bad("[warehouse] needs db = \"<the warehouse of the eval sets' problems>\"")
    if warehouse is not None and set(warehouse) - WAREHOUSE_KEYS:
        raise bad(f"unknown key(s) {sorted(set(warehouse) - WAREHOUSE_KEYS)} in [warehouse]; "
                  f"known: {', '.join(sorted(WAREHOUSE_KEYS))}")
    if no_warehouse:
        if db is not None:
            raise CuratorError("--db and --no-warehouse contradict each other; give one")
        warehouse = None
    elif db is not None:
        warehouse = {**(warehouse or {}), "db": str(db)}
    if warehouse is not None:
        warehouse = {"db": str(warehouse["db"]),
                     "comparison": str(warehouse.get("comparison") or raw.get("name", "comparison"))}
    return CompareConfig(
        path=path, out=Path(out_dir), seeds=seed_list, teacher=teacher,
        gguf=str(model["gguf"]) if model.get("gguf") else None, base=str(model["base"]), tiny=tiny,
        dtype=model.get("dtype", "float32"),
        prompt={"template": model.get("prompt_template"), "chat": bool(model.get("chat_template", False))},
        train_data=Path(data["train"]),
        validation=Path(data["validation"]) if data.get("validation") else None,
        evals=evals, methods=methods, train=train, per_method=per_method,
        ranker=dict(raw.get("ranker") or {}), evaluate=evaluate,
        rule=report.get("rule", "greedy"), asc_rule=report.get("asc_rule", "asc:s"),
        prepare=prepare, name=raw.get("name", "comparison"), warehouse=warehouse)
