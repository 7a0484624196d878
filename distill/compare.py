"""``distill compare``: the paper's comparison table for any base model, teacher export and
budget, from one config file, resumable stage by stage.

One config (TOML, YAML or JSON) names the base model, the teacher export, the evaluation
sets (out-of-distribution sets are just more of them), the methods and the budgets. The
run is a list of *stages*: optional ``prepare`` commands (e.g. the ``curator`` calls that
build the export), the tiny model when asked for, one training stage per student (CoT KD
``sft``, ``mix``, ``nt``, ``ul``, ``cl``, ``nat``, ``nce`` on the NAT model), the ranking
model for ASC, and one evaluation per student and set. The table reads the evaluations'
reports; each method's row shows one voting rule (``[report] rule``, greedy by default),
``nat+nce+asc`` the ASC rule on the NAT+NCE student's samples.

Resuming: a finished stage writes ``OUT/stages/<stage>.json`` with its *fingerprint*, a
hash of what defines its result (its settings, its input files, and the run ids of the
stages it depends on). A later invocation skips every stage whose marker matches, reruns
the ones whose settings or inputs changed (and, through the run ids, everything
downstream of them), and continues an interrupted evaluation from the rationales already
on disk. Every invocation appends what it ran and skipped, with timings, to
``OUT/runs.jsonl``.

Seeds (``seeds = [0, 1, 2]`` or ``--seeds 0,1,2``): with more than one, every trained
student and its evaluations exist once per seed (``train:sft@s1``,
``OUT/students/sft/seed-1``), the seed-independent stages (prepare, the model, the
untrained base's evaluation, the ranker) once, and the table is the mean and 95% interval
over seeds with paired differences from CoT KD (:func:`aggregate`; docs/compare.md).

Paths in the config are relative to the current directory; ``{out}`` and ``{config_dir}``
are replaced by the output directory and the config file's directory.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from curator.durable import sha256_file
from curator.errors import CuratorError
from distill.knobs import training_config

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
            "report", "prepare", "name", "seeds", "teacher"}
TEACHER_KEYS = {"model", "title", "export", "db", "grader_version"}
#: students whose result does not depend on the seed (evaluated once in a multi-seed run)
SEEDLESS = ("base",)
REFERENCE = "sft"   # paired differences are taken against CoT KD
STAGES_DIR, RUNS_LOG = "stages", "runs.jsonl"


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
                seeds: str | list[int] | None = None) -> CompareConfig:
    """Read and check a comparison config; ``out`` overrides its ``out`` and ``seeds``
    (a list or ``"0,1,2"``) its ``seeds``."""
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
        prepare=prepare, name=raw.get("name", "comparison"))


# -- fingerprints ----------------------------------------------------------------------------

_DIGESTS: dict[tuple, str] = {}


def path_identity(path: str | Path) -> dict:
    """What identifies a file's content: its SHA-256 (up to 256 MiB; beyond that, size and
    modification time); for a directory, name, size and mtime of every file (model
    weights are too large to hash on every invocation)."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        if st.st_size <= 256 << 20:
            key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
            if key not in _DIGESTS:   # several stages read the same export
                _DIGESTS[key] = sha256_file(p)
            return {"sha256": _DIGESTS[key]}
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return {"files": [[str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns]
                          for f in files]}
    return {"missing": str(p)}


def fingerprint(params: Any) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:20]


# -- stages ----------------------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    params: Callable[[], dict]             # what defines the result (evaluated when reached)
    run: Callable[[], dict | None]         # does the work; returns details for the marker
    deps: list[str] = field(default_factory=list)
    dir: Path | None = None                # its own output directory (cleared when stale)
    # What the directory's content depends on, when that is less than the fingerprint:
    # an evaluation asked for more samples keeps the ones it has (default: fingerprint).
    keep: Callable[[], dict] | None = None
    keep_deps: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    stage: str
    status: str            # "ran", "skipped", "would run" (dry run), "failed"
    seconds: float
    fingerprint: str


def _marker_path(out: Path, stage: str) -> Path:
    return out / STAGES_DIR / (stage.replace(":", "__").replace("/", "_") + ".json")


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def read_marker(out: Path, stage: str) -> dict | None:
    p = _marker_path(out, stage)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None  # a damaged marker means: not finished


def run_stages(stages: list[Stage], out: Path, redo: tuple[str, ...] = (),
               dry_run: bool = False, echo: Callable[[str], None] = print) -> list[Outcome]:
    """Run ``stages`` in order, skipping those already finished with the same fingerprint.
    ``redo`` (glob patterns such as ``eval:*``) forces stages to run again."""
    out.mkdir(parents=True, exist_ok=True)
    invocation = uuid.uuid4().hex[:12]
    run_ids: dict[str, str] = {}
    outcomes = []
    for i, st in enumerate(stages, 1):
        missing = [d for d in st.deps if d not in run_ids]
        if missing:
            raise RuntimeError(f"stage {st.name} depends on {missing}, which come later")
        fp = fingerprint({"params": st.params(), "deps": [run_ids[d] for d in st.deps]})
        marker = read_marker(out, st.name)
        forced = any(fnmatch.fnmatchcase(st.name, pat) for pat in redo)
        if marker and marker.get("fingerprint") == fp and not forced:
            run_ids[st.name] = marker["run_id"]
            outcomes.append(Outcome(st.name, "skipped", 0.0, fp))
            if not dry_run:
                _log(out, invocation, outcomes[-1])
            echo(f"[{i}/{len(stages)}] {st.name}: done already ({marker.get('seconds', 0):.1f} s "
                 f"on {marker.get('finished_at', '?')[:19]}), skipped")
            continue
        if dry_run:
            run_ids[st.name] = "would-run-" + fp
            outcomes.append(Outcome(st.name, "would run", 0.0, fp))
            echo(f"[{i}/{len(stages)}] {st.name}: would run")
            continue
        echo(f"[{i}/{len(stages)}] {st.name}: running")
        if st.dir is not None:
            keep = fp if st.keep is None else fingerprint(
                {"keep": st.keep(), "deps": [run_ids[d] for d in st.keep_deps]})
            _prepare_dir(st.dir, keep)
        start = time.perf_counter()
        try:
            info = st.run() or {}
        except BaseException:
            # recorded, then passed on: the next invocation starts again at this stage
            _log(out, invocation, Outcome(st.name, "failed", time.perf_counter() - start, fp))
            raise
        seconds = time.perf_counter() - start
        run_id = fingerprint({"fp": fp, "at": time.time_ns(), "nonce": uuid.uuid4().hex})
        _write_json_atomic(_marker_path(out, st.name), {
            "stage": st.name, "fingerprint": fp, "run_id": run_id, "seconds": round(seconds, 3),
            "finished_at": datetime.now(timezone.utc).isoformat(), "info": info})
        run_ids[st.name] = run_id
        outcomes.append(Outcome(st.name, "ran", seconds, fp))
        echo(f"[{i}/{len(stages)}] {st.name}: finished in {seconds:.1f} s")
        _log(out, invocation, outcomes[-1])
    return outcomes


def _log(out: Path, invocation: str, o: Outcome) -> None:
    with open(out / RUNS_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps({"invocation": invocation, "stage": o.stage, "status": o.status,
                            "seconds": round(o.seconds, 3), "fingerprint": o.fingerprint,
                            "at": datetime.now(timezone.utc).isoformat()}) + "\n")


STAMP = ".stage-fingerprint"


def _prepare_dir(d: Path, fp: str) -> None:
    """A stage's directory holds the work of one fingerprint (or keep key): a directory
    left by an attempt with the same one is kept (evaluations resume from it), anything
    else of ours is cleared. A non-empty directory we did not create is refused."""
    stamp = d / STAMP
    if d.exists() and any(d.iterdir()):
        if not stamp.is_file():
            raise CuratorError(f"{d} exists and was not written by `distill compare`; move it "
                               f"away or choose another out")
        if stamp.read_text().strip() != fp:
            shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fp)


# -- building the plan -------------------------------------------------------------------------

def students_needed(methods: list[str]) -> list[str]:
    out: list[str] = []
    for m in methods:
        s = METHODS[m][0]
        if s not in out:
            out.append(s)
    return out


def _resolve_command(argv: list[str]) -> list[str]:
    """``curator``/``distill``/``python`` run with this interpreter, so a config works
    without the virtualenv on PATH."""
    head = {"curator": [sys.executable, "-m", "curator.cli"],
            "distill": [sys.executable, "-m", "distill.cli"],
            "python": [sys.executable]}.get(argv[0])
    return head + argv[1:] if head else argv


def plan(cfg: CompareConfig, echo: Callable[[str], None] = print) -> list[Stage]:
    """The stages of a comparison, in order, with their dependencies."""
    from distill.data import DEFAULT_TEMPLATE, PromptFormat

    out = cfg.out
    fmt = PromptFormat(template=cfg.prompt["template"] or DEFAULT_TEMPLATE, chat=cfg.prompt["chat"])
    stages: list[Stage] = []
    data_deps: list[str] = []

    for p in cfg.prepare:
        name = f"prepare:{p['name']}"
        argv, env = list(p["run"]), dict(p.get("env") or {})

        def run_cmd(argv=argv, env=env, name=name):
            cmd = _resolve_command(argv)
            echo("  $ " + " ".join(argv))
            res = subprocess.run(cmd, env={**os.environ, **env})
            if res.returncode != 0:
                raise CuratorError(f"stage {name}: `{' '.join(argv)}` exited with status "
                                   f"{res.returncode}; fix it and run `distill compare` again "
                                   f"(finished stages are kept)")
            return {"argv": argv}
        stages.append(Stage(name, lambda argv=argv, env=env: {"argv": argv, "env": env},
                            run_cmd, deps=list(data_deps)))
        data_deps = [name]

    model_deps: list[str] = []
    if cfg.tiny is not None:
        def make_tiny():
            from distill.tiny import TinyShape, init_tiny
            shape = {k: v for k, v in cfg.tiny.items() if k != "seed"}
            try:
                ts = TinyShape(**shape)
            except TypeError as exc:
                raise CuratorError(f"{cfg.path}: [model] tiny: {exc}") from None
            init_tiny(cfg.base, ts, seed=int(cfg.tiny.get("seed", 0)))
            return {"shape": shape}
        stages.append(Stage("model:init-tiny", lambda: {"tiny": cfg.tiny, "base": cfg.base},
                            make_tiny, dir=Path(cfg.base)))
        model_deps = ["model:init-tiny"]
    if cfg.gguf is not None:
        def convert():
            from distill.gguf import SOURCE_JSON, convert_gguf
            convert_gguf(cfg.gguf, cfg.base, dtype="float32", ignore=(STAMP,))
            return json.loads((Path(cfg.base) / SOURCE_JSON).read_text())

        def gguf_identity() -> dict:
            from distill.gguf import resolve_gguf
            return {"gguf": cfg.gguf, "content": path_identity(resolve_gguf(cfg.gguf)),
                    "base": cfg.base}
        stages.append(Stage("model:convert-gguf", gguf_identity, convert, dir=Path(cfg.base)))
        model_deps = ["model:convert-gguf"]

    def base_identity() -> dict:
        return {"base": cfg.base, "dtype": cfg.dtype,
                "files": path_identity(cfg.base) if Path(cfg.base).exists() else None}

    def data_identity() -> dict:
        return {"train": str(cfg.train_data), "content": path_identity(cfg.train_data)}

    students = students_needed(cfg.methods)
    # The ranker is trained for the ASC row; once trained, every evaluation gets its
    # scores too (cheap next to sampling), unless [ranker] score_all = false. It scores
    # teacher-style rationales from the base model and the teacher data alone, so it does
    # not depend on the students' seed: one ranker serves every seed.
    asc = "nat+nce+asc" in cfg.methods
    score_all = bool(cfg.ranker.get("score_all", True))
    deps = data_deps + model_deps
    train_stage: dict[tuple[str, Any], str] = {}

    def knobs_for(method: str, seed) -> dict:
        knobs = {**cfg.train, **cfg.per_method.get(method, {})}
        if seed is not None:          # the run's seed decides every random choice
            knobs["seed"] = seed
        return knobs

    trained = ([x for x in (*BASELINES, *PREFERENCE) if x in students]
               + (["nat"] if "nat" in students or "nce" in students else [])
               + (["nce"] if "nce" in students else []))
    for seed in cfg.seeds:
        for s in trained:
            d = cfg.student_dir(s, seed)
            name = f"train:{s}{cfg.suffix(s, seed)}"
            stage_deps = list(deps) + ([f"train:nat{cfg.suffix('nat', seed)}"] if s == "nce" else [])
            stages.append(Stage(
                name, lambda s=s, seed=seed: {"method": s, "knobs": knobs_for(s, seed),
                                              "base": base_identity(), "data": data_identity(),
                                              "prompt": fmt.to_json()},
                lambda s=s, d=d, seed=seed: _train(cfg, s, d, knobs_for(s, seed), fmt,
                                                   nat_dir=cfg.student_dir("nat", seed)),
                deps=stage_deps, dir=d))
            train_stage[(s, seed)] = name

    if asc:
        d = out / "ranker"
        rk = dict(cfg.ranker)
        rk.pop("score_all", None)
        stages.append(Stage("train:ranker",
                            lambda rk=rk: {"ranker": {**cfg.train, **rk}, "base": base_identity(),
                                           "data": data_identity(), "prompt": fmt.to_json(),
                                           "validation": path_identity(cfg.validation)
                                           if cfg.validation else None},
                            lambda rk=rk, d=d: _train_ranker(cfg, rk, d, fmt),
                            deps=list(deps), dir=d))

    for e in cfg.evals:
        configured = {**cfg.evaluate, **{k: v for k, v in e.items() if k in EVAL_KEYS}}
        for s in students:
            for seed in cfg.seeds_of(s):
                d = cfg.eval_dir(e["name"], s, seed)
                # a seeded run samples with its own seed too
                settings = configured if seed is None else {**configured, "seed": seed}
                use_ranker = asc and (s == "nce" or score_all)
                stage_deps = (list(deps) if s in SEEDLESS else [train_stage[(s, seed)]]) + \
                    (["train:ranker"] if use_ranker else [])
                student_deps = [x for x in stage_deps if x != "train:ranker"]
                adapter = None if s == "base" else cfg.student_dir(s, seed)
                # A student brings the prompt format it was trained with; the untrained
                # base is prompted as the config says (the students' format).
                prompt = {"prompt": fmt.to_json()} if adapter is None else {}
                stages.append(Stage(
                    f"eval:{e['name']}:{s}{cfg.suffix(s, seed)}",
                    lambda e=e, s=s, settings=settings, use_ranker=use_ranker, prompt=prompt: {
                        "student": s, "settings": settings, "ranker": use_ranker,
                        "data": path_identity(e["data"]), "base": base_identity(), **prompt},
                    lambda e=e, d=d, settings=settings, use_ranker=use_ranker, adapter=adapter:
                        _evaluate(cfg, adapter, e, d, settings, use_ranker, echo,
                                  fmt=fmt if adapter is None else None),
                    deps=stage_deps, dir=d,
                    # Samples stay valid while the student and the sampling settings do (more
                    # samples, other problems or another ranker reuse them; scores are keyed
                    # by ranker inside the evaluation).
                    keep=lambda e=e, s=s, settings=settings, prompt=prompt: {
                        "student": s, "data": path_identity(e["data"]), "base": base_identity(),
                        **prompt,
                        "sampling": {k: settings.get(k) for k in ("temperature", "top_p",
                                                                  "max_new_tokens", "dtype")}},
                    keep_deps=student_deps))
    return stages


def _train(cfg: CompareConfig, student: str, d: Path, knobs: dict, fmt, nat_dir: Path) -> dict:
    from distill.baselines import TRAINERS, train_baseline
    from distill.nat.trainer import NATConfig, train_nat

    where = f"{cfg.path} [train.{student}]"
    if student in BASELINES:
        config = training_config(TRAINERS[student][1], d, knobs, where)
        r = train_baseline(student, cfg.train_data, cfg.base, d, config, fmt)
        return {"examples": r.examples, "steps": r.steps, "final_loss": r.final_loss}
    if student in PREFERENCE:
        from distill.preference import CONFIGS, train_preference
        config = training_config(CONFIGS[student], d, knobs, where)
        r = train_preference(student, cfg.train_data, cfg.base, d, config, fmt)
        return {"examples": r.examples, "steps": r.steps, "final_loss": r.final_loss}
    if student == "nat":
        neg_knobs = {k[4:]: v for k, v in knobs.items() if k.startswith("neg_")}
        knobs = {k: v for k, v in knobs.items() if not k.startswith("neg_")}
        config = training_config(NATConfig, d, knobs, where)
        neg_config = training_config(NATConfig, d, {**knobs, **neg_knobs}, where) if neg_knobs else None
        # An attempt interrupted in stage 2 left a finished neg adapter: reuse it.
        neg = d if (d / "neg" / "adapter_model.safetensors").is_file() else None
        res = train_nat(cfg.train_data, cfg.base, d, config, fmt, neg=neg, neg_config=neg_config)
        return {k: {"examples": r.examples, "steps": r.steps, "final_loss": r.final_loss}
                for k, r in res.items()}
    if student == "nce":
        try:
            from distill.nce import NCEConfig, train_nce
        except ImportError as exc:
            raise CuratorError(f"NCE is not available in this installation ({exc}); remove "
                               f"nat+nce and nat+nce+asc from [methods] run") from None
        config = training_config(NCEConfig, d, knobs, where)
        r = train_nce(cfg.train_data, cfg.base, nat_dir, d, config, fmt)
        return {"examples": r.examples, "steps": r.steps, "final_loss": r.final_loss,
                "beta": r.beta}
    raise AssertionError(student)


def _train_ranker(cfg: CompareConfig, rk: dict, d: Path, fmt) -> dict:
    from distill.asc.ranker import RankerConfig, train_ranker
    knobs = {**cfg.train, **rk}
    base = knobs.pop("base", cfg.base)
    config = training_config(RankerConfig, d, knobs, f"{cfg.path} [ranker]")
    r = train_ranker(cfg.train_data, base, d, config, fmt, validation=cfg.validation)
    return {"pairs": r.pairs, "steps": r.steps, "final_loss": r.final_loss,
            "heldout_before": r.heldout_before, "heldout_after": r.heldout_after}


def _evaluate(cfg: CompareConfig, adapter: Path | None, e: dict, d: Path, settings: dict,
              use_ranker: bool, echo, fmt=None) -> dict:
    from distill.evaluate import EvalConfig, evaluate

    settings = dict(settings)
    dtype = settings.pop("dtype", cfg.dtype)
    device = settings.pop("device", None)
    try:
        ecfg = EvalConfig(**settings)
    except TypeError as exc:
        raise CuratorError(f"{cfg.path} [evaluate]: {exc}") from None
    rep = evaluate(cfg.base, e["data"], d, ecfg, adapter=adapter,
                   ranker=cfg.out / "ranker" if use_ranker else None, dtype=dtype,
                   device=device, fmt=fmt)
    return {"problems": rep["problems"], "throughput": rep["throughput"]}


# -- the table ---------------------------------------------------------------------------------

def collect(cfg: CompareConfig) -> dict:
    """``{set: {method: report}}`` for every finished evaluation (the one-seed layout)."""
    from distill.evaluate import REPORT_JSON
    res: dict[str, dict[str, dict]] = {}
    for e in cfg.evals:
        res[e["name"]] = {}
        for m in cfg.methods:
            p = cfg.eval_dir(e["name"], METHODS[m][0], cfg.seeds[0]) / REPORT_JSON
            if p.is_file():
                res[e["name"]][m] = json.loads(p.read_text())
    return res


def collect_seeds(cfg: CompareConfig) -> dict:
    """``{set: {method: {seed: report}}}`` for every finished evaluation; a
    seed-independent student's single report is under seed None."""
    from distill.evaluate import REPORT_JSON
    res: dict[str, dict[str, dict]] = {}
    for e in cfg.evals:
        res[e["name"]] = {}
        for m in cfg.methods:
            student = METHODS[m][0]
            got = {}
            for seed in cfg.seeds_of(student):
                p = cfg.eval_dir(e["name"], student, seed) / REPORT_JSON
                if p.is_file():
                    got[seed] = json.loads(p.read_text())
            res[e["name"]][m] = got
    return res


def table(cfg: CompareConfig, reports: dict | None = None) -> dict:
    """The comparison as data: per set and method, the row's rule and its accuracy per
    subject, Avg (mean over subjects) and All (mean over problems); and every rule's
    overall accuracy."""
    from distill.evaluate import subject_order
    reports = reports if reports is not None else collect(cfg)
    out: dict = {"name": cfg.name, "base": cfg.base, "methods": cfg.methods, "sets": {}}
    teacher = teacher_stats(cfg) if cfg.teacher else None
    for e in cfg.evals:
        per = reports.get(e["name"], {})
        tset = (teacher or {}).get("sets", {}).get(e["name"]) or {}
        subjects = subject_order({s for r in per.values() for s in r["counts"]["by_subject"]}
                                 | set(tset.get("by_subject", {})))
        rows = {}
        for m in cfg.methods:
            r = per.get(m)
            if r is None:
                rows[m] = None
                continue
            rule = cfg.asc_rule if METHODS[m][1] == "asc_rule" else cfg.rule
            if rule not in r["accuracy"]:
                raise CuratorError(f"{cfg.path}: [report] rule {rule!r} is not in the "
                                   f"evaluation of {m} (has {', '.join(r['rules'])})")
            a = r["accuracy"][rule]
            rows[m] = {"rule": rule, "by_subject": a["by_subject"], "avg": a["avg"],
                       "all": a["all"], "rules": {k: v["all"] for k, v in r["accuracy"].items()},
                       "problems": r["problems"], "samples": r["samples"]}
        out["sets"][e["name"]] = {"data": str(e["data"]), "subjects": subjects, "rows": rows}
    if teacher:
        out["teacher"] = teacher
    return out


def markdown_table(t: dict) -> str:
    from distill.evaluate import RULE_TITLES, SHORT, pct
    lines = [f"# {t['name']}: accuracy (%) of each method", "",
             f"Base model `{t['base']}`. Rows show the rule named in brackets; Avg is the mean "
             f"over subjects (the paper's), All the mean over problems.", ""]
    summary_head = "| method | " + " | ".join(f"{n} Avg" for n in t["sets"]) + " |"
    summary = [summary_head, "|---|" + "---:|" * len(t["sets"])]
    for m in t["methods"]:
        cells = []
        for s in t["sets"].values():
            row = s["rows"].get(m)
            cells.append(pct(row["avg"]) if row else "–")
        summary.append(f"| {TITLES[m]} | " + " | ".join(cells) + " |")
    for name, s in t["sets"].items():
        subj = s["subjects"]
        lines += [f"## {name}", "", f"`{s['data']}`", "",
                  "| method | " + " | ".join(SHORT.get(x, x) for x in subj) + " | Avg | All |",
                  "|---|" + "---:|" * (len(subj) + 2)]
        for m in t["methods"]:
            row = s["rows"].get(m)
            if row is None:
                lines.append(f"| {TITLES[m]} | " + " | ".join("–" for _ in subj) + " | – | – |")
                continue
            lines.append(f"| {TITLES[m]} ({RULE_TITLES.get(row['rule'], row['rule'])}) | "
                         + " | ".join(pct(row["by_subject"].get(x)) for x in subj)
                         + f" | {pct(row['avg'])} | {pct(row['all'])} |")
        tset = (t.get("teacher") or {}).get("sets", {}).get(name)
        if tset:
            lines.append(f"| teacher {t['teacher']['model']} (mean over its "
                         f"{tset['samples']} samples) | "
                         + " | ".join(pct(tset["by_subject"].get(x)) for x in subj)
                         + f" | {pct(tset['avg'])} | {pct(tset['all'])} |")
        rules = []
        for row in s["rows"].values():
            for k in (row or {}).get("rules", {}):
                if k not in rules:
                    rules.append(k)
        lines += ["", f"Every voting rule on {name} (All):", "",
                  "| student | " + " | ".join(RULE_TITLES.get(k, k) for k in rules) + " |",
                  "|---|" + "---:|" * len(rules)]
        seen = set()
        for m in t["methods"]:
            row = s["rows"].get(m)
            student = METHODS[m][0]
            if row is None or student in seen:
                continue
            seen.add(student)
            title = TITLES["nat+nce" if student == "nce" else m]
            lines.append(f"| {title} | " + " | ".join(pct(row["rules"].get(k)) for k in rules) + " |")
        lines.append("")
    if len(t["sets"]) > 1:
        lines += ["## All sets", ""] + summary + [""]
    if t.get("teacher"):
        lines += teacher_markdown(t["teacher"])
    return "\n".join(lines) + "\n"


# -- over seeds: means, intervals, paired differences (pure) ------------------------------------

def _t_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with ``df`` (a whole number) degrees of freedom, in closed
    form (Abramowitz & Stegun 26.7.3-4)."""
    import math
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        if df == 1:
            return 2 * theta / math.pi
        term, acc = math.cos(theta), math.cos(theta)
        for k in range(3, df - 1, 2):
            term *= c2 * (k - 1) / k
            acc += term
        return 2 / math.pi * (theta + s * acc)
    term, acc = 1.0, 1.0
    for k in range(2, df - 1, 2):
        term *= c2 * (k - 1) / k
        acc += term
    return s * acc


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided critical value of Student's t: P(|T| < q) = ``confidence``
    (``t_quantile(0.95, 2)`` = 4.303)."""
    if df < 1:
        raise ValueError("t_quantile needs at least one degree of freedom")
    lo, hi = 0.0, 1.0
    while _t_two_sided(hi, df) < confidence:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_two_sided(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def interval(values: list[float], confidence: float = 0.95) -> dict | None:
    """Mean of ``values`` (one per seed) and its ``confidence`` interval from the
    t-distribution with n-1 degrees of freedom; with one value, just the value (``low``,
    ``high``, ``half`` and ``sd`` None)."""
    import math
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return {"mean": mean, "n": 1, "sd": None, "half": None, "low": None, "high": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "n": n, "sd": sd, "half": half, "low": mean - half, "high": mean + half}


def paired(values: dict, reference: dict, confidence: float = 0.95) -> dict | None:
    """``values - reference`` per seed (both ``{seed: accuracy}``), and the interval of
    those differences. A seed-independent side (one value under seed None, as the base
    model's) is compared with every seed of the other."""
    if None in values and len(values) == 1:
        diffs = [values[None] - r for r in reference.values() if r is not None]
    elif None in reference and len(reference) == 1:
        diffs = [v - reference[None] for v in values.values() if v is not None]
    else:
        diffs = [values[k] - reference[k] for k in values
                 if k in reference and values[k] is not None and reference[k] is not None]
    return interval(diffs, confidence)


def _metric(report: dict, rule: str) -> dict:
    a = report["accuracy"][rule]
    return {"avg": a["avg"], "all": a["all"], "by_level": a.get("by_level", {}),
            "by_subject": a.get("by_subject", {})}


def aggregate(cfg: CompareConfig, reports: dict | None = None) -> dict:
    """The comparison over seeds as data: per set and method, each seed's accuracy (Avg over
    subjects, All over problems, per level and subject), the mean and 95% interval of each,
    and the paired difference against CoT KD (``sft``) with its interval."""
    from distill.evaluate import subject_order
    reports = reports if reports is not None else collect_seeds(cfg)
    out: dict = {"name": cfg.name, "base": cfg.base, "methods": cfg.methods,
                 "seeds": cfg.seeds, "confidence": 0.95,
                 "reference": REFERENCE if REFERENCE in cfg.methods else None, "sets": {}}
    for e in cfg.evals:
        per = reports.get(e["name"], {})
        levels = sorted({lv for runs in per.values() for r in runs.values()
                         for lv in r["counts"]["by_level"]}, key=_level_key)
        subjects = subject_order({x for runs in per.values() for r in runs.values()
                                  for x in r["counts"]["by_subject"]})
        rows: dict = {}
        for m in cfg.methods:
            runs = per.get(m) or {}
            if not runs:
                rows[m] = None
                continue
            rule = cfg.asc_rule if METHODS[m][1] == "asc_rule" else cfg.rule
            for seed, r in runs.items():
                if rule not in r["accuracy"]:
                    raise CuratorError(f"{cfg.path}: [report] rule {rule!r} is not in the "
                                       f"evaluation of {m} (seed {seed}; has "
                                       f"{', '.join(r['rules'])})")
            seeds = {seed: _metric(r, rule) for seed, r in runs.items()}
            rows[m] = {
                "rule": rule, "problems": next(iter(runs.values()))["problems"],
                # a seed-independent row's one value is under "once"
                "per_seed": {("once" if k is None else str(k)): v for k, v in seeds.items()},
                "avg": interval([v["avg"] for v in seeds.values()]),
                "all": interval([v["all"] for v in seeds.values()]),
                "by_level": {lv: interval([v["by_level"].get(lv) for v in seeds.values()])
                             for lv in levels},
                "by_subject": {x: interval([v["by_subject"].get(x) for v in seeds.values()])
                               for x in subjects},
                "_seeds": seeds}
        ref = rows.get(REFERENCE)
        for m, row in rows.items():
            if row is None:
                continue
            if ref is None or m == REFERENCE:
                row["vs_reference"] = None
                continue
            a, b = row["_seeds"], ref["_seeds"]
            row["vs_reference"] = {
                "avg": paired({k: v["avg"] for k, v in a.items()}, {k: v["avg"] for k, v in b.items()}),
                "all": paired({k: v["all"] for k, v in a.items()}, {k: v["all"] for k, v in b.items()}),
                "by_level": {lv: paired({k: v["by_level"].get(lv) for k, v in a.items()},
                                        {k: v["by_level"].get(lv) for k, v in b.items()})
                             for lv in levels}}
        for row in rows.values():
            if row is not None:
                row.pop("_seeds")
        out["sets"][e["name"]] = {"data": str(e["data"]), "levels": levels,
                                  "subjects": subjects, "rows": rows}
    if cfg.teacher:
        out["teacher"] = teacher_stats(cfg)
    return out


def _level_key(level: str):
    return (0, int(level)) if str(level).isdigit() else (1, str(level))


def _cell(iv: dict | None, signed: bool = False) -> str:
    """``12.34 ± 1.20`` (percent; mean ± half-width), just the value when one seed."""
    if iv is None:
        return "–"
    m = 100 * iv["mean"]
    head = f"{m:+.2f}" if signed else f"{m:.2f}"
    return head if iv["half"] is None else f"{head} ± {100 * iv['half']:.2f}"


def markdown_aggregate(t: dict) -> str:
    from distill.evaluate import RULE_TITLES
    seeds = ", ".join(str(x) for x in t["seeds"])
    ref = t.get("reference")
    lines = [f"# {t['name']}: accuracy (%) of each method over {len(t['seeds'])} seeds", "",
             f"Base model `{t['base']}`; seeds {seeds}. Each cell is the mean over seeds ± the "
             f"half-width of its 95% interval (Student's t, n-1 degrees of freedom); a row "
             f"evaluated once (the untrained base) shows its one value. Avg is the mean over "
             f"subjects (the paper's), All the mean over problems."
             + (" Δ is the paired difference from CoT KD, seed by seed, with its own "
                "interval: an interval that excludes 0 is a difference these seeds resolve."
                if ref else ""), ""]
    for name, s in t["sets"].items():
        lines += [f"## {name}", "", f"`{s['data']}`", ""]
        head = "| method | seeds | Avg | All |" + (" Δ Avg vs CoT KD | Δ All vs CoT KD |" if ref else "")
        lines += [head, "|---|---:|---:|---:|" + ("---:|---:|" if ref else "")]
        for m in t["methods"]:
            row = s["rows"].get(m)
            if row is None:
                lines.append(f"| {TITLES[m]} | 0 | – | – |" + (" – | – |" if ref else ""))
                continue
            cells = [str(row["avg"]["n"] if row["avg"] else len(row["per_seed"])),
                     _cell(row["avg"]), _cell(row["all"])]
            if ref:
                d = row.get("vs_reference")
                cells += ["–", "–"] if d is None else [_cell(d["avg"], True), _cell(d["all"], True)]
            lines.append(f"| {TITLES[m]} ({RULE_TITLES.get(row['rule'], row['rule'])}) | "
                         + " | ".join(cells) + " |")
        tset = (t.get("teacher") or {}).get("sets", {}).get(name)
        if tset:
            lines.append(f"| teacher {t['teacher']['model']} (mean over its {tset['samples']} "
                         f"samples) | – | {_cell({'mean': tset['avg'], 'half': None})} | "
                         f"{_cell({'mean': tset['all'], 'half': None})} |"
                         + (" – | – |" if ref else ""))
        levels = s["levels"]
        if levels:
            lines += ["", f"By level on {name} (All within each level):", "",
                      "| method | " + " | ".join(f"L{lv}" for lv in levels) + " |",
                      "|---|" + "---:|" * len(levels)]
            for m in t["methods"]:
                row = s["rows"].get(m)
                if row is not None:
                    lines.append(f"| {TITLES[m]} | "
                                 + " | ".join(_cell(row["by_level"].get(lv)) for lv in levels) + " |")
            if tset:
                lines.append(f"| teacher {t['teacher']['model']} | " + " | ".join(
                    _cell({"mean": tset["by_level"][lv], "half": None})
                    if tset["by_level"].get(lv) is not None else "–" for lv in levels) + " |")
            if ref:
                lines += ["", f"By level on {name}, Δ vs CoT KD (paired over seeds):", "",
                          "| method | " + " | ".join(f"L{lv}" for lv in levels) + " |",
                          "|---|" + "---:|" * len(levels)]
                for m in t["methods"]:
                    row = s["rows"].get(m)
                    if row is not None and row.get("vs_reference"):
                        lines.append(f"| {TITLES[m]} | " + " | ".join(
                            _cell(row["vs_reference"]["by_level"].get(lv), True) for lv in levels) + " |")
        lines += ["", f"Every seed on {name} (Avg):", "",
                  "| method | " + " | ".join(f"seed {x}" for x in t["seeds"]) + " |",
                  "|---|" + "---:|" * len(t["seeds"])]
        for m in t["methods"]:
            row = s["rows"].get(m)
            if row is None:
                continue
            ps = row["per_seed"]
            if list(ps) == ["once"]:
                cells = [_cell({"mean": ps["once"]["avg"], "half": None})] * len(t["seeds"])
            else:
                cells = [_cell({"mean": ps[str(x)]["avg"], "half": None}) if str(x) in ps else "–"
                         for x in t["seeds"]]
            lines.append(f"| {TITLES[m]} | " + " | ".join(cells) + " |")
        lines.append("")
    if t.get("teacher"):
        lines += teacher_markdown(t["teacher"])
    return "\n".join(lines) + "\n"


# -- the teacher's row ------------------------------------------------------------------------

def teacher_stats(cfg: CompareConfig) -> dict:
    """The teacher named by ``[teacher] model``: its pass rate on the training export's
    problems (share of its rationales labelled positive, overall and per level, and the
    share of problems with at least one positive), and, when ``[teacher] db`` names the
    warehouse, its accuracy on each eval set's problems from the warehouse's grades (per
    problem, the mean over its samples)."""
    from distill.data import read_export
    tc = cfg.teacher or {}
    model = tc["model"]
    export = Path(tc.get("export") or cfg.train_data)
    if not export.exists():
        raise CuratorError(f"{cfg.path}: [teacher] export {export}: no such file")
    every = read_export(export)
    recs = [r for r in every if r.get("teacher_model") == model]
    if not recs:
        models = sorted({str(r.get("teacher_model")) for r in every})
        raise CuratorError(f"{cfg.path}: [teacher] model {model!r} has no rationale in {export} "
                           f"(its teacher_model values: {', '.join(models) or 'none'})")
    by_level: dict[str, list[bool]] = {}
    solved: dict[str, bool] = {}
    for r in recs:
        ok = r["label"] == "positive"
        lv = str(r["level"]) if r.get("level") is not None else "none"
        by_level.setdefault(lv, []).append(ok)
        solved[r["problem_id"]] = solved.get(r["problem_id"], False) or ok
    out = {"model": model, "title": tc.get("title") or f"teacher {model}",
           "train": {"export": str(export), "problems": len(solved), "rationales": len(recs),
                     "pass_rate": sum(r["label"] == "positive" for r in recs) / len(recs),
                     "problems_with_a_positive": sum(solved.values()) / len(solved),
                     "by_level": {k: sum(v) / len(v) for k, v in
                                  sorted(by_level.items(), key=lambda kv: _level_key(kv[0]))}},
           "sets": {}}
    if tc.get("db"):
        out["grader_version"], out["sets"] = _teacher_on_sets(cfg, model, Path(tc["db"]),
                                                              tc.get("grader_version"))
    return out


def _teacher_on_sets(cfg: CompareConfig, model: str, db: Path, grader_version: str | None):
    from curator.grading.api import GRADER_VERSION
    from curator.warehouse import Warehouse
    from distill.data import read_eval
    from distill.evaluate import subject_of, subject_order

    if not db.is_file():
        raise CuratorError(f"{cfg.path}: [teacher] db {db}: no such warehouse file")
    gv = grader_version or GRADER_VERSION
    sets = {}
    with Warehouse(db).read() as con:
        for e in cfg.evals:
            problems = read_eval(e["data"])
            limit = e.get("limit", cfg.evaluate.get("limit"))
            if limit:
                problems = [p for p in problems if (p.get("reference_answer") or "").strip()][:limit]
            ids = [p["problem_id"] for p in problems]
            if not ids:
                continue
            rows = con.execute(
                "SELECT s.problem_id, avg(CASE WHEN g.correct THEN 1.0 ELSE 0.0 END), count(*) "
                "FROM samples s JOIN runs r USING (run_id) JOIN grades g USING (sample_id) "
                "WHERE r.model = ? AND g.grader_version = ? AND s.problem_id IN "
                "(SELECT unnest(?::VARCHAR[])) GROUP BY s.problem_id",
                [model, gv, ids]).fetchall()
            if not rows:
                continue
            acc = {pid: (a, n) for pid, a, n in rows}
            meta = {p["problem_id"]: p for p in problems}
            by_s: dict[str, list[float]] = {}
            by_l: dict[str, list[float]] = {}
            for pid, (a, _) in acc.items():
                p = meta[pid]
                by_s.setdefault(subject_of(p), []).append(a)
                by_l.setdefault(str(p["level"]) if p.get("level") is not None else "none", []).append(a)
            subj = {x: sum(by_s[x]) / len(by_s[x]) for x in subject_order(by_s)}
            sets[e["name"]] = {
                "problems": len(acc), "of": len(ids), "samples": sum(n for _, n in acc.values()),
                "all": sum(a for a, _ in acc.values()) / len(acc),
                "avg": sum(subj.values()) / len(subj), "by_subject": subj,
                "by_level": {k: sum(v) / len(v) for k, v in
                             sorted(by_l.items(), key=lambda kv: _level_key(kv[0]))}}
    return gv, sets


def teacher_markdown(teacher: dict) -> list[str]:
    from distill.evaluate import pct
    tr = teacher["train"]
    levels = list(tr["by_level"])
    lines = [f"## {teacher['title']}", "",
             f"On the training export's {tr['problems']} problems (`{tr['export']}`): "
             f"{pct(tr['pass_rate'])}% of its {tr['rationales']} rationales are labelled "
             f"positive; {pct(tr['problems_with_a_positive'])}% of the problems have at least "
             f"one positive. These are the students' training problems, not the eval sets.", "",
             "| | " + " | ".join(f"L{lv}" for lv in levels) + " | All |",
             "|---|" + "---:|" * (len(levels) + 1),
             "| pass rate | " + " | ".join(pct(tr["by_level"][lv]) for lv in levels)
             + f" | {pct(tr['pass_rate'])} |", ""]
    for name, s in teacher.get("sets", {}).items():
        lines.append(f"On {name}: {pct(s['all'])}% (All), {pct(s['avg'])}% (Avg), the mean over "
                     f"its {s['samples']} graded samples of {s['problems']} of the {s['of']} "
                     f"problems ({teacher.get('grader_version')}).")
    if teacher.get("sets"):
        lines.append("")
    return lines


def plot_table(t: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sets = list(t["sets"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(t["methods"]) + 2), 3.8))
    width = 0.8 / max(1, len(sets))
    for i, name in enumerate(sets):
        rows = t["sets"][name]["rows"]
        avgs = [(rows.get(m) or {}).get("avg") for m in t["methods"]]
        if any(isinstance(a, dict) for a in avgs):   # over seeds: mean with its interval
            ys = [100 * (a["mean"] if a else 0) for a in avgs]
            err = [100 * (a["half"] or 0) if a else 0 for a in avgs]
        else:
            ys, err = [100 * (a or 0) for a in avgs], None
        ax.bar([j + i * width for j in range(len(t["methods"]))], ys, width, label=name,
               yerr=err, capsize=3 if err else 0)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(t["methods"]))])
    ax.set_xticklabels([TITLES[m] for m in t["methods"]], rotation=25, ha="right")
    ax.set_ylabel("accuracy (%), Avg over subjects")
    ax.set_title(t["name"])
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_table(cfg: CompareConfig) -> dict:
    """``comparison.json``, ``comparison.md`` and ``comparison.png`` in OUT: the one-seed
    table, or with several seeds the aggregate over them."""
    t = aggregate(cfg) if cfg.multi_seed else table(cfg)
    _write_json_atomic(cfg.out / "comparison.json", t)
    (cfg.out / "comparison.md").write_text(markdown_aggregate(t) if cfg.multi_seed
                                           else markdown_table(t))
    plot_table(t, cfg.out / "comparison.png")
    return t


@dataclass
class CompareResult:
    outcomes: list[Outcome]
    table: dict | None
    out: Path


def compare(config: str | Path, out: str | Path | None = None, redo: tuple[str, ...] = (),
            dry_run: bool = False, echo: Callable[[str], None] = print,
            seeds: str | list[int] | None = None) -> CompareResult:
    """Run (or resume) the comparison described by ``config`` and write the table;
    ``seeds`` overrides the config's ``seeds``."""
    cfg = load_config(config, out, seeds=seeds)
    stages = plan(cfg, echo)
    outcomes = run_stages(stages, cfg.out, redo=redo, dry_run=dry_run, echo=echo)
    t = None if dry_run else write_table(cfg)
    return CompareResult(outcomes, t, cfg.out)
