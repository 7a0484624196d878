"""The TRL layouts of `curator export` load into TRL's own trainers, and docs/trl.md runs.

Each layout (and style) is exported from the fixture warehouse, loaded with `datasets`
and handed to the matching TRL trainer (SFTTrainer, DPOTrainer, KTOTrainer), whose
dataset preparation tokenizes it; then one optimisation step on a tiny local Llama (no
hub access) shows the prepared batches are what the trainer's collator and loss expect.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from curator.exporting import ExportOptions, export_training

pytest.importorskip("trl")
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "trl.md"
SPLITS = "train=0.6,validation=0.2,test=0.2"


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> Path:
    from distill.tiny import TinyShape, init_tiny
    return init_tiny(tmp_path_factory.mktemp("tiny") / "model", TinyShape())


def _settings(tmp: Path) -> dict:
    # One step, no checkpoints, CPU: enough for every preparation and loss code path.
    return dict(report_to="none", max_steps=1, per_device_train_batch_size=2,
                per_device_eval_batch_size=2, use_cpu=True, save_strategy="no",
                max_length=2048, dataloader_num_workers=0, logging_strategy="no")


def _load(out: Path, fmt: str):
    import datasets
    if fmt == "hf":
        return datasets.load_from_disk(str(out))
    return datasets.load_dataset("json" if fmt == "jsonl" else "parquet", data_dir=str(out))


def _trainer(layout: str):
    import trl
    return {"sft": (trl.SFTTrainer, trl.SFTConfig), "preference": (trl.DPOTrainer, trl.DPOConfig),
            "unpaired": (trl.KTOTrainer, trl.KTOConfig)}[layout]


CASES = [
    ("sft", "standard", None, "jsonl"),
    ("sft", "conversational", "math-cot", "parquet"),
    ("sft", "messages", "math-zeroshot", "hf"),
    ("preference", "standard", None, "parquet"),
    ("preference", "conversational", None, "hf"),
    ("unpaired", "standard", None, "hf"),
    ("unpaired", "conversational", "math-zeroshot", "jsonl"),
]


@pytest.mark.parametrize("layout,style,chat_prompt,fmt", CASES)
def test_layout_loads_into_its_trl_trainer(graded_wh, tiny_student, tmp_path, layout, style,
                                           chat_prompt, fmt):
    out = tmp_path / "export"
    result = export_training(graded_wh, out, ExportOptions(
        format=fmt, splits=SPLITS, layout=layout, style=style, chat_prompt=chat_prompt,
        pairs_per_problem=2 if layout == "preference" else None), record=False)
    trainer_cls, config_cls = _trainer(layout)
    assert result.manifest["layout"]["trainer"] == f"trl.{trainer_cls.__name__}"
    data = _load(out, fmt)
    # a handful of rows keeps the tokenization and the step to well under a second
    train = data["train"].select(range(6))
    evalset = data["validation"].select(range(4))
    trainer = trainer_cls(model=str(tiny_student), train_dataset=train, eval_dataset=evalset,
                          args=config_cls(output_dir=str(tmp_path / "run"),
                                          **_settings(tmp_path)))
    prepared = trainer.train_dataset
    assert prepared.num_rows == 6
    ids = "input_ids" if layout == "sft" else "prompt_ids"
    assert ids in prepared.column_names and all(len(x) > 0 for x in prepared[ids])
    state = trainer.train()
    assert state.global_step == 1
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == metrics["eval_loss"]  # a number, not NaN


# -- docs/trl.md -----------------------------------------------------------------------------

def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def test_trl_doc_runs_as_written(graded_wh, tiny_student, tmp_path, monkeypatch, cli):
    """The doc's export commands run against a test warehouse, then its Python blocks run
    as written, in one namespace; only the settings block (the first) is replaced by a
    tiny local student and one training step."""
    text = DOC.read_text()
    commands = [line for block in _blocks(text, "bash") for line in block.splitlines()
                if line.startswith("curator export ")]
    assert {"--layout sft", "--layout preference", "--layout unpaired"} <= {
        " ".join(shlex.split(c)[3:5]) for c in commands}
    python = _blocks(text, "python")
    assert len(python) == 4, "docs/trl.md: a settings block, then SFT, DPO and KTO"
    setup, *trainers = python
    monkeypatch.chdir(tmp_path)
    for command in commands:
        # the fixture warehouse has 200 problems: split it so validation is not tiny, and
        # one rationale of each label per problem keeps the tokenization to seconds
        cli(*shlex.split(command)[1:], "--splits", SPLITS, "--max-positives", "1",
            "--max-negatives", "1", "--db", str(graded_wh.path))

    namespace: dict = {}
    exec(compile(setup, f"{DOC}:settings", "exec"), namespace)
    assert {"model", "settings"} <= set(namespace), "the settings block names model, settings"
    namespace["model"] = str(tiny_student)
    namespace["settings"] = _settings(tmp_path)
    steps = []
    for i, block in enumerate(trainers):
        exec(compile(block, f"{DOC}:block{i + 2}", "exec"), namespace)
        steps.append((type(namespace["trainer"]).__name__, namespace["trainer"].state.global_step))
    assert steps == [("SFTTrainer", 1), ("DPOTrainer", 1), ("KTOTrainer", 1)]
    assert all((tmp_path / "exports" / d / "manifest.json").is_file()
               for d in ("sft", "pref", "kto"))
