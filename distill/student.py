"""What a training output directory holds, and loading it back as a student for inference.

Layout written by ``distill train`` (one LoRA adapter)::

    OUT/adapter_config.json, adapter_model.safetensors   peft format
    OUT/distill.json        what was trained: method, base model, prompt format, data
    OUT/training_args.json  every hyper-parameter
    OUT/loss_curve.json/.png

and by ``distill nat``::

    OUT/neg/   stage 1: peft adapter (+ training_args.json, loss_curve.*)
    OUT/pos/   stage 2: peft adapter whose safetensors also hold the gates, nat_gate.json
    OUT/distill.json

``PeftModel.from_pretrained(base, OUT)`` (or ``OUT/neg``, ``OUT/pos``) loads any of them as
a plain LoRA model; :func:`load_student` also restores the gates and the NAT modes.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from curator.errors import CuratorError
from distill.adapters import BASE, NAT, NEG, POS
from distill.data import PromptFormat

MANIFEST = "distill.json"
DEFAULT_ADAPTER = "default"


def versions() -> dict:
    import peft
    import torch
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def write_manifest(out: Path, **fields) -> Path:
    path = Path(out) / MANIFEST
    path.write_text(json.dumps({**fields, "versions": versions()}, indent=2, default=str))
    return path


def read_manifest(out: str | Path) -> dict:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CuratorError(f"{path}: not valid JSON ({exc})") from None


def is_nat_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / NEG / "adapter_config.json").is_file() and (p / POS / "adapter_config.json").is_file()


def modes_of(adapter_dir: str | Path | None) -> list[str]:
    """The modes a student directory can be run in; the first is its default."""
    if adapter_dir is None:
        return [BASE]
    if is_nat_dir(adapter_dir):
        return [NAT, POS, NEG, BASE]
    return [DEFAULT_ADAPTER, BASE]


def load_student(base: str | Path, adapter_dir: str | Path | None, dtype="float32",
                 device: str | None = None):
    """``(model, tokenizer, prompt_format, modes)`` for inference: the base model with the
    adapter(s) of ``adapter_dir`` (None: the base alone), in eval mode."""
    from distill.adapters import load_adapter
    from distill.models import load_model, load_peft, load_tokenizer

    tokenizer = load_tokenizer(base)
    model = load_model(base, dtype=dtype)
    fmt = PromptFormat()
    if adapter_dir is not None:
        adapter_dir = Path(adapter_dir)
        manifest = read_manifest(adapter_dir)
        if "prompt_format" in manifest:
            fmt = PromptFormat.from_json(manifest["prompt_format"])
        if is_nat_dir(adapter_dir):
            model = load_peft(model, adapter_dir / NEG, NEG)
            load_adapter(model, adapter_dir / POS, POS)
        elif (adapter_dir / "adapter_config.json").is_file():
            model = load_peft(model, adapter_dir, DEFAULT_ADAPTER)
        else:
            raise CuratorError(f"{adapter_dir}: neither a peft adapter (adapter_config.json) "
                               f"nor a NAT output (neg/ and pos/)")
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer, fmt, modes_of(adapter_dir)
