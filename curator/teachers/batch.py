"""Generation through the providers' batch APIs (OpenAI Batch API with files; Anthropic
Message Batches): submit, follow up, collect, cancel.

Every batch and every request in it is recorded (``batches``, ``batch_items``) so the
samples it asks for are never requested again while it runs. Submission writes an
*intent* row before calling the provider and replaces it with the provider's id after;
a submission interrupted in between is found again by its metadata (OpenAI) or by its
size and time (Anthropic) instead of being paid twice.

Collecting is idempotent: results stay at the provider, storing them again changes
nothing, and only items that failed or expired, and whose samples are still missing and
not waiting in another batch, are resubmitted.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from curator.errors import CuratorError
from curator.ids import sample_id, stable_id
from curator.teachers.generate import GenerateSpec, Plan, record_runs
from curator.teachers.pricing import PriceTable, split_tokens
from curator.teachers.providers import Redactor, api_key, make_adapter, safe_url, url_secrets
from curator.teachers.store import write_records
from curator.warehouse import Warehouse, scalar

OPENAI_ENDED = {"completed", "expired", "cancelled", "failed"}
ENDPOINT = "/v1/chat/completions"


@dataclass
class Submitted:
    batch_id: str
    run_id: str
    requests: int
    samples: int
    status: str


@dataclass
class _Item:
    custom_id: str
    run_id: str
    problem_id: str
    indexes: list[int]
    body: dict


def _custom_id(run_id: str, problem_id: str, indexes: list[int]) -> str:
    # Anthropic allows 64 characters of [A-Za-z0-9_-]; a hash fits and is stable.
    return stable_id("c", run_id, problem_id, ",".join(map(str, indexes)))


def _client(provider: str, base_url: str | None, key_env: str | None):
    adapter = make_adapter(provider)
    key = api_key(provider, key_env)
    return adapter, adapter.make_client(base_url, key, 300.0, 16), Redactor(key)


def _chunks(items: list[_Item], max_requests: int, max_bytes: int, line) -> list[list[_Item]]:
    out, cur, size = [], [], 0
    for it in items:
        n = len(line(it)) + 1
        if cur and (len(cur) >= max_requests or size + n > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(it)
        size += n
    if cur:
        out.append(cur)
    return out


def _openai_line(it: _Item) -> bytes:
    return json.dumps({"custom_id": it.custom_id, "method": "POST", "url": ENDPOINT,
                       "body": it.body}, ensure_ascii=False).encode()


def _anthropic_line(it: _Item) -> bytes:
    return json.dumps({"custom_id": it.custom_id, "params": it.body}, ensure_ascii=False).encode()


# -- submit --------------------------------------------------------------------------

def submit(wh: Warehouse, spec: GenerateSpec, plan: Plan, *, max_requests: int | None = None,
           resubmission_of: str | None = None) -> list[Submitted]:
    """Submit the plan's requests as batches (split to the provider's limits)."""
    from curator.teachers.journal import replay
    replay(wh)
    if not plan.jobs:
        return []
    base_url = spec.base_urls[0] if spec.base_urls else None
    if len(spec.base_urls) > 1:
        raise CuratorError("--batch sends to one endpoint: give a single --base-url")
    if base_url is not None and url_secrets(base_url):
        # A batch's URL is stored to collect it later: it must hold no secret.
        raise CuratorError(f"--base-url {safe_url(base_url)!r}: --batch stores the endpoint "
                           f"to collect its results later, so it cannot carry credentials "
                           f"({', '.join(url_secrets(base_url))}); put the key in the "
                           "environment (--api-key-env) instead")
    adapter = make_adapter(spec.provider)
    items = [_Item(_custom_id(j.run.run_id, j.problem_id, j.indexes), j.run.run_id,
                   j.problem_id, list(j.indexes),
                   adapter.body(spec.model, j.run.params, j.messages, len(j.indexes)))
             for j in plan.jobs]
    record_runs(wh, plan)
    return asyncio.run(_submit_items(wh, spec.provider, base_url, spec.api_key_env, items,
                                     max_requests, resubmission_of, spec.prices))


async def _submit_items(wh, provider, base_url, key_env, items, max_requests,
                        resubmission_of, prices) -> list[Submitted]:
    adapter, client, redact = _client(provider, base_url, key_env)
    line = _openai_line if provider != "anthropic" else _anthropic_line
    limit = min(max_requests or adapter.batch_max_requests, adapter.batch_max_requests)
    out = []
    try:
        for chunk in _chunks(items, limit, adapter.batch_max_bytes, line):
            by_run: dict[str, int] = {}
            for it in chunk:
                by_run[it.run_id] = by_run.get(it.run_id, 0) + 1
            run_id = max(by_run, key=by_run.get)
            intent = stable_id("pending", time.time(), chunk[0].custom_id, len(chunk))
            _record_batch(wh, intent, run_id, provider, base_url, "submitting", chunk,
                          resubmission_of, {"api_key_env": key_env, "intent": intent,
                                             "prices": prices})
            try:
                if provider == "anthropic":
                    b = await client.messages.batches.create(
                        requests=[json.loads(line(it)) for it in chunk])
                    bid, status, input_file = b.id, b.processing_status, None
                else:
                    data = b"\n".join(line(it) for it in chunk) + b"\n"
                    f = await client.files.create(file=("curator-batch.jsonl", data),
                                                  purpose="batch")
                    b = await client.batches.create(
                        input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h",
                        metadata={"curator_intent": intent, "curator_run": run_id})
                    bid, status, input_file = b.id, b.status, f.id
            except Exception as exc:
                # Nothing was created (or we cannot know): keep the intent so that
                # `batch status` can look for it before anything is sent again.
                raise CuratorError(f"submitting a batch to {base_url or provider} failed: "
                                   f"{redact(str(exc))}. Run `curator batch status` to "
                                   f"reconcile before submitting again.") from exc
            with wh.write() as con:
                con.execute("UPDATE batches SET batch_id = ?, status = ?, input_file_id = ?, "
                            "checked_at = current_timestamp WHERE batch_id = ?",
                            [bid, status, input_file, intent])
                con.execute("UPDATE batch_items SET batch_id = ? WHERE batch_id = ?", [bid, intent])
            out.append(Submitted(bid, run_id, len(chunk), sum(len(i.indexes) for i in chunk), status))
    finally:
        await client.close()
    return out


def _record_batch(wh, batch_id, run_id, provider, base_url, status, chunk, resubmission_of,
                  metadata) -> None:
    with wh.write() as con:
        con.execute("INSERT INTO batches (batch_id, run_id, provider, base_url, status, "
                    "request_count, resubmission_of, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [batch_id, run_id, provider, base_url, status, len(chunk), resubmission_of,
                     json.dumps(metadata)])
        con.executemany("INSERT INTO batch_items (batch_id, custom_id, run_id, problem_id, "
                        "sample_indexes, status) VALUES (?, ?, ?, ?, ?, 'submitted')",
                        [[batch_id, it.custom_id, it.run_id, it.problem_id, it.indexes]
                         for it in chunk])


# -- status ----------------------------------------------------------------------------

@dataclass
class BatchRow:
    batch_id: str
    provider: str
    run_id: str
    requests: int
    status: str
    done: int | None
    failed: int | None
    collected: bool

    def row(self) -> list:
        return [self.batch_id, self.provider, self.run_id, self.requests, self.status,
                self.done, self.failed, "yes" if self.collected else "no"]


def _batches(wh: Warehouse, batch_ids: list[str] | None, include_collected: bool) -> list[dict]:
    sql = ("SELECT batch_id, run_id, provider, base_url, status, request_count, collected_at, "
           "metadata, resubmission_of, epoch(submitted_at) FROM batches")
    clauses, params = [], []
    if batch_ids:
        clauses.append("list_contains(?, batch_id)")
        params.append(batch_ids)
    if not include_collected:
        clauses.append("collected_at IS NULL")
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY submitted_at"
    with wh.read() as con:
        rows = con.execute(sql, params).fetchall()
    cols = ["batch_id", "run_id", "provider", "base_url", "status", "request_count",
            "collected_at", "metadata", "resubmission_of", "submitted_epoch"]
    out = [dict(zip(cols, r)) for r in rows]
    for r in out:
        r["metadata"] = json.loads(r["metadata"]) if r["metadata"] else {}
    if batch_ids:
        missing = set(batch_ids) - {r["batch_id"] for r in out}
        if missing:
            raise CuratorError(f"no such batch in the warehouse: {', '.join(sorted(missing))}")
    return out


async def _reconcile(wh: Warehouse, b: dict, client) -> str | None:
    """Find the provider's batch for an intent row left by an interrupted submission.
    Returns its id, or None after removing the intent (nothing was created)."""
    intent = b["batch_id"]
    found = None
    if b["provider"] == "anthropic":
        cands = []
        async for mb in client.messages.batches.list(limit=100):
            total = sum(getattr(mb.request_counts, k) for k in
                        ("processing", "succeeded", "errored", "canceled", "expired"))
            if total == b["request_count"] and mb.created_at.timestamp() >= b["submitted_epoch"] - 5:
                cands.append(mb)
        if len(cands) == 1:
            found = (cands[0].id, cands[0].processing_status)
    else:
        async for ob in client.batches.list(limit=100):
            if (ob.metadata or {}).get("curator_intent") == intent:
                found = (ob.id, ob.status)
                break
    with wh.write() as con:
        if found is None:
            con.execute("DELETE FROM batch_items WHERE batch_id = ?", [intent])
            con.execute("DELETE FROM batches WHERE batch_id = ?", [intent])
            return None
        con.execute("UPDATE batches SET batch_id = ?, status = ? WHERE batch_id = ?",
                    [found[0], found[1], intent])
        con.execute("UPDATE batch_items SET batch_id = ? WHERE batch_id = ?", [found[0], intent])
    return found[0]


def _batch_client(b: dict):
    """(adapter, client, redact) for a stored batch row's provider and endpoint."""
    return _client(b["provider"], b["base_url"], b["metadata"].get("api_key_env"))


async def _submitted(wh: Warehouse, b: dict, client) -> bool:
    """Settle a row left 'submitting' by an interrupted submission: True when the provider
    has the batch (``b["batch_id"]`` is then its id), False when the intent was removed."""
    if b["status"] == "submitting":
        bid = await _reconcile(wh, b, client)
        if bid is None:
            return False
        b["batch_id"] = bid
    return True


async def _retrieve(b: dict, client) -> tuple[str, bool, int | None, int | None, object]:
    """(status, ended, done, failed, provider object)."""
    if b["provider"] == "anthropic":
        mb = await client.messages.batches.retrieve(b["batch_id"])
        rc = mb.request_counts
        return (mb.processing_status, mb.processing_status == "ended", rc.succeeded,
                rc.errored + rc.expired + rc.canceled, mb)
    ob = await client.batches.retrieve(b["batch_id"])
    rc = ob.request_counts
    return (ob.status, ob.status in OPENAI_ENDED, rc.completed if rc else None,
            rc.failed if rc else None, ob)


def status(wh: Warehouse, batch_ids: list[str] | None = None,
           include_collected: bool = False) -> list[BatchRow]:
    return asyncio.run(_status(wh, batch_ids, include_collected))


async def _status(wh, batch_ids, include_collected) -> list[BatchRow]:
    out = []
    for b in _batches(wh, batch_ids, include_collected):
        if b["collected_at"] is not None:
            out.append(BatchRow(b["batch_id"], b["provider"], b["run_id"], b["request_count"],
                                b["status"], None, None, True))
            continue
        _, client, _ = _batch_client(b)
        try:
            if not await _submitted(wh, b, client):
                continue
            st, _, done, failed, _ = await _retrieve(b, client)
        finally:
            await client.close()
        with wh.write() as con:
            con.execute("UPDATE batches SET status = ?, checked_at = current_timestamp "
                        "WHERE batch_id = ?", [st, b["batch_id"]])
        out.append(BatchRow(b["batch_id"], b["provider"], b["run_id"], b["request_count"], st,
                            done, failed, False))
    return out


# -- collect ---------------------------------------------------------------------------

@dataclass
class CollectRow:
    batch_id: str
    status: str
    stored: int
    failed_items: int
    resubmitted_as: list[str]

    def row(self) -> list:
        return [self.batch_id, self.status, self.stored, self.failed_items,
                ", ".join(self.resubmitted_as) or "-"]


def collect(wh: Warehouse, batch_ids: list[str] | None = None, *, resubmit: bool = True,
            wait: bool = False, poll_interval: float = 30.0,
            max_requests: int | None = None) -> list[CollectRow]:
    from curator.teachers.journal import replay
    replay(wh)
    return asyncio.run(_collect(wh, batch_ids, resubmit, wait, poll_interval, max_requests))


async def _read_results(b: dict, client, obj) -> list[tuple[str, dict | None, str | None, str]]:
    """(custom_id, payload or None, error or None, item status) for each result line."""
    out = []
    if b["provider"] == "anthropic":
        if obj.processing_status != "ended":
            return out
        async for r in await client.messages.batches.results(b["batch_id"]):
            res = r.result
            if res.type == "succeeded":
                out.append((r.custom_id, res.message.model_dump(), None, "succeeded"))
            elif res.type == "errored":
                err = getattr(res.error, "error", None)
                msg = getattr(err, "message", None) or str(res.error)
                out.append((r.custom_id, None, f"{getattr(err, 'type', 'error')}: {msg}", "errored"))
            else:
                out.append((r.custom_id, None, res.type, res.type))   # expired | canceled
        return out
    for fid, is_err in ((obj.output_file_id, False), (obj.error_file_id, True)):
        if not fid:
            continue
        content = await client.files.content(fid)
        for raw in content.text.splitlines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            cid = line.get("custom_id")
            resp = line.get("response") or {}
            err = line.get("error")
            if not is_err and resp.get("status_code") == 200 and not err:
                body = resp.get("body") or {}
                body.setdefault("id", resp.get("request_id"))
                out.append((cid, body, None, "succeeded"))
            else:
                if err:
                    code = err.get("code") or "error"
                    msg = f"{code}: {err.get('message')}"
                    item_status = "expired" if code == "batch_expired" else "errored"
                else:
                    e = ((resp.get("body") or {}).get("error") or {})
                    msg = f"HTTP {resp.get('status_code')}: {e.get('message')}"
                    item_status = "errored"
                out.append((cid, None, msg, item_status))
    return out


def _sample_rows(b: dict, items: dict, results, adapter, price, redact) -> tuple[list, dict]:
    """Sample records for succeeded items, and status/error per custom_id."""
    records, item_status = [], {}
    for cid, payload, err, st in results:
        it = items.get(cid)
        if it is None:
            continue                      # not ours (or an older submission's)
        item_status[cid] = (st, redact(err))
        if payload is None:
            continue
        try:
            reply = adapter.parse_payload(payload, payload.get("id"))
        except (ValueError, TypeError, KeyError) as exc:
            item_status[cid] = ("errored", f"bad_response: {exc}")
            continue
        idxs = it["sample_indexes"]
        choices = reply.choices[: len(idxs)]
        k = len(choices)
        usage = reply.prompt_tokens is not None and reply.completion_tokens is not None
        pts = split_tokens(int(reply.prompt_tokens or 0), [1] * k) if usage else [None] * k
        cts = (split_tokens(int(reply.completion_tokens or 0), [len(t or "") for t, _ in choices])
               if usage else [None] * k)
        for c, ((text, finish), idx) in enumerate(zip(choices, idxs)):
            meta = {"batch_id": b["batch_id"], "custom_id": cid, "n": len(idxs), "choice": c,
                    "request_prompt_tokens": reply.prompt_tokens,
                    "request_completion_tokens": reply.completion_tokens}
            if finish == "length":
                meta["truncated"] = True
            row = {"table": "samples", "sample_id": sample_id(it["run_id"], it["problem_id"], idx),
                   "run_id": it["run_id"], "problem_id": it["problem_id"], "sample_index": idx,
                   "completion": text, "finish_reason": finish, "prompt_tokens": pts[c],
                   "completion_tokens": cts[c],
                   "cost_usd": None if price is None or not usage else price.cost(pts[c], cts[c], batch=True),
                   "request_id": reply.request_id, "metadata": json.dumps(meta)}
            if finish == "content_filter" or text is None:
                row.update(completion=None, error_class="content_filter" if finish ==
                           "content_filter" else "bad_response",
                           error="the provider withheld the completion")
            records.append(row)
        if k < len(idxs):
            item_status[cid] = ("errored", f"only {k} of {len(idxs)} choices returned")
    return records, item_status


async def _collect(wh, batch_ids, resubmit, wait, poll_interval, max_requests) -> list[CollectRow]:
    out: list[CollectRow] = []
    chosen = _batches(wh, batch_ids, include_collected=bool(batch_ids))
    pending = [b for b in chosen if b["collected_at"] is None]
    out += [CollectRow(b["batch_id"], "already collected", 0, 0, [])
            for b in chosen if b["collected_at"] is not None]
    while pending:
        still = []
        for b in pending:
            row = await _collect_one(wh, b, resubmit, max_requests)
            if row is None:
                still.append(b)
            else:
                out.append(row)
        if not wait or not still:
            for b in still:
                out.append(CollectRow(b["batch_id"], b["status"] + " (not ended)", 0, 0, []))
            break
        pending = still
        await asyncio.sleep(poll_interval)
    return out


async def _collect_one(wh, b, resubmit, max_requests) -> CollectRow | None:
    adapter, client, redact = _batch_client(b)
    try:
        if not await _submitted(wh, b, client):
            return CollectRow(b["batch_id"], "never submitted (removed)", 0, 0, [])
        st, ended, _, _, obj = await _retrieve(b, client)
        b["status"] = st
        if not ended:
            with wh.write() as con:
                con.execute("UPDATE batches SET status = ?, checked_at = current_timestamp "
                            "WHERE batch_id = ?", [st, b["batch_id"]])
            return None
        results = await _read_results(b, client, obj)
    finally:
        await client.close()
    with wh.read() as con:
        rows = con.execute("SELECT custom_id, run_id, problem_id, sample_indexes FROM batch_items "
                           "WHERE batch_id = ?", [b["batch_id"]]).fetchall()
        model = scalar(con, "SELECT model FROM runs WHERE run_id = ?", [b["run_id"]])
    items = {r[0]: {"run_id": r[1], "problem_id": r[2], "sample_indexes": list(r[3])} for r in rows}
    price = PriceTable(b["metadata"].get("prices")).lookup(model or "")
    records, item_status = _sample_rows(b, items, results, adapter, price, redact)
    for cid in items:
        if cid not in item_status:
            # No line for it: the batch was cancelled or failed before reaching it.
            item_status[cid] = ("canceled" if st in ("cancelled", "canceling") else "errored",
                                f"no result (batch {st})")
    errors = getattr(obj, "errors", None)
    with wh.write() as con:
        write_records(con, records)
        con.executemany("UPDATE batch_items SET status = ?, error = ? WHERE batch_id = ? AND custom_id = ?",
                        [[s, e, b["batch_id"], cid] for cid, (s, e) in item_status.items()])
        con.execute("UPDATE batches SET status = ?, checked_at = current_timestamp, "
                    "output_file_id = ?, error_file_id = ? WHERE batch_id = ?",
                    [st, getattr(obj, "output_file_id", None), getattr(obj, "error_file_id", None),
                     b["batch_id"]])
    failed = [cid for cid, (s, _) in item_status.items() if s in ("errored", "expired")]
    resubmitted: list[str] = []
    if resubmit and failed:
        resubmitted = await _resubmit(wh, b, items, failed, adapter, max_requests)
    with wh.write() as con:
        con.execute("UPDATE batches SET collected_at = current_timestamp, metadata = ? "
                    "WHERE batch_id = ?",
                    [json.dumps({**b["metadata"], "batch_errors": str(errors) if errors else None}),
                     b["batch_id"]])
    return CollectRow(b["batch_id"], st, len([r for r in records if r.get("completion") is not None]),
                      len(failed), resubmitted)


async def _resubmit(wh, b, items, failed, adapter, max_requests) -> list[str]:
    """A new batch for the failed items' samples that are still missing and not waiting
    in another batch."""
    with wh.read() as con:
        run = con.execute("SELECT model, params, prompt_id FROM runs WHERE run_id = ?",
                          [b["run_id"]]).fetchone()
        template = scalar(con, "SELECT template FROM prompts WHERE prompt_id = ?", [run[2]])
        todo = []
        for cid in failed:
            it = items[cid]
            have = {r[0] for r in con.execute(
                "SELECT sample_index FROM samples WHERE run_id = ? AND problem_id = ? "
                "AND completion IS NOT NULL", [it["run_id"], it["problem_id"]]).fetchall()}
            waiting = {r[0] for r in con.execute(
                """SELECT unnest(i.sample_indexes) FROM batch_items i JOIN batches bb USING (batch_id)
                   WHERE i.run_id = ? AND i.problem_id = ? AND i.status = 'submitted'
                     AND bb.collected_at IS NULL AND bb.batch_id <> ?""",
                [it["run_id"], it["problem_id"], b["batch_id"]]).fetchall()}
            idx = [i for i in it["sample_indexes"] if i not in have and i not in waiting]
            if idx:
                prob = con.execute("SELECT problem_id, dataset, split, subject, level, question "
                                   "FROM problems WHERE problem_id = ?", [it["problem_id"]]).fetchone()
                todo.append((it, idx, dict(zip(["problem_id", "dataset", "split", "subject",
                                                "level", "question"], prob))))
    if not todo:
        return []
    from curator.teachers.prompts import Template
    msgs = json.loads(template)
    tpl = Template("resubmission", tuple((m["role"], m["content"]) for m in msgs))
    params = json.loads(run[1]) if run[1] else {}
    new_items = [_Item(_custom_id(it["run_id"], it["problem_id"], idx), it["run_id"],
                       it["problem_id"], idx, adapter.body(run[0], params, tpl.render(p), len(idx)))
                 for it, idx, p in todo]
    subs = await _submit_items(wh, b["provider"], b["base_url"], b["metadata"].get("api_key_env"),
                               new_items, max_requests, b["batch_id"], b["metadata"].get("prices"))
    return [s.batch_id for s in subs]


# -- cancel ------------------------------------------------------------------------------

def cancel(wh: Warehouse, batch_ids: list[str] | None = None) -> list[list]:
    return asyncio.run(_cancel(wh, batch_ids))


async def _cancel(wh, batch_ids) -> list[list]:
    out = []
    for b in _batches(wh, batch_ids, include_collected=False):
        _, client, _ = _batch_client(b)
        try:
            if not await _submitted(wh, b, client):
                continue
            if b["provider"] == "anthropic":
                st = (await client.messages.batches.cancel(b["batch_id"])).processing_status
            else:
                st = (await client.batches.cancel(b["batch_id"])).status
        finally:
            await client.close()
        with wh.write() as con:
            con.execute("UPDATE batches SET status = ?, checked_at = current_timestamp "
                        "WHERE batch_id = ?", [st, b["batch_id"]])
        out.append([b["batch_id"], st])
    return out

