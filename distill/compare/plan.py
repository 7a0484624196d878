"""The plan of a comparison: its stages in order (prepare commands, the model, one
training stage per student, the ranker, one evaluation per student and set) and what each
stage runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from curator.errors import CuratorError
from distill.compare.config import (BASELINES, EVAL_KEYS, METHODS, PREFERENCE, SEEDLESS,
                                    CompareConfig)
from distill.compare.stages import STAMP, Stage, path_identity
from distill.knobs import training_config


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
                # where the results are stored too (absent without a warehouse, so
                # configs without one keep their fingerprints)
                if cfg.warehouse:
                    prompt = {**prompt, "warehouse": {**cfg.warehouse,
                                                      "label": f"{s}{cfg.suffix(s, seed)}"}}
                stages.append(Stage(
                    f"eval:{e['name']}:{s}{cfg.suffix(s, seed)}",
                    lambda e=e, s=s, settings=settings, use_ranker=use_ranker, prompt=prompt: {
                        "student": s, "settings": settings, "ranker": use_ranker,
                        "data": path_identity(e["data"]), "base": base_identity(), **prompt},
                    lambda e=e, d=d, settings=settings, use_ranker=use_ranker, adapter=adapter,
                    s=s, seed=seed:
                        _evaluate(cfg, adapter, e, d, settings, use_ranker, echo,
                                  fmt=fmt if adapter is None else None,
                                  label=f"{s}{cfg.suffix(s, seed)}"),
                    deps=stage_deps, dir=d,
                    # Samples stay valid while the student and the sampling settings do (more
                    # samples, other problems or another ranker reuse them; scores are keyed
                    # by ranker inside the evaluation).
                    keep=lambda e=e, s=s, settings=settings, prompt=prompt: {
                        "student": s, "data": path_identity(e["data"]), "base": base_identity(),
                        **{k: v for k, v in prompt.items() if k != "warehouse"},
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
              use_ranker: bool, echo, fmt=None, label: str | None = None) -> dict:
    from distill.eval_warehouse import WarehouseTarget
    from distill.evaluate import EvalConfig, evaluate

    settings = dict(settings)
    dtype = settings.pop("dtype", cfg.dtype)
    device = settings.pop("device", None)
    try:
        ecfg = EvalConfig(**settings)
    except TypeError as exc:
        raise CuratorError(f"{cfg.path} [evaluate]: {exc}") from None
    target = None
    if cfg.warehouse:
        db = Path(cfg.warehouse["db"])
        if not db.is_file():
            raise CuratorError(f"{cfg.path}: [warehouse] db {db}: no such warehouse file")
        export = cfg.train_data if cfg.train_data.is_dir() else cfg.train_data.parent
        target = WarehouseTarget(
            db, comparison_id=cfg.warehouse["comparison"], label=label,
            training_export=export if (export / "manifest.json").is_file() else None)
    rep = evaluate(cfg.base, e["data"], d, ecfg, adapter=adapter,
                   ranker=cfg.out / "ranker" if use_ranker else None, dtype=dtype,
                   device=device, fmt=fmt, warehouse=target,
                   echo=lambda s: echo("  " + s))
    info = {"problems": rep["problems"], "throughput": rep["throughput"]}
    if rep.get("warehouse"):
        info["warehouse"] = {k: rep["warehouse"][k] for k in ("db", "run_id", "comparison_id",
                                                              "label")}
    return info
