"""The local teacher server, driven by the real openai and anthropic clients."""

from __future__ import annotations

import gzip
import json
import time

import anthropic
import httpx2
import openai
import pytest

from curator.ids import normalize_question
from curator.server.responder import Library, count_tokens, truncate_tokens
from curator.teachers.prompts import BUILTIN

from .conftest import DEMO_TDG


def _first_record():
    with gzip.open(DEMO_TDG, "rt") as fh:
        return json.loads(fh.readline())


def _oa(srv, **kw):
    return openai.OpenAI(base_url=srv.base_url + "/v1", api_key="sk-x", max_retries=0, **kw)


def _an(srv, **kw):
    return anthropic.Anthropic(base_url=srv.base_url, api_key="sk-ant-x", max_retries=0, **kw)


def test_replay_picks_the_recorded_rationale_for_the_question_in_a_few_shot_prompt(serve):
    rec = _first_record()
    srv = serve(replay=[str(DEMO_TDG)])
    msgs = BUILTIN["math-cot"].render({"question": rec["question"]})
    r = _oa(srv).chat.completions.create(model="gpt-4", messages=msgs, n=3, max_tokens=4000)
    texts = [c.message.content for c in r.choices]
    assert texts == rec["generated_answer"][:3]
    assert [c.finish_reason for c in r.choices] == ["stop"] * 3
    # the next request for the same question continues with the next recorded rationales
    r2 = _oa(srv).chat.completions.create(model="gpt-4", messages=msgs, n=2, max_tokens=4000)
    assert [c.message.content for c in r2.choices] == rec["generated_answer"][3:5]
    # usage: the prompt paid once, completion tokens summed over the choices
    prompt_text = "\n".join(m["content"] for m in msgs)
    assert r.usage.prompt_tokens == count_tokens(prompt_text)
    assert r.usage.completion_tokens == sum(count_tokens(t) for t in texts)


def test_unknown_question_gets_scripted_text_and_max_tokens_truncates(serve):
    srv = serve(script=["Let's think step by step. One two three four five six. The answer is 6."])
    r = _oa(srv).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "What is six?"}], max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "Let's think step"  # Let + ' + s: 3 tokens
    assert r.usage.completion_tokens == 5


def test_library_matching_falls_back_to_substring_and_normalises():
    lib = Library()
    lib.add("Compute  $1+1$.", ["a"])
    assert lib.find("Problem:\nCompute $1+1$.\nSolution:") == normalize_question("Compute $1+1$.")
    assert lib.find("Please, as a warm-up: Compute $1+1$. Thanks") is not None
    assert lib.find("Something else") is None
    assert truncate_tokens("a b c", 2) == "a b"


@pytest.mark.parametrize("fault,exc", [
    ("429", openai.RateLimitError), ("500", openai.InternalServerError),
    ("503", openai.InternalServerError), ("drop", openai.APIConnectionError),
    ("hang", openai.APITimeoutError)])
def test_openai_faults_surface_as_the_sdk_errors(serve, fault, exc):
    srv = serve(fault_sequence=[fault], hang_s=5, retry_after_s=2)
    client = _oa(srv, timeout=0.5)
    with pytest.raises(exc) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    if fault == "429":
        assert info.value.response.headers["retry-after"] == "2"
        assert info.value.response.headers["retry-after-ms"] == "2000"
    # the next request is answered normally
    ok = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert ok.choices[0].message.content


def test_malformed_content_filter_and_length_faults(serve):
    srv = serve(fault_sequence=["malformed", "content_filter", "length"],
                script=["word " * 40])
    client = _oa(srv)
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "q"}])
    with pytest.raises(json.JSONDecodeError):
        raw.parse()
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert r.choices[0].finish_reason == "content_filter" and r.choices[0].message.content is None
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 20


def test_anthropic_messages_and_faults(serve):
    rec = _first_record()
    srv = serve(replay=[str(DEMO_TDG)], fault_sequence=["ok", "503", "content_filter"])
    client = _an(srv)
    m = client.messages.create(model="claude", max_tokens=4000, system="Be brief.",
                               messages=[{"role": "user", "content": rec["question"]}])
    assert m.content[0].text == rec["generated_answer"][0]
    assert m.stop_reason == "end_turn" and m.usage.input_tokens > 0
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    m = client.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert m.stop_reason == "refusal"
    m = client.messages.create(model="claude", max_tokens=3, messages=[{"role": "user", "content": "x"}])
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3


def test_server_rate_limits_with_headers(serve):
    srv = serve(rpm=120, rate_window_s=1.0)     # 2 requests per 1 s window
    client = _oa(srv)
    r1 = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert r1.headers["x-ratelimit-limit-requests"] == "120"
    assert r1.headers["x-ratelimit-remaining-requests"] == "1"
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    wait = float(info.value.response.headers["retry-after-ms"]) / 1000
    assert 0 < wait <= 1.0
    time.sleep(wait + 0.05)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    an = _an(srv).messages.with_raw_response.create(
        model="c", max_tokens=5, messages=[{"role": "user", "content": "q"}])
    assert an.headers["anthropic-ratelimit-requests-limit"] == "120"


def test_openai_files_and_batches(serve):
    srv = serve(script=["The answer is 1."], batch_delay_s=0.1,
                batch_item_faults=["ok", "error", "ok"])
    client = _oa(srv)
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "m", "n": 2, "messages": [{"role": "user", "content": f"q{i}"}]}}
             for i in range(3)]
    f = client.files.create(file=("in.jsonl", "\n".join(map(json.dumps, lines)).encode()),
                            purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h", metadata={"k": "v"})
    assert b.status in ("validating", "in_progress")
    for _ in range(50):
        b = client.batches.retrieve(b.id)
        if b.status == "completed":
            break
        time.sleep(0.05)
    assert b.status == "completed" and b.request_counts.completed == 2 and b.request_counts.failed == 1
    out = [json.loads(x) for x in client.files.content(b.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in out] == ["c0", "c2"]
    assert len(out[0]["response"]["body"]["choices"]) == 2
    err = [json.loads(x) for x in client.files.content(b.error_file_id).text.splitlines()]
    assert err[0]["custom_id"] == "c1" and err[0]["response"]["status_code"] == 500


def test_anthropic_message_batches_and_cancel(serve):
    srv = serve(script=["The answer is 2."], batch_delay_s=0.1, batch_item_faults=["ok", "expired"])
    client = _an(srv)
    b = client.messages.batches.create(requests=[
        {"custom_id": f"c{i}", "params": {"model": "c", "max_tokens": 20,
                                          "messages": [{"role": "user", "content": f"q{i}"}]}}
        for i in range(3)])
    for _ in range(50):
        b = client.messages.batches.retrieve(b.id)
        if b.processing_status == "ended":
            break
        time.sleep(0.05)
    results = {r.custom_id: r.result.type for r in client.messages.batches.results(b.id)}
    assert results == {"c0": "succeeded", "c1": "expired", "c2": "expired"}
    b2 = client.messages.batches.create(requests=[
        {"custom_id": "x", "params": {"model": "c", "max_tokens": 5,
                                      "messages": [{"role": "user", "content": "q"}]}}])
    assert client.messages.batches.cancel(b2.id).processing_status == "canceling"


def test_request_log_never_holds_the_key(serve, tmp_path):
    log = tmp_path / "requests.jsonl"
    srv = serve(log_path=str(log))
    secret = "sk-secret-in-header-0123456789abcdef"
    openai.OpenAI(base_url=srv.base_url + "/v1", api_key=secret, max_retries=0).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "q"}],
        extra_headers={"X-Curator-Sample-Ids": "s_1,s_2"})
    entries = httpx2.get(srv.base_url + "/_curator/requests").json()
    assert entries[0]["samples"] == "s_1,s_2" and entries[0]["status"] == 200
    srv.stop_thread()
    text = log.read_text()
    assert "s_1,s_2" in text and secret not in text


def test_config_endpoint_takes_json_only_and_refuses_other_origins(serve):
    srv = serve()
    url = srv.base_url + "/_curator/config"
    # what any web page can send without a preflight: a text/plain "simple request"
    r = httpx2.post(url, content=b'{"fault_rates": {"500": 1.0}}',
                    headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = httpx2.post(url, data={"seed": "3"})     # a form post
    assert r.status_code == 415
    # a JSON body from another origin (as a browser would label it)
    r = httpx2.post(url, json={"fault_rates": {"500": 1.0}},
                    headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    r = httpx2.post(url, json={"seed": 5}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = httpx2.post(url, content=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert srv.config.fault_rates == {} and srv.config.seed == 0   # nothing changed
    # the same host, or no browser at all (tests, scripts), may reconfigure it
    r = httpx2.post(url, json={"seed": 5}, headers={"Origin": srv.base_url})
    assert r.status_code == 200 and srv.config.seed == 5
    r = httpx2.post(url, json={"fault_rates": {"500": 1.0}})
    assert r.status_code == 200 and srv.config.fault_rates == {"500": 1.0}
    with pytest.raises(openai.InternalServerError):
        _oa(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
