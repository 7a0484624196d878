"""The programmatic teacher of `curator serve --teacher synthetic`, reached by `curator
generate` through the real openai client, graded by the curator's grader."""

from __future__ import annotations

import openai
import pytest

from curator import synthetic as S
from curator.grading.batch import grade_pending
from curator.synthetic import load_synthetic
from curator.teachers.generate import GenerateSpec, generate
from curator.teachers.store import Selection


def test_measured_accuracy_through_generate_and_grade_is_within_3_points(wh, serve, keys):
    rate = 0.5
    load_synthetic(wh, "subtraction", 300, seed=0)
    srv = serve(teacher="synthetic", error_rate=rate, seed=0)
    spec = GenerateSpec(provider="openai-compatible", model="synthetic-teacher", samples=4,
                        base_urls=[srv.base_url + "/v1"], selection=Selection(),
                        prompt="word-zeroshot", timeout=10.0, concurrency=16)
    rep = generate(wh, spec)
    assert rep.stats.done == 1200 and rep.stats.failed == 0
    grade_pending(wh, workers=1)
    with wh.read() as con:
        acc, n, lo, hi = con.execute(
            "SELECT avg(g.correct::INT), count(*), "
            "       avg(g.correct::INT) FILTER (WHERE p.level = 1), "
            "       avg(g.correct::INT) FILTER (WHERE p.level = 3) "
            "FROM grades g JOIN samples s USING (sample_id) "
            "JOIN problems p USING (problem_id)").fetchone()
    assert n == 1200
    assert abs(acc - (1 - rate)) <= 0.03
    assert lo > hi                      # harder problems fail more often
    kinds = srv.responder.kinds
    assert kinds["bug"] > 0 and kinds["slip"] > 0 and sum(kinds.values()) == 1200


def test_a_prompt_without_a_synthetic_problem_is_refused_with_400(serve):
    srv = serve(teacher="synthetic", error_rate=0.1)
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="no 'What is A - B\\?'"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    r = client.chat.completions.create(
        model="m", n=3, messages=[{"role": "user", "content": "Question:\nWhat is 5003 - 1867?"}])
    texts = [c.message.content for c in r.choices]
    assert len(set(texts)) >= 1 and all(t.endswith(".") for t in texts)
    assert S.rationale(S.Arith(5003, 1867, "-")) in texts or any("The answer is" in t for t in texts)


def test_teacher_settings_are_checked():
    from curator.errors import CuratorError
    from curator.server import ServerConfig
    with pytest.raises(CuratorError, match="unknown teacher"):
        ServerConfig(teacher="oracle").validate()
    with pytest.raises(CuratorError, match="error rate"):
        ServerConfig(teacher="synthetic", error_rate=2.0).validate()
    with pytest.raises(CuratorError, match="no --replay"):
        ServerConfig(teacher="synthetic", replay=["x.jsonl"]).validate()


def test_session_runs_a_command_against_a_short_lived_server(tmp_path):
    """`python -m curator.server.session ... -- CMD` appends --base-url and returns CMD's
    exit status; the server is gone afterwards."""
    import sys

    from curator.server.session import main

    script = tmp_path / "ask.py"
    out = tmp_path / "answer.txt"
    script.write_text(
        "import sys, openai\n"
        "url = sys.argv[sys.argv.index('--base-url') + 1]\n"
        "c = openai.OpenAI(base_url=url, api_key='x', max_retries=0)\n"
        "r = c.chat.completions.create(model='m', messages=[{'role': 'user', "
        "'content': 'What is 503 - 187?'}])\n"
        f"open({str(out)!r}, 'w').write(r.choices[0].message.content)\n"
        "sys.exit(3)\n")
    rc = main(["--teacher", "synthetic", "--error-rate", "0", "--", sys.executable, str(script)])
    assert rc == 3
    assert out.read_text() == S.rationale(S.Arith(503, 187, "-"))
    assert main(["--teacher", "synthetic"]) == 2          # no command
    assert main(["--teacher", "oracle", "--", sys.executable, "-c", "pass"]) == 2
