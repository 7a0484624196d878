"""CLI commands of the teachers package: `curator generate`, `curator batch
status|collect|cancel` and `curator serve` (the local teacher server). Each parses
options and calls one library function; heavy imports happen inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from curator.cli_common import (DbOption, TableFormatOption, console, emit_json, err_console,
                                note, open_warehouse, wrote_to)
from curator.output import Format, render, plain

batch_app = typer.Typer(help="Follow up batches submitted with `curator generate --batch`.",
                        no_args_is_help=True)


def _wh(db):
    return open_warehouse(db)


def _console():
    return console


def generate(
    provider: Annotated[str, typer.Option(help="openai | anthropic | openai-compatible")],
    model: Annotated[str, typer.Option(help="Teacher model name, as the provider spells it.")],
    samples: Annotated[int, typer.Option("--samples", "-k", help="Rationales per problem (K).")],
    base_url: Annotated[Optional[list[str]], typer.Option(
        "--base-url", help="Endpoint base URL; repeat it to spread requests over a fleet "
                           "(an endpoint that keeps failing is skipped for a while).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Only problems of this dataset.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Only problems of this split.")] = None,
    where: Annotated[Optional[str], typer.Option(help="SQL condition on the problems table, e.g. \"level >= 4\".")] = None,
    limit: Annotated[Optional[int], typer.Option(help="At most this many problems (in load order).")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="Template: math-cot | math-zeroshot | word-cot | word-zeroshot, or a file (.json messages, or text with {question}). Default: the few-shot template of each problem's dataset family.")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="Sampling temperature.")] = 0.7,
    top_p: Annotated[Optional[float], typer.Option(help="Nucleus sampling.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per rationale.")] = 1024,
    seed: Annotated[Optional[int], typer.Option(help="Sampling seed, for providers that take one.")] = None,
    n_per_request: Annotated[Optional[int], typer.Option(help="Most samples per request (the `n` parameter; default: all K where the provider supports it).")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at most.")] = 64,
    rpm: Annotated[Optional[float], typer.Option(help="Requests per minute (default: learned from rate-limit headers).")] = None,
    tpm: Annotated[Optional[float], typer.Option(help="Input+output tokens per minute.")] = None,
    input_tpm: Annotated[Optional[float], typer.Option(help="Input tokens per minute.")] = None,
    output_tpm: Annotated[Optional[float], typer.Option(help="Output tokens per minute.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request before it is abandoned and retried.")] = 120.0,
    max_attempts: Annotated[int, typer.Option(help="Tries per sample in this run; a sample that still fails is stored with its error and retried by the next run.")] = 6,
    truncated: Annotated[str, typer.Option(help="Rationales cut at --max-tokens: keep (stored, flagged by finish_reason 'length') or retry (kept as a paid attempt and asked again).")] = "keep",
    max_cost: Annotated[Optional[float], typer.Option(help="Stop sending requests once this invocation's spend (USD) would pass this.")] = None,
    prices: Annotated[Optional[Path], typer.Option(help="Price table overriding the built-in one (JSON: {\"models\": {name: {\"input\": USD/1M, \"output\": USD/1M}}}).")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the API key (default: OPENAI_API_KEY / ANTHROPIC_API_KEY / CURATOR_API_KEY).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the requests, estimated tokens and cost, and exit.")] = False,
    batch: Annotated[bool, typer.Option("--batch", help="Submit through the provider's batch API (half price, results within 24 h); follow up with `curator batch`.")] = False,
    batch_max_requests: Annotated[Optional[int], typer.Option(help="Split batches at this many requests (default: the provider's limit).")] = None,
    grade: Annotated[bool, typer.Option("--grade", help="Grade rationales as they arrive.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live display: a progress line every 30 s, for logs.")] = False,
    fmt: TableFormatOption = Format.table,
    db: DbOption = None,
) -> None:
    """Sample K chain-of-thought rationales per problem from a teacher and store every
    one. Re-running the same command asks only for the samples still missing."""
    from curator.teachers.generate import (GenerateSpec, GenerationInterrupted,
                                           generate as run_generate, plan_generation)
    from curator.teachers.limits import LimitSpec
    from curator.teachers.progress import Progress
    from curator.teachers.store import Selection

    console = _console()
    spec = GenerateSpec(
        provider=provider, model=model, samples=samples, base_urls=list(base_url or []),
        selection=Selection(dataset=dataset, split=split, where=where, limit=limit),
        prompt=prompt, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
        n_per_request=n_per_request, concurrency=concurrency,
        limits=LimitSpec(rpm=rpm, tpm=tpm, input_tpm=input_tpm, output_tpm=output_tpm),
        timeout=timeout, max_attempts=max_attempts, truncated=truncated, max_cost=max_cost,
        prices=str(prices) if prices else None, api_key_env=api_key_env, grade=grade,
        batch=batch)
    wh = _wh(db)
    if dry_run:
        plan = run_generate(wh, spec, dry_run=True)
        render(plan.summaries[0].HEADERS, [s.row() for s in plan.summaries], fmt, console,
               title="dry run: nothing sent" + (" (batch prices)" if batch else ""))
        return
    if batch:
        from curator.teachers.batch import submit
        plan = plan_generation(wh, spec)
        subs = submit(wh, spec, plan, max_requests=batch_max_requests)
        render(["batch_id", "run_id", "requests", "samples", "status"],
               [[b.batch_id, b.run_id, b.requests, b.samples, b.status] for b in subs],
               fmt, console, title="batches submitted")
        if subs:
            note("follow up with `curator batch status` and `curator batch collect`")
        else:
            note("nothing to submit: every sample is stored or waiting in a batch")
        wrote_to(wh)
        return
    try:
        rep = run_generate(wh, spec, progress=Progress(quiet=quiet, console=err_console))
    except GenerationInterrupted as stop:
        st = stop.report.stats
        note(f"interrupted: {st.done:,} of {st.total:,} samples stored (every answer received "
             f"was kept); re-run the same command to continue")
        wrote_to(wh)
        raise typer.Exit(130) from None
    st = rep.stats
    rows = [[r.run_id, r.model, r.prompt, r.problems, r.missing] for r in rep.plan.summaries]
    columns = ["run_id", "model", "prompt", "problems", "requested samples"]
    missing = st.total - st.done
    if fmt is Format.json:
        emit_json({"warehouse": str(wh.path.resolve()),
                   "runs": [dict(zip(columns, r)) for r in rows],
                   "stored": st.done, "requested": st.total, "truncated": st.truncated,
                   "failed": st.failed, "missing": missing, "not_requested": rep.not_requested,
                   "requests": st.requests, "prompt_tokens": st.prompt_tokens,
                   "completion_tokens": st.completion_tokens,
                   "cost_usd": st.spend if st.priced else None,
                   "seconds": round(rep.elapsed_s, 3), "replayed": rep.replayed,
                   "stop_reason": rep.stop_reason, "grade_error": rep.grade_error,
                   "uncommitted": st.uncommitted,
                   "claimed_elsewhere": rep.claimed_elsewhere.samples,
                   "retried_errors": plain(dict(st.failures))})
    else:
        render(columns, rows, fmt, console, title="curator generate")
    spend = f"${st.spend:,.4f}" if st.priced else "unpriced model"
    note(f"stored {st.done:,} of {st.total:,} samples ({st.truncated:,} truncated, "
         f"{st.failed:,} failed and stored with their error) in {rep.elapsed_s:.1f}s; "
         f"{st.requests:,} requests, {st.prompt_tokens:,} input and "
         f"{st.completion_tokens:,} output tokens, {spend}; failed attempts: "
         f"{st.failed_attempts()}")
    if rep.replayed:
        note(f"first stored {rep.replayed:,} journal records left by an interrupted run")
    if rep.claimed_elsewhere.samples:
        pids = ", ".join(map(str, rep.claimed_elsewhere.pids))
        note(f"{rep.claimed_elsewhere.samples:,} missing samples were left to another "
             f"`curator generate` on this warehouse (pid {pids}), which is requesting them "
             f"now; re-run after it ends to retry any it could not get")
    if st.uncommitted:
        note(f"{st.uncommitted:,} journal records (answers received and paid for) are not in "
             f"the warehouse yet: it stayed locked by another process. They are safe in "
             f"{wh.path}.journal and the next `curator generate` stores them first"
             + (" (then `curator grade` grades them)" if grade else ""))
    if rep.grade_error:
        note(f"grading incomplete: {rep.grade_error}", style="yellow")
    wrote_to(wh)
    if rep.stop_reason == "max_cost":
        spent = f"${st.spend:,.4f}" if st.priced else "an unpriced amount"
        note(f"stopped by --max-cost ${max_cost}: {spent} spent, and the next request would "
             f"have passed the budget, so {rep.not_requested:,} sample(s) were not requested. "
             "Re-run with a higher --max-cost to continue.", style="yellow")
    elif rep.stop_reason and rep.stop_reason != "interrupted":
        note(f"stopped: {rep.stop_reason}", style="yellow")
    if st.failed:
        err_console.print(f"{st.failed:,} of {st.total:,} samples still missing (failed and "
                          f"stored with their error); re-run the same command to retry them",
                          highlight=False)
    if st.failed or st.uncommitted or rep.grade_error:
        raise typer.Exit(1)
    if rep.stop_reason and rep.stop_reason != "interrupted" and missing > 0:
        raise typer.Exit(1)


@batch_app.command("status")
def batch_status(
    batch_id: Annotated[Optional[list[str]], typer.Argument(help="Batch ids (default: every batch not yet collected).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include collected batches.")] = False,
    fmt: TableFormatOption = Format.table,
    db: DbOption = None,
) -> None:
    """Ask the providers how their batches are doing and record it."""
    from curator.teachers.batch import status
    rows = status(_wh(db), batch_ids=batch_id or None, include_collected=all_)
    render(["batch_id", "provider", "run_id", "requests", "status", "done", "failed",
            "collected"], [r.row() for r in rows], fmt, _console(), title="batches")


@batch_app.command("collect")
def batch_collect(
    batch_id: Annotated[Optional[list[str]], typer.Argument(help="Batch ids (default: every batch not yet collected).")] = None,
    resubmit: Annotated[bool, typer.Option(help="Resubmit failed and expired items as a new batch.")] = True,
    wait: Annotated[bool, typer.Option("--wait", help="Poll until the batches have ended.")] = False,
    poll_interval: Annotated[float, typer.Option(help="Seconds between polls with --wait.")] = 30.0,
    fmt: TableFormatOption = Format.table,
    db: DbOption = None,
) -> None:
    """Store the results of ended batches (idempotent) and resubmit only the failed or
    expired items."""
    from curator.teachers.batch import collect
    wh = _wh(db)
    rep = collect(wh, batch_ids=batch_id or None, resubmit=resubmit, wait=wait,
                  poll_interval=poll_interval)
    render(["batch_id", "status", "stored samples", "failed items", "resubmitted as"],
           [r.row() for r in rep], fmt, _console(), title="batch collect")
    wrote_to(wh)


@batch_app.command("cancel")
def batch_cancel(
    batch_id: Annotated[Optional[list[str]], typer.Argument(help="Batch ids (default: every batch not yet collected).")] = None,
    fmt: TableFormatOption = Format.table,
    db: DbOption = None,
) -> None:
    """Cancel batches. Results they already have are still collected."""
    from curator.teachers.batch import cancel
    wh = _wh(db)
    rows = cancel(wh, batch_ids=batch_id or None)
    render(["batch_id", "status"], rows, fmt, _console(), title="batch cancel")
    wrote_to(wh)


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8765,
    port_file: Annotated[Optional[Path], typer.Option(help="Write the base URL here once listening.")] = None,
    replay: Annotated[Optional[list[Path]], typer.Option(help="TDG-format JSONL(.gz) of recorded rationales to replay by question (repeatable).")] = None,
    script: Annotated[Optional[list[str]], typer.Option(help="Text to answer when no recorded rationale matches (repeatable: used in turn).")] = None,
    pad_tokens: Annotated[int, typer.Option(help="Pad scripted answers to about this many tokens.")] = 0,
    latency_ms: Annotated[float, typer.Option(help="Fixed latency of every answer.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Extra uniform random latency up to this.")] = 0.0,
    fault: Annotated[Optional[list[str]], typer.Option(help="NAME=RATE, e.g. 429=0.2, 500=0.05, 503=0.05, hang=0.01, drop=0.01, malformed=0.01, length=0.05, content_filter=0.01, trickle=0.01 (repeatable).")] = None,
    retry_after: Annotated[float, typer.Option(help="Retry-After seconds sent with injected 429s.")] = 1.0,
    hang_s: Annotated[float, typer.Option(help="How long a 'hang' fault waits before answering.")] = 30.0,
    trickle_s: Annotated[float, typer.Option(help="Seconds between the bytes of a 'trickle' fault's answer.")] = 1.0,
    rpm: Annotated[Optional[int], typer.Option(help="Enforce this many requests per minute (429 beyond).")] = None,
    input_tpm: Annotated[Optional[int], typer.Option(help="Enforce input tokens per minute.")] = None,
    output_tpm: Annotated[Optional[int], typer.Option(help="Enforce output tokens (max_tokens x n) per minute.")] = None,
    rate_window: Annotated[float, typer.Option(help="Seconds of the sliding window the limits are enforced over (limits scale with it).")] = 60.0,
    n_max: Annotated[int, typer.Option(help="Most choices per request (1 emulates a server without `n`).")] = 128,
    batch_delay: Annotated[float, typer.Option(help="Seconds a batch takes to end.")] = 0.5,
    batch_error_rate: Annotated[float, typer.Option(help="Probability that a batch item fails.")] = 0.0,
    teacher: Annotated[Optional[str], typer.Option(help="A programmatic teacher instead of --replay: 'synthetic' answers `curator load synthetic` problems with column rationales, wrong ones drawn by its error model (docs/synthetic.md).")] = None,
    error_rate: Annotated[float, typer.Option(help="--teacher synthetic: share of wrong rationales over problems with uniform levels (harder levels fail more often).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the fault draws and of the synthetic teacher's errors.")] = 0,
    log: Annotated[Optional[Path], typer.Option(help="Append a JSONL line per request here (never headers or keys).")] = None,
) -> None:
    """Run the local teacher server (OpenAI chat completions, files and batches;
    Anthropic messages and message batches) until Ctrl-C."""
    from curator.paths import PORT_FILE, SERVER_LOG, guard_output
    from curator.server import ServerConfig, serve as run_server
    from curator.server.config import parse_fault_rates

    if log is not None:
        guard_output(log, SERVER_LOG, option="--log")
    if port_file is not None:
        guard_output(port_file, PORT_FILE, option="--port-file")

    rates = parse_fault_rates(fault or [])
    cfg = ServerConfig(latency_ms=latency_ms, latency_jitter_ms=jitter_ms, fault_rates=rates,
                       retry_after_s=retry_after, hang_s=hang_s, trickle_s=trickle_s, rpm=rpm, input_tpm=input_tpm,
                       output_tpm=output_tpm, rate_window_s=rate_window,
                       replay=[str(p) for p in replay or []], script=list(script or []),
                       pad_tokens=pad_tokens, n_max=n_max, batch_delay_s=batch_delay,
                       batch_item_error_rate=batch_error_rate, seed=seed,
                       teacher=teacher, error_rate=error_rate,
                       log_path=str(log) if log else None)
    run_server(cfg, host=host, port=port, port_file=str(port_file) if port_file else None,
               announce=lambda msg: console.print(msg, highlight=False))


def register(app: typer.Typer) -> None:
    app.command()(generate)
    app.add_typer(batch_app, name="batch")
    app.command()(serve)
