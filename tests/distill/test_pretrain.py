"""Digit tokenizer, the prompt/rationale boundary for every tokenizer, and `distill pretrain`."""

from __future__ import annotations

import json

import pytest

from curator import synthetic as S
from curator.errors import CuratorError
from distill.data import EncodeReport, PromptFormat, encode, encode_many

TEXTS = [f"Question: What is {p.a} - {p.b}?\nAnswer: {S.rationale(p)}"
         for p in S.generate("subtraction", 60, seed=0)] + ["Numbers 12345 and 678 go."] * 5


@pytest.fixture(scope="module")
def digit_tokenizer():
    from distill.tiny import build_tokenizer
    return build_tokenizer(TEXTS, 400, digits=True)


@pytest.fixture(scope="module")
def bpe_tokenizer():
    from distill.tiny import build_tokenizer
    return build_tokenizer(TEXTS, 400, digits=False)


def test_digit_tokenizer_gives_every_digit_its_own_token(digit_tokenizer, bpe_tokenizer):
    text = "What is 5003 - 1867? ones: 13-7-0=6, write 6 and 4738+1596"
    toks = digit_tokenizer.convert_ids_to_tokens(digit_tokenizer(text, add_special_tokens=False)["input_ids"])
    with_digits = [t for t in toks if any(c.isdigit() for c in t)]
    assert with_digits and all(len(t) == 1 for t in with_digits)
    assert "".join(with_digits) == "".join(c for c in text if c.isdigit())
    assert digit_tokenizer.decode(digit_tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    # plain BPE trained on the same text merges digits into chunks
    bpe = bpe_tokenizer.convert_ids_to_tokens(bpe_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert any(sum(c.isdigit() for c in t) > 1 for t in bpe)


@pytest.mark.parametrize("which", ["digit", "bpe"])
@pytest.mark.parametrize("template", ["Question: {question}\nAnswer: ", "Q: {question}\nA:",
                                      "{question}\n\n"])
def test_prompt_and_completion_tokenise_as_the_joined_text(which, template, request):
    tok = request.getfixturevalue(f"{which}_tokenizer")
    fmt = PromptFormat(template=template)
    for p in S.generate("subtraction", 5, seed=1):
        rationale = S.rationale(p)
        enc = encode(tok, fmt, p.question, rationale, 4096)
        joined = tok(template.format(question=p.question) + rationale)["input_ids"]
        assert enc["input_ids"] == joined + [tok.eos_token_id]
        prompt = fmt.prompt_ids(tok, p.question)
        assert enc["prompt_length"] == len(prompt) and enc["input_ids"][:len(prompt)] == prompt
        # what a student generates after the prompt decodes back to the rationale
        completion = enc["input_ids"][len(prompt):-1]
        assert fmt.completion_text(tok.decode(completion, skip_special_tokens=True)) == rationale


@pytest.mark.parametrize("which", ["digit", "bpe"])
@pytest.mark.parametrize("template", ["Question: {question}\nAnswer: ", "Q: {question}\nA:",
                                      "{question}\n\n"])
def test_batched_encoding_gives_the_same_ids_as_encode(which, template, request):
    """encode_many (what training uses) and encode (one at a time) agree token for token,
    the prompt/rationale boundary and the cut at max_length included."""
    tok = request.getfixturevalue(f"{which}_tokenizer")
    fmt = PromptFormat(template=template)
    items = [(p.question, S.rationale(p)) for p in S.generate("subtraction", 8, seed=2)]
    items += [(items[0][0], "a second rationale of the same question")]
    for max_length in (4096, 40):
        one, many = EncodeReport(), EncodeReport()
        expected = [encode(tok, fmt, q, r, max_length, one) for q, r in items]
        assert encode_many(tok, fmt, items, max_length, many, chunk=3) == expected
        assert (one.encoded, one.truncated) == (many.encoded, many.truncated)


def test_the_old_boundary_differs_from_joined_text(bpe_tokenizer):
    """Why the fix matters: 'Answer: ' tokenised alone ends in a lone space token that
    the joined text never has."""
    tok = bpe_tokenizer
    q = "What is 5003 - 1867?"
    alone = tok(f"Question: {q}\nAnswer: ")["input_ids"]
    joined = tok(f"Question: {q}\nAnswer: ones")["input_ids"]
    assert joined[:len(alone)] != alone


def test_pretrain_a_few_steps_writes_a_loadable_base(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.pretrain import PRETRAIN_JSON, PretrainConfig, pretrain
    from distill.tiny import TinyShape

    cfg = PretrainConfig(steps=4, batch_size=4, logging_steps=2, warmup=2,
                         shape=TinyShape(hidden=32, layers=1, heads=2, kv_heads=2,
                                         intermediate=64, vocab=300))
    r = pretrain(tmp_path / "base", cfg, echo=lambda m: None)
    assert r.steps == 4 and len(r.losses) == 2 and r.final_loss == r.final_loss
    info = json.loads((tmp_path / "base" / PRETRAIN_JSON).read_text())
    assert info["parameters"] == r.parameters and info["config"]["steps"] == 4
    tok = AutoTokenizer.from_pretrained(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    ids = tok("What is 4738 + 1596?", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids).count("4") == 1     # digits are single tokens
    assert model.config.vocab_size == len(tok)
    with pytest.raises(CuratorError, match="already holds a model"):
        pretrain(tmp_path / "base", cfg, echo=lambda m: None)
    with pytest.raises(CuratorError, match="facts-share"):
        pretrain(tmp_path / "other", PretrainConfig(facts_share=1.5), echo=lambda m: None)


def test_pretrain_corpus_never_holds_a_multi_column_subtraction():
    from distill.pretrain import Corpus, PretrainConfig
    corpus = Corpus(PretrainConfig(seed=3))
    texts = corpus.texts(300, PromptFormat())
    assert not any(" - " in t for t in texts)                  # no subtraction question
    assert any("borrow" in t for t in texts) and any("carry" in t for t in texts)
    with_sub = Corpus(PretrainConfig(seed=3, subtraction_levels=(1,))).texts(300, PromptFormat())
    subs = [S.parse_question(t) for t in with_sub if " - " in t]
    assert subs and all(p.level == 1 for p in subs)
