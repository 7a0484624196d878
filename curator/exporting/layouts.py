"""Export layouts: the selected, split records rewritten as the columns a TRL trainer reads.

``curator export --layout default`` writes the export records themselves
(``schemas/export_record.schema.json``). The other layouts are built from exactly the
same records, after the same filters, duplicate removal, caps and problem-level split
(:mod:`curator.exporting.splits`), so a problem's rows are all in one split in every
layout:

* ``sft`` (``trl.SFTTrainer``): one row per positive, ``prompt`` / ``completion``;
* ``preference`` (``trl.DPOTrainer``): one row per (positive, negative) pair of the same
  problem, ``prompt`` / ``chosen`` / ``rejected``; all pairs, or at most N per problem;
* ``unpaired`` (``trl.KTOTrainer``): one row per rationale, ``prompt`` / ``completion`` /
  ``label`` (true for a positive).

Styles: ``standard`` writes the prompt as text (the plain template `distill` trains with,
:mod:`curator.student_prompts`) and completions as text; ``conversational`` writes the
prompt as chat messages (the bare question as the user turn, or a prompt template's
system and few-shot turns followed by it) and completions as one assistant message;
``messages`` (sft only) writes one ``messages`` column, the prompt turns followed by the
assistant's rationale. Every row also carries ``problem_id`` and the sample id(s) it came
from; TRL's trainers drop columns they do not use.

Pairs are formed without randomness beyond the seed: a problem's P positives are ranked
``i = 0..P-1`` and its Q negatives ``j = 0..Q-1`` by a seeded hash of the sample id, and
the pairs are taken in the order ``k = 0, 1, ...`` with ``i = k mod P`` and
``j = (k + k div lcm(P, Q)) mod Q``, which visits every pair once and in which every
prefix uses each positive, and each negative, equally often to within one. A cap of N
pairs per problem keeps the first N, so it spreads over as many different rationales as
it can.
"""

from __future__ import annotations

from dataclasses import dataclass

from curator.errors import CuratorError
from curator.student_prompts import DEFAULT_TEMPLATE, chat_prompt, check_template, render_prompt

LAYOUTS = ("default", "sft", "preference", "unpaired")
STYLES = ("standard", "conversational", "messages")
# The trainer each layout is meant for (recorded in the manifest).
TRAINERS = {"sft": "trl.SFTTrainer", "preference": "trl.DPOTrainer",
            "unpaired": "trl.KTOTrainer"}
# TRL's name for the dataset type of each (layout, style).
TRL_DATASET_TYPES = {
    ("sft", "standard"): "prompt-completion (standard)",
    ("sft", "conversational"): "prompt-completion (conversational)",
    ("sft", "messages"): "language modeling (conversational)",
    ("preference", "standard"): "preference (standard, explicit prompt)",
    ("preference", "conversational"): "preference (conversational, explicit prompt)",
    ("unpaired", "standard"): "unpaired preference (standard)",
    ("unpaired", "conversational"): "unpaired preference (conversational)",
}


@dataclass(frozen=True)
class LayoutOptions:
    layout: str = "default"
    style: str | None = None              # None: standard
    prompt_template: str | None = None    # plain text with {question}; standard style
    chat_prompt: str | None = None        # a prompt template name or file; chat styles
    pairs_per_problem: int | None = None  # preference: None = all pairs


def seeded_order(seed: int, column: str = "sample_id") -> str:
    """SQL for the seeded hash order of ``column`` (caps and pair ranks use it)."""
    return "md5('" + str(seed).replace("'", "''") + "' || ':' || " + column + ")"


def check(opts: LayoutOptions) -> None:
    """Refuse impossible combinations before any work, naming the option."""
    if opts.layout not in LAYOUTS:
        raise CuratorError(f"--layout {opts.layout!r}: choose one of {', '.join(LAYOUTS)}")
    if opts.layout == "default":
        given = [flag for flag, v in (("--style", opts.style),
                                      ("--prompt-template", opts.prompt_template),
                                      ("--chat-prompt", opts.chat_prompt),
                                      ("--pairs-per-problem", opts.pairs_per_problem))
                 if v is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise CuratorError(f"{', '.join(given)} {verb} only to --layout sft, preference or "
                               "unpaired; the default layout writes the export records as they "
                               "are")
        return
    style = opts.style or "standard"
    if style not in STYLES:
        raise CuratorError(f"--style {style!r}: choose one of {', '.join(STYLES)}")
    if style == "messages" and opts.layout != "sft":
        raise CuratorError(f"--style messages is for --layout sft only; use --style "
                           f"conversational for --layout {opts.layout}")
    if style == "standard":
        if opts.chat_prompt is not None:
            raise CuratorError("--chat-prompt gives chat turns: use it with --style "
                               "conversational (or messages); --style standard takes "
                               "--prompt-template")
        check_template(opts.prompt_template or DEFAULT_TEMPLATE)
    elif opts.prompt_template is not None:
        raise CuratorError(f"--prompt-template is a plain-text prompt for --style standard; "
                           f"with --style {style} the tokenizer's chat template renders the "
                           f"prompt (use --chat-prompt for system or few-shot turns)")
    if opts.pairs_per_problem is not None:
        if opts.layout != "preference":
            raise CuratorError("--pairs-per-problem only applies to --layout preference")
        if opts.pairs_per_problem < 1:
            raise CuratorError(f"--pairs-per-problem must be >= 1, got {opts.pairs_per_problem}")
    if opts.chat_prompt is not None:
        _chat_template(opts.chat_prompt)


def _chat_template(spec: str):
    from curator.teachers.prompts import load_template
    return load_template(spec)


def _prompt_table(con, source: str, opts: LayoutOptions):
    """One row per problem of ``source``: ``problem_id`` and its ``prompt`` (text, or a
    list of {role, content} messages), as an Arrow table; plus what the manifest records
    about the prompt."""
    import pyarrow as pa

    style = opts.style or "standard"
    rel = con.sql(f"SELECT DISTINCT problem_id, dataset, subject, level, question "
                  f"FROM {source} ORDER BY problem_id")
    cols = rel.columns
    problems = [dict(zip(cols, row)) for row in rel.fetchall()]
    if style == "standard":
        template = opts.prompt_template or DEFAULT_TEMPLATE
        prompts = [render_prompt(template, p["question"]) for p in problems]
        ptype = pa.string()
        info = {"kind": "text", "template": template}
    else:
        template = _chat_template(opts.chat_prompt) if opts.chat_prompt else None
        prompts = [chat_prompt(p, template) for p in problems]
        bad = [p["problem_id"] for p, msgs in zip(problems, prompts)
               if not msgs or msgs[-1]["role"] != "user"]
        if bad:
            raise CuratorError(f"--chat-prompt {opts.chat_prompt!r} does not end with a user "
                               f"turn for problem {bad[0]}")
        ptype = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
        info = {"kind": "messages",
                "template": None if template is None else {
                    "name": template.name, "prompt_id": template.prompt_id,
                    "messages": [{"role": r, "content": c} for r, c in template.messages]}}
    table = pa.table({"problem_id": pa.array([p["problem_id"] for p in problems], pa.string()),
                      "prompt": pa.array(prompts, ptype)})
    return table, info


def _completion(style: str, column: str) -> str:
    if style == "standard":
        return column
    return f"[{{'role': 'assistant', 'content': {column}}}]"


def build(con, source: str, opts: LayoutOptions, seed: int, rank_sql) -> dict:
    """Create the temp table ``export_layout`` (``export_split`` then the layout's
    columns, in file order) from ``source`` (the kept export records with their
    ``export_split``) and the temp view ``export_layout_sources`` (the records the rows
    were made from). ``rank_sql(column)`` is the seeded hash order used for the caps.
    Returns the layout's manifest section."""
    style = opts.style or "standard"
    prompts, prompt_info = _prompt_table(con, source, opts)
    con.register("export_layout_prompts", prompts)
    if opts.layout in ("sft", "unpaired"):
        where = "WHERE k.label = 'positive'" if opts.layout == "sft" else ""
        if style == "messages":
            cols = (f"list_concat(p.prompt, {_completion('conversational', 'k.rationale')}) "
                    f"AS messages")
        else:
            cols = f"p.prompt, {_completion(style, 'k.rationale')} AS completion"
        if opts.layout == "unpaired":
            cols += ", (k.label = 'positive') AS label"
        con.execute(f"""
            CREATE TEMP TABLE export_layout AS
            SELECT k.export_split, {cols}, k.problem_id, k.sample_id
            FROM {source} k JOIN export_layout_prompts p ON p.problem_id = k.problem_id
            {where}
            ORDER BY k.problem_id, k.sample_id""")
        con.execute(f"""CREATE TEMP VIEW export_layout_sources AS
                        SELECT * FROM {source} k {where}""")
    elif opts.layout == "preference":
        n = "p * q" if opts.pairs_per_problem is None else \
            f"least(p * q, {int(opts.pairs_per_problem)})"
        con.execute(f"""
            CREATE TEMP TABLE export_layout AS
            WITH ranked AS (
                SELECT export_split, problem_id, sample_id, rationale, label,
                       row_number() OVER (PARTITION BY problem_id, label
                                          ORDER BY {rank_sql('sample_id')}, sample_id) - 1 AS r
                FROM {source}),
            sizes AS (
                SELECT problem_id, count(*) FILTER (WHERE label = 'positive') AS p,
                       count(*) FILTER (WHERE label = 'negative') AS q
                FROM {source} GROUP BY problem_id),
            seq AS (
                SELECT problem_id, p, q, unnest(range({n})) AS k
                FROM sizes WHERE p > 0 AND q > 0),
            ij AS (
                SELECT problem_id, k % p AS i, (k + k // lcm(p, q)) % q AS j FROM seq),
            pairs AS (
                SELECT pos.export_split, ij.problem_id, pos.sample_id AS chosen_sample_id,
                       neg.sample_id AS rejected_sample_id, pos.rationale AS chosen_text,
                       neg.rationale AS rejected_text
                FROM ij
                JOIN ranked pos ON pos.problem_id = ij.problem_id AND pos.label = 'positive'
                                   AND pos.r = ij.i
                JOIN ranked neg ON neg.problem_id = ij.problem_id AND neg.label = 'negative'
                                   AND neg.r = ij.j)
            SELECT x.export_split, p.prompt, {_completion(style, 'x.chosen_text')} AS chosen,
                   {_completion(style, 'x.rejected_text')} AS rejected, x.problem_id,
                   x.chosen_sample_id, x.rejected_sample_id
            FROM pairs x JOIN export_layout_prompts p ON p.problem_id = x.problem_id
            ORDER BY x.problem_id, x.chosen_sample_id, x.rejected_sample_id""")
        con.execute(f"""CREATE TEMP VIEW export_layout_sources AS
                        SELECT * FROM {source} WHERE sample_id IN (
                            SELECT chosen_sample_id FROM export_layout
                            UNION SELECT rejected_sample_id FROM export_layout)""")
    else:
        raise CuratorError(f"internal: no layout {opts.layout!r}")
    if not con.execute("SELECT count(*) FROM export_layout").fetchall()[0][0]:
        why = {"sft": "the selection has no positive rationale",
               "preference": "no problem of the selection has both a positive and a negative "
                             "rationale",
               "unpaired": "the selection is empty"}[opts.layout]
        raise CuratorError(f"--layout {opts.layout} gives no rows: {why}. Nothing was written.")
    columns = [c for c in con.table("export_layout").columns if c != "export_split"]
    section = {
        "name": opts.layout,
        "style": style,
        "trainer": TRAINERS[opts.layout],
        "trl_dataset_type": TRL_DATASET_TYPES[(opts.layout, style)],
        "columns": columns,
        "prompt": prompt_info,
    }
    if opts.layout == "preference":
        cap = opts.pairs_per_problem
        section["pairing"] = {
            "pairs_per_problem": cap,
            "rule": ("a problem's P positives (i) and Q negatives (j) ranked by "
                     "md5(seed:sample_id); pair k = 0, 1, ... is (k mod P, (k + k div "
                     "lcm(P, Q)) mod Q); "
                     + ("all pairs" if cap is None else f"the first {cap} per problem")),
            "seed": seed,
        }
    return section


def unusable_problems(con, source: str, splits: list[str]) -> dict[str, dict[str, int]]:
    """Per split, the problems of ``source`` with no positive and with no negative."""
    rows = con.execute(f"""
        SELECT export_split, count(*) FILTER (WHERE npos = 0), count(*) FILTER (WHERE nneg = 0)
        FROM (SELECT export_split, problem_id,
                     count(*) FILTER (WHERE label = 'positive') AS npos,
                     count(*) FILTER (WHERE label = 'negative') AS nneg
              FROM {source} GROUP BY ALL)
        GROUP BY ALL""").fetchall()
    got = {s: {"no_positive": a, "no_negative": b} for s, a, b in rows}
    return {s: got.get(s, {"no_positive": 0, "no_negative": 0}) for s in splits}


def report_line(layout: str, unusable: dict[str, dict[str, int]]) -> str | None:
    """What the user is told about problems that give no rows in this layout."""
    no_pos = sum(v["no_positive"] for v in unusable.values())
    no_neg = sum(v["no_negative"] for v in unusable.values())
    if layout == "preference" and (no_pos or no_neg):
        return (f"{no_pos} problem(s) have no positive and {no_neg} no negative: they give no "
                f"preference pair (per split: layout.problems_without in manifest.json)")
    if layout == "sft" and no_pos:
        return f"{no_pos} problem(s) have no positive: they give no SFT row"
    return None


def layout_rows(records: list[dict], layout: str, seed: int = 0,
                pairs_per_problem: int | None = None) -> list[dict]:
    """The rows ``layout`` (``preference`` or ``unpaired``) makes of export ``records``
    (dicts with the fields of ``schemas/export_record.schema.json``), by the same SQL as
    ``curator export --layout``: ``problem_id`` and ``chosen_sample_id`` /
    ``rejected_sample_id`` (preference) or ``sample_id`` / ``label`` (unpaired), in file
    order. What ``distill train --method dpo|kto`` trains on: it renders the prompts and
    completions in its own prompt format."""
    import duckdb
    import pyarrow as pa

    if layout not in ("preference", "unpaired"):
        raise CuratorError(f"internal: layout_rows makes preference or unpaired rows, not "
                           f"{layout!r}")
    opts = LayoutOptions(layout=layout, pairs_per_problem=pairs_per_problem)
    check(opts)
    fields = ("problem_id", "dataset", "subject", "level", "question", "rationale", "label",
              "sample_id")
    table = pa.table({"export_split": pa.array(["train"] * len(records), pa.string()),
                      **{f: pa.array([None if r.get(f) is None else str(r[f]) for r in records],
                                     pa.string())
                         for f in fields}})
    con = duckdb.connect()
    try:
        con.register("layout_records", table)
        build(con, "layout_records", opts, seed, lambda col: seeded_order(seed, col))
        keep = (["problem_id", "chosen_sample_id", "rejected_sample_id"]
                if layout == "preference" else ["problem_id", "sample_id", "label"])
        rel = con.sql(f"SELECT {', '.join(keep)} FROM export_layout")
        return [dict(zip(keep, row)) for row in rel.fetchall()]
    finally:
        con.close()
