"""`curator generate` as a library function: choose problems, plan the runs and the
requests for the samples still missing (:func:`plan_generation`), then estimate
(``dry_run``) or generate live with the engine (:func:`generate`). Batches are submitted
from the same plan by :func:`curator.teachers.batch.submit`, not here.

Run ids are deterministic, ``stable_id("r", "generate", provider, model, prompt_id,
canonical params)``, so re-running the same command resumes the same run and asks only
for samples it does not have. The number of samples, the problem selection and the
endpoints are not part of the run's identity: asking for more samples later extends the
same run.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field

from curator.errors import CuratorError
from curator.ids import stable_id
from curator.teachers import journal as journal_mod
from curator.teachers.claims import Claimed, claim_missing
from curator.teachers.engine import Engine, EngineOptions, Job, RunPlan, Stats
from curator.teachers.limits import LimitSpec
from curator.teachers.pricing import PriceTable
from curator.teachers.prompts import Template, family_template, load_template
from curator.teachers.providers import _KEY_ENV, PROVIDERS, api_key, make_adapter, safe_url
from curator.teachers.store import (Selection, ensure_run, pending_batch_samples,
                                    select_problems, stored_samples)
from curator.warehouse import Warehouse

# Rough characters per token for estimates before the provider has told us (a dry run);
# LaTeX-heavy prompts are denser than English prose.
CHARS_PER_TOKEN = 3.5


@dataclass
class GenerateSpec:
    provider: str
    model: str
    samples: int
    base_urls: list[str] = field(default_factory=list)
    selection: Selection = field(default_factory=Selection)
    prompt: str | None = None             # built-in name or template file; None: per family
    temperature: float | None = 0.7
    top_p: float | None = None
    max_tokens: int | None = 1024
    seed: int | None = None
    n_per_request: int | None = None      # None: as many as the provider allows
    concurrency: int = 64
    limits: LimitSpec = field(default_factory=LimitSpec)
    timeout: float = 120.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    truncated: str = "keep"
    max_cost: float | None = None
    prices: str | None = None
    api_key_env: str | None = None
    grade: bool = False
    batch: bool = False                   # estimates at the batch discount

    def params(self) -> dict:
        """Sampling parameters: what makes two runs different teachers' outputs."""
        p = {"temperature": self.temperature, "top_p": self.top_p,
             "max_tokens": self.max_tokens, "seed": self.seed}
        return {k: v for k, v in p.items() if v is not None}


def canonical_params(params: dict) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def run_id_for(provider: str, model: str, prompt_id: str, params: dict) -> str:
    return stable_id("r", "generate", provider, model, prompt_id, canonical_params(params))


@dataclass
class RunSummary:
    run_id: str
    model: str
    prompt: str
    problems: int
    stored: int                   # samples already stored before this invocation
    in_batches: int               # samples waiting in uncollected batches
    missing: int                  # samples to request now
    requests: int
    est_input_tokens: int
    est_output_tokens: int        # upper bound: max_tokens per sample
    est_cost_max: float | None
    est_cost_typical: float | None  # from this run's mean completion length, if known

    def row(self) -> list:
        money = (lambda v: "unknown" if v is None else f"${v:,.4f}")
        return [self.run_id, self.model, self.prompt, self.problems, self.stored,
                self.in_batches, self.missing, self.requests, self.est_input_tokens,
                self.est_output_tokens, money(self.est_cost_max), money(self.est_cost_typical)]

    HEADERS = ["run_id", "model", "prompt", "problems", "stored", "in batches", "to request",
               "requests", "est. input tokens", "max output tokens", "max cost",
               "typical cost"]


@dataclass
class Plan:
    spec: GenerateSpec
    runs: list[RunPlan]
    jobs: list[Job]
    summaries: list[RunSummary]

    @property
    def missing(self) -> int:
        return sum(s.missing for s in self.summaries)


@dataclass
class GenerateReport:
    plan: Plan
    stats: Stats
    elapsed_s: float
    replayed: int                 # journal records of an earlier, killed run stored first
    stop_reason: str | None
    grade_error: str | None = None
    # samples this invocation left to other live `curator generate` processes
    claimed_elsewhere: Claimed = field(default_factory=Claimed)

    @property
    def not_requested(self) -> int:
        return self.stats.total - self.stats.done - self.stats.failed


class GenerationInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM ended a generation; everything received was stored first."""

    def __init__(self, report: GenerateReport) -> None:
        super().__init__("generation interrupted")
        self.report = report


def _templates_for(problems: list[dict], prompt: str | None) -> dict[str, Template]:
    """problem_id -> template."""
    if prompt is not None:
        t = load_template(prompt)
        return {p["problem_id"]: t for p in problems}
    by_dataset: dict[str, Template] = {}
    out = {}
    for p in problems:
        d = p["dataset"]
        if d not in by_dataset:
            by_dataset[d] = family_template(d)
        out[p["problem_id"]] = by_dataset[d]
    return out


def plan_generation(wh: Warehouse, spec: GenerateSpec) -> Plan:
    """Everything a generation will ask for, read from the warehouse (writes nothing)."""
    if spec.provider not in PROVIDERS:
        raise CuratorError(f"unknown provider {spec.provider!r}; use one of {', '.join(PROVIDERS)}")
    if spec.samples < 1:
        raise CuratorError("--samples must be at least 1")
    if spec.max_tokens is not None and spec.max_tokens < 1:
        raise CuratorError("--max-tokens must be at least 1")
    if spec.temperature is not None and not spec.temperature >= 0:
        raise CuratorError(f"--temperature {spec.temperature}: must be 0 or more")
    if not spec.timeout > 0:
        raise CuratorError(f"--timeout {spec.timeout}: must be more than 0 seconds")
    if spec.max_cost is not None and not spec.max_cost > 0:
        raise CuratorError(f"--max-cost {spec.max_cost}: must be more than 0 (USD)")
    from urllib.parse import urlsplit
    for url in spec.base_urls:
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            ok = False
        if not ok:
            raise CuratorError(f"--base-url {safe_url(url)!r}: expected an http:// or "
                               "https:// URL, e.g. http://127.0.0.1:8765/v1")
        if parts.username is not None or parts.password is not None:
            # The SDKs cannot send a request to such a URL (they refuse to combine it
            # with their own Authorization header), and it would put a secret into
            # every stored attempt: refuse it before anything is sent.
            raise CuratorError(f"--base-url {safe_url(url)!r}: credentials in the URL "
                               "(user:password@) are not supported; give the endpoint "
                               "without them and put the key in the environment "
                               f"({' or '.join(_KEY_ENV[spec.provider])}, or name a "
                               "variable with --api-key-env)")
    if spec.provider == "openai-compatible" and not spec.base_urls:
        raise CuratorError("--provider openai-compatible needs at least one --base-url")
    adapter = make_adapter(spec.provider)
    prices = PriceTable(spec.prices)
    price = prices.lookup(spec.model)
    if spec.max_cost is not None and price is None:
        raise CuratorError(f"--max-cost needs a price for model {spec.model!r}, and the price "
                           f"table has none: pass --prices FILE with "
                           f'{{"models": {{"{spec.model}": {{"input": USD_per_1M, "output": USD_per_1M}}}}}}')
    problems = select_problems(wh, spec.selection)
    if not problems:
        raise CuratorError("no problems match the selection (check --dataset/--split/--where, "
                           "or load problems with `curator load`)")
    templates = _templates_for(problems, spec.prompt)
    params = spec.params()
    n_cap = spec.n_per_request or (128 if adapter.supports_n else 1)
    if not adapter.supports_n:
        n_cap = 1
    n_cap = max(1, min(n_cap, spec.samples))

    runs: dict[str, RunPlan] = {}
    jobs: list[Job] = []
    summaries: dict[str, RunSummary] = {}
    with wh.read() as con:
        stored_by_run: dict[str, dict] = {}
        pending_by_run: dict[str, dict] = {}
        mean_ct: dict[str, float | None] = {}
        for p in problems:
            t = templates[p["problem_id"]]
            rid = run_id_for(spec.provider, spec.model, t.prompt_id, params)
            if rid not in runs:
                runs[rid] = RunPlan(rid, spec.provider, spec.model, t, params, price)
                stored_by_run[rid] = stored_samples(con, rid, spec.truncated == "keep")
                pending_by_run[rid] = pending_batch_samples(con, rid)
                row = con.execute("SELECT avg(completion_tokens) FROM samples WHERE run_id = ? "
                                  "AND completion IS NOT NULL", [rid]).fetchall()
                mean_ct[rid] = row[0][0] if row else None
                summaries[rid] = RunSummary(rid, spec.model, t.name, 0, 0, 0, 0, 0, 0, 0,
                                            0.0 if price else None, 0.0 if price else None)
            run = runs[rid]
            s = summaries[rid]
            s.problems += 1
            have = stored_by_run[rid].get(p["problem_id"], set())
            waiting = pending_by_run[rid].get(p["problem_id"], set())
            missing = [i for i in range(spec.samples) if i not in have and i not in waiting]
            s.stored += sum(1 for i in range(spec.samples) if i in have)
            s.in_batches += sum(1 for i in range(spec.samples) if i in waiting and i not in have)
            if not missing:
                continue
            messages = t.render(p)
            chars = sum(len(m["content"]) for m in messages)
            for k in range(0, len(missing), n_cap):
                idx = missing[k:k + n_cap]
                jobs.append(Job(run, p["problem_id"], idx, messages, chars))
                est_in = math.ceil(chars / CHARS_PER_TOKEN)
                est_out = (spec.max_tokens or 1024) * len(idx)
                s.missing += len(idx)
                s.requests += 1
                s.est_input_tokens += est_in
                s.est_output_tokens += est_out
                if price is not None:
                    s.est_cost_max += price.cost(est_in, est_out, batch=spec.batch)
                    typical = mean_ct[rid]
                    s.est_cost_typical = (None if typical is None or s.est_cost_typical is None
                                          else s.est_cost_typical + price.cost(
                                              est_in, int(typical * len(idx)), batch=spec.batch))
    for s in summaries.values():
        if mean_ct[s.run_id] is None:
            s.est_cost_typical = None
    return Plan(spec, list(runs.values()), jobs, list(summaries.values()))


def _grade_hook(wh: Warehouse, run_ids: list[str]):
    try:
        from curator.grading import grade_pending
    except ImportError as exc:
        raise CuratorError("--grade needs curator.grading.grade_pending, which this "
                           f"installation does not have ({exc})") from exc

    def grade() -> None:
        grade_pending(wh, run_ids=run_ids)
    return grade


def record_runs(wh: Warehouse, plan: Plan) -> None:
    spec = plan.spec
    with wh.write() as con:
        for run in plan.runs:
            ensure_run(con, run_id=run.run_id, provider=spec.provider, model=spec.model,
                       prompt_id=run.template.prompt_id, prompt_name=run.template.name,
                       template=run.template.canonical, params=run.params,
                       metadata={"price": None if run.price is None else {
                           "model": run.price.model, "input_per_m": run.price.input_per_m,
                           "output_per_m": run.price.output_per_m}})


def generate(wh: Warehouse, spec: GenerateSpec, *, progress=None, dry_run: bool = False,
             plan: Plan | None = None) -> GenerateReport | Plan:
    """Generate the missing samples. Returns the plan alone when ``dry_run``.

    ``progress`` is an object with ``start(stats)`` and ``stop()`` (the CLI's display).
    """
    if dry_run:
        return plan if plan is not None else plan_generation(wh, spec)
    given = plan
    # Planning and claiming happen together, so that a second process on the same
    # warehouse never requests (and pays for) a sample this one is requesting.
    with claim_missing(wh, lambda: given if given is not None else plan_generation(wh, spec)
                       ) as (plan, elsewhere, replayed):
        return _generate_claimed(wh, spec, plan, progress, replayed, elsewhere)


def _generate_claimed(wh: Warehouse, spec: GenerateSpec, plan: Plan, progress,
                      replayed: int, elsewhere: Claimed) -> GenerateReport:
    key = api_key(spec.provider, spec.api_key_env)
    grade = _grade_hook(wh, [r.run_id for r in plan.runs]) if spec.grade else None
    record_runs(wh, plan)
    stats = Stats(total=plan.missing, priced=all(r.price is not None for r in plan.runs))
    adapter = make_adapter(spec.provider)
    opts = EngineOptions(concurrency=spec.concurrency, limits=spec.limits, timeout=spec.timeout,
                         max_attempts=spec.max_attempts, truncated=spec.truncated,
                         max_cost=spec.max_cost, backoff_base=spec.backoff_base,
                         backoff_cap=spec.backoff_cap)
    urls: list[str | None] = list(spec.base_urls) or [None]
    journal = journal_mod.Journal(journal_mod.journal_dir(wh))
    t0 = time.monotonic()
    engine = None
    try:
        engine = Engine(wh, adapter, urls, key, opts, stats, journal, on_commit=grade)
        if progress is not None:
            progress.start(stats)
        try:
            asyncio.run(engine.run(plan.jobs))
        finally:
            if progress is not None:
                progress.stop()
    finally:
        journal.close()
    if engine.fatal is not None:
        raise CuratorError(f"the provider refused the requests ({engine.fatal.error_class}): "
                           f"{engine.fatal.message}. Stored samples are kept; fix the cause "
                           f"and re-run the same command to continue.")
    report = GenerateReport(plan, stats, time.monotonic() - t0, replayed, stats.stop_reason,
                            None if engine.grade_error is None else str(engine.grade_error),
                            elsewhere)
    if stats.stop_reason == "interrupted":
        raise GenerationInterrupted(report)
    return report


