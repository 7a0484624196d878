"""Reading exports (validated against the schema contract), prompts, encoding, collators."""

from __future__ import annotations

import gzip
import json

import pytest

from curator.errors import InputError
from distill import data as D
from distill.collate import IGNORE, GroupCollator, RationaleCollator, build_batch


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_read_export_fixture(export_file):
    recs = D.read_export(export_file)
    assert len(recs) == 48
    assert {r["label"] for r in recs} == {"positive", "negative"}


def test_read_export_gz_parquet_and_save_to_disk_agree(export_file, tmp_path):
    import datasets
    recs = _records(export_file)
    gz = tmp_path / "e.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    ds = datasets.Dataset.from_list(recs)
    ds.to_parquet(str(tmp_path / "e.parquet"))
    ds.save_to_disk(str(tmp_path / "hf"))
    for p in (gz, tmp_path / "e.parquet", tmp_path / "hf"):
        assert D.read_export(p) == recs, p


@pytest.mark.parametrize("mutate,expect", [
    (lambda r: r.pop("rationale"), "missing field 'rationale'"),
    (lambda r: r.update(label="maybe"), "label: 'maybe' is not one of"),
    (lambda r: r.update(level="5"), "level: '5' is not of type integer or null"),
    (lambda r: r.update(extra=1), "unexpected field 'extra'"),
])
def test_invalid_record_names_file_and_line(export_file, tmp_path, mutate, expect):
    recs = _records(export_file)
    mutate(recs[6])
    p = tmp_path / "bad.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(InputError) as e:
        D.read_export(p)
    assert f"{p}:7" in str(e.value) and expect in str(e.value)


def test_export_directories_and_splits(export_file, tmp_path):
    """`curator export` writes <split>.jsonl|.parquet files or a DatasetDict."""
    import datasets
    recs = _records(export_file)
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "jsonl" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[:30]))
    (tmp_path / "jsonl" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[30:]))
    (tmp_path / "jsonl" / "manifest.json").write_text("{}")
    assert D.read_export(tmp_path / "jsonl") == recs[:30]
    assert D.read_export(tmp_path / "jsonl", "test") == recs[30:]
    with pytest.raises(InputError, match="no validation.jsonl"):
        D.read_export(tmp_path / "jsonl", "validation")
    with pytest.raises(InputError, match="several data files"):
        D.read_eval(tmp_path / "jsonl")
    (tmp_path / "jsonl" / "train.jsonl").unlink()
    assert len(D.read_eval(tmp_path / "jsonl")) == len({r["problem_id"] for r in recs[30:]})
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(recs[:30]),
                               "test": datasets.Dataset.from_list(recs[30:])})
    dd.save_to_disk(str(tmp_path / "hf"))
    assert D.read_export(tmp_path / "hf", "test") == recs[30:]
    with pytest.raises(InputError, match="choose one with --split"):
        D.read_records(tmp_path / "hf", D.EXPORT_SCHEMA, None)


def test_invalid_parquet_row_is_located(export_file, tmp_path):
    import datasets
    recs = _records(export_file)
    for r in recs:
        r["label"] = "positive"
    recs[3]["label"] = "unsure"
    datasets.Dataset.from_list(recs).to_parquet(str(tmp_path / "b.parquet"))
    with pytest.raises(InputError, match=r"\(row 4\).*'unsure' is not one of"):
        D.read_export(tmp_path / "b.parquet")


def test_not_json_unknown_format_and_empty(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(InputError, match=r"x.jsonl:1: not a valid export_record"):
        D.read_export(p)
    p.write_text('{oops\n')
    with pytest.raises(InputError, match=r"x.jsonl:1: not valid JSON"):
        D.read_export(p)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unknown format"):
        D.read_export(tmp_path / "x.csv")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no records"):
        D.read_export(tmp_path / "e.jsonl")
    with pytest.raises(InputError, match="no such file"):
        D.read_export(tmp_path / "missing.jsonl")


def test_fast_validator_agrees_with_jsonschema(export_file):
    """The fast checker must accept and reject exactly what jsonschema does."""
    import jsonschema
    from hypothesis import given, settings
    from hypothesis import strategies as st

    v = D.RecordValidator(D.EXPORT_SCHEMA)
    assert v.fast
    full = jsonschema.Draft202012Validator(D.load_schema(D.EXPORT_SCHEMA))
    base = _records(export_file)[0]
    values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False),
                       st.text(max_size=3), st.sampled_from(["positive", "negative"]),
                       st.lists(st.integers(), max_size=2))

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.sampled_from(sorted(base) + ["other"]), values, max_size=4),
           st.lists(st.sampled_from(sorted(base)), max_size=2))
    def check(updates, drops):
        rec = {**base, **updates}
        for k in drops:
            rec.pop(k, None)
        assert (not v.errors(rec)) == full.is_valid(rec), rec

    check()


def test_read_eval_and_export_as_eval(eval_file, export_file):
    ev = D.read_eval(eval_file)
    assert len(ev) == 6 and all(e["question"] for e in ev)
    from_export = D.read_eval(export_file)
    assert len(from_export) == len({r["problem_id"] for r in _records(export_file)})


def test_plain_prompt_and_completion(tiny_model):
    from distill.models import load_tokenizer
    tok = load_tokenizer(tiny_model)
    fmt = D.PromptFormat()
    p = fmt.prompt_ids(tok, "What is 1+1?")
    c = fmt.completion_ids(tok, "What is 1+1?", "It is \\boxed{2}.")
    assert p[0] == tok.bos_token_id and c[-1] == tok.eos_token_id
    assert tok.decode(p + c, skip_special_tokens=True) == "Question: What is 1+1?\nAnswer: It is \\boxed{2}."
    with pytest.raises(Exception, match="must contain"):
        D.PromptFormat(template="no placeholder")


def test_chat_prompt_is_prefix_of_conversation(tiny_model):
    from distill.models import load_tokenizer
    tok = load_tokenizer(tiny_model)
    fmt = D.PromptFormat(chat=True)
    p = fmt.prompt_ids(tok, "Q?")
    c = fmt.completion_ids(tok, "Q?", "A.")
    full = tok.apply_chat_template([{"role": "user", "content": "Q?"},
                                    {"role": "assistant", "content": "A."}], tokenize=False)
    assert tok.decode(p + c) == full
    assert c[-1] == tok.eos_token_id


def test_encode_truncates_completion_and_drops_long_prompts(tiny_model):
    from distill.models import load_tokenizer
    tok = load_tokenizer(tiny_model)
    fmt = D.PromptFormat()
    rep = D.EncodeReport()
    enc = D.encode(tok, fmt, "q", "word " * 50, 30, rep)
    assert len(enc["input_ids"]) == 30 and enc["prompt_length"] < 30
    assert D.encode(tok, fmt, "long question " * 20, "r", 30, rep) is None
    assert (rep.encoded, rep.truncated, rep.dropped_prompt_too_long) == (1, 1, 1)


def test_group_dataset_keeps_both_labels(tiny_model, export_file):
    from distill.models import load_tokenizer
    tok = load_tokenizer(tiny_model)
    ds = D.group_dataset(D.read_export(export_file), tok, D.PromptFormat(), 256, 4)
    for row in ds:
        assert len(row["input_ids"]) <= 4 and not all(row["is_negative"])
    assert any(any(r["is_negative"]) for r in ds)


def test_labels_mask_prompt_and_padding():
    b = build_batch([[1, 5, 6, 7], [1, 8]], [2, 1], pad_id=0)
    assert b["input_ids"].tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert b["labels"].tolist() == [[IGNORE, IGNORE, 6, 7], [IGNORE, 8, IGNORE, IGNORE]]
    b = build_batch([[1, 5, 6, 7], [1, 8]], [2, 1], pad_id=0, train_on_prompt=True)
    assert b["labels"].tolist() == [[1, 5, 6, 7], [1, 8, IGNORE, IGNORE]]


def test_eos_as_pad_stays_a_target():
    eos = 2
    b = build_batch([[1, 5, eos], [1, 6, 7, eos]], [1, 1], pad_id=eos)
    assert b["labels"][0].tolist() == [IGNORE, 5, eos, IGNORE]


def test_left_padding_for_generation():
    b = build_batch([[1, 5], [1, 6, 7]], [2, 3], pad_id=0, left_pad=True)
    assert b["input_ids"].tolist() == [[0, 1, 5], [1, 6, 7]]
    assert b["attention_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]


def test_collators_carry_labels_and_groups():
    rows = [{"input_ids": [1, 2, 3], "prompt_length": 1, "is_negative": False},
            {"input_ids": [1, 4], "prompt_length": 1, "is_negative": True}]
    b = RationaleCollator(pad_id=0)(rows)
    assert b["is_negative"].tolist() == [False, True]
    g = GroupCollator(pad_id=0)([
        {"input_ids": [[1, 2], [1, 3, 4]], "prompt_length": [1, 1], "is_negative": [False, True]},
        {"input_ids": [[1, 5]], "prompt_length": [1], "is_negative": [False]}])
    assert g["group"].tolist() == [0, 0, 1] and g["is_negative"].tolist() == [False, True, False]
    assert g["labels"].tolist() == [[IGNORE, 2, IGNORE], [IGNORE, 3, 4], [IGNORE, 5, IGNORE]]
