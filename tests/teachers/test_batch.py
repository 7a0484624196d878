"""`--batch` through the OpenAI Batch API and Anthropic Message Batches of the local
server: submit (split to size), status, idempotent collect, resubmission of failed and
expired items only, cancel, and recovery of an interrupted submission."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from curator.teachers.batch import cancel, collect, status, submit
from curator.teachers.generate import generate, plan_generation

from .conftest import DEMO_TDG
from .test_generate import make_spec, rows


def _wait_ended(wh, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(wh)
        if all(r.status in ("completed", "expired", "cancelled", "failed", "ended") for r in st):
            return st
        time.sleep(0.1)
    raise AssertionError(f"batches did not end: {[r.row() for r in status(wh)]}")


def _items_served(srv) -> Counter:
    return Counter(e["custom_id"] for e in srv.log
                   if e["kind"] == "batch_item" and e["fault"] == "ok")


@pytest.mark.parametrize("provider,model", [("openai", "teacher"), ("anthropic", "claude-teacher")])
def test_submit_collect_resubmit(math_wh, serve, keys, prices, provider, model):
    srv = serve(replay=[str(DEMO_TDG)], batch_delay_s=0.2,
                batch_item_faults=["ok", "error", "ok", "ok", "expired"])
    spec = make_spec(srv, prices, provider=provider, model=model, samples=2, limit=6)
    subs = submit(math_wh, spec, plan_generation(math_wh, spec), max_requests=4)
    n_items = 6 if provider == "openai" else 12      # n=2 per request vs one per sample
    assert sum(s.requests for s in subs) == n_items and all(s.requests <= 4 for s in subs)
    assert sum(s.samples for s in subs) == 12
    recorded = rows(math_wh, "SELECT count(*), count(DISTINCT batch_id) FROM batch_items")
    assert recorded == [(n_items, len(subs))]
    # waiting samples are not asked for again, live or by another batch
    assert plan_generation(math_wh, spec).missing == 0
    assert submit(math_wh, spec, plan_generation(math_wh, spec)) == []

    _wait_ended(math_wh)
    first = collect(math_wh, max_requests=4)
    failed = sum(r.failed_items for r in first)
    assert failed >= 2                                  # one error, one or more expired
    resub = [b for r in first for b in r.resubmitted_as]
    assert resub
    assert rows(math_wh, "SELECT count(*) FROM batches WHERE resubmission_of IS NOT NULL") == [(len(resub),)]
    _wait_ended(math_wh)
    collect(math_wh)
    assert rows(math_wh, "SELECT count(*), count(completion), sum(cost_usd) > 0 FROM samples") == [(12, 12, True)]
    # batch results are billed at the batch discount
    (meta,) = rows(math_wh, "SELECT metadata FROM samples LIMIT 1")[0]
    assert json.loads(meta)["batch_id"]
    # collecting again changes nothing and submits nothing
    before = rows(math_wh, "SELECT count(*) FROM batches")
    assert collect(math_wh) == []
    assert collect(math_wh, batch_ids=[subs[0].batch_id])[0].status == "already collected"
    assert rows(math_wh, "SELECT count(*) FROM batches") == before
    assert rows(math_wh, "SELECT count(*) FROM samples") == [(12,)]
    # each item was answered once: only failed ones were sent again
    assert max(_items_served(srv).values()) == 1
    assert plan_generation(math_wh, spec).missing == 0


def test_batch_costs_use_the_batch_discount(math_wh, serve, keys, prices):
    srv = serve(script=["The answer is 1."], batch_delay_s=0.05)
    spec = make_spec(srv, prices, samples=1, limit=2)
    submit(math_wh, spec, plan_generation(math_wh, spec))
    _wait_ended(math_wh)
    collect(math_wh)
    pt, ct, cost = rows(math_wh, "SELECT sum(prompt_tokens), sum(completion_tokens), "
                                 "sum(cost_usd) FROM samples")[0]
    assert cost == pytest.approx((pt * 1.5 + ct * 4.0) / 1e6 * 0.5)


def test_cancel_then_collect_keeps_what_finished_and_does_not_resubmit(math_wh, serve, keys, prices):
    srv = serve(script=["The answer is 1."], batch_delay_s=1.0)
    spec = make_spec(srv, prices, samples=1, limit=3)
    (sub,) = submit(math_wh, spec, plan_generation(math_wh, spec))
    assert cancel(math_wh) == [[sub.batch_id, "cancelling"]]
    _wait_ended(math_wh)
    (row,) = collect(math_wh)
    assert row.status == "cancelled" and row.resubmitted_as == []
    assert dict(rows(math_wh, "SELECT status, count(*) FROM batch_items GROUP BY 1")) == {"canceled": 3}
    # the samples are missing again, so a live run asks for them
    assert generate(math_wh, spec).stats.done == 3


@pytest.mark.parametrize("provider,model", [("openai", "teacher"), ("anthropic", "claude-teacher")])
def test_an_interrupted_submission_is_recovered_not_paid_twice(math_wh, serve, keys, prices,
                                                               provider, model, monkeypatch):
    import curator.teachers.batch as batch_mod
    srv = serve(script=["The answer is 1."], batch_delay_s=0.05)
    spec = make_spec(srv, prices, provider=provider, model=model, samples=1, limit=2)
    plan = plan_generation(math_wh, spec)

    # The provider creates the batch, then the process dies before recording its id.
    real_write = batch_mod.Warehouse.write
    calls = {"n": 0}

    def dying_write(self):
        calls["n"] += 1
        if calls["n"] == 3:           # 1: runs, 2: the intent, 3: the provider's id
            raise KeyboardInterrupt
        return real_write(self)
    monkeypatch.setattr(batch_mod.Warehouse, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        submit(math_wh, spec, plan)
    monkeypatch.setattr(batch_mod.Warehouse, "write", real_write)
    assert rows(math_wh, "SELECT status FROM batches") == [("submitting",)]
    assert plan_generation(math_wh, spec).missing == 0         # not requested again
    (st,) = _wait_ended(math_wh)
    assert st.batch_id.startswith("batch_" if provider == "openai" else "msgbatch_")
    collect(math_wh)
    assert rows(math_wh, "SELECT count(completion) FROM samples") == [(2,)]
    creates = [e for e in srv.log if e["kind"] in ("batch_create", "message_batch_create")]
    assert len(creates) == 1
