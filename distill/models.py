"""Loading a causal language model, its tokenizer, and LoRA adapters on top of it.

Any decoder-only model that ``AutoModelForCausalLM`` loads works: a local directory (what
``distill init-tiny`` writes) or a hub name where the user has network access. LoRA
targets default to what peft uses for the architecture (``q_proj``/``v_proj`` for Llama,
Mistral, Qwen2: the paper's choice) and can be set explicitly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from curator.errors import CuratorError

# peft still reads the deprecated property; the warning is about peft, not about us.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                        category=FutureWarning)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return None
    try:
        return DTYPES[name]
    except KeyError:
        raise CuratorError(f"unknown dtype {name!r}: use one of {sorted(DTYPES)} or auto") from None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_local(name_or_path: str | Path) -> None:
    """A name that is written as a path (absolute, ./, ../, ~) must be a directory here;
    anything else may be a hub name."""
    text = str(name_or_path)
    if text.startswith(("/", "./", "../", "~")) or isinstance(name_or_path, Path):
        path = Path(text).expanduser()
        if not path.is_dir():
            raise CuratorError(f"no model directory at {text} (build one with `distill "
                               f"init-tiny {text}`, or give a hub name)")


def _load_error(name_or_path, what: str, exc: Exception) -> CuratorError:
    """The error of a failed load; for a hub name while downloads are off, how to allow them."""
    import os
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline and not Path(str(name_or_path)).expanduser().is_dir():
        return CuratorError(f"cannot load {what} from {name_or_path}: it is not a local "
                            f"directory and not in the Hugging Face cache, and distill does "
                            f"not download unless asked: give a local directory, or pass "
                            f"`distill --allow-download ...` (or DISTILL_ALLOW_DOWNLOAD=1)")
    return CuratorError(f"cannot load {what} from {name_or_path}: {exc}")


def load_tokenizer(name_or_path: str | Path):
    """The model's tokenizer, with a pad token (EOS when it has none: padding is masked by
    length, so sharing the id is safe) and left padding for generation."""
    from transformers import AutoTokenizer
    check_local(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except OSError as exc:
        raise _load_error(name_or_path, "a tokenizer", exc) from None
    if tok.eos_token_id is None:
        raise CuratorError(f"{name_or_path}: the tokenizer has no EOS token; rationales "
                           f"could never end")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str | Path, dtype: str | torch.dtype | None = "float32",
               device: str | None = None, gradient_checkpointing: bool = False):
    """A ``transformers`` causal LM in ``dtype`` on ``device`` (None: leave on CPU, which
    ``Trainer`` moves to each process's accelerator)."""
    from transformers import AutoModelForCausalLM

    from distill.threads import announce
    check_local(name_or_path)
    announce()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path),
                                                     dtype=resolve_dtype(dtype))
    except OSError as exc:
        raise _load_error(name_or_path, "a causal LM", exc) from None
    if gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
    if device is not None:
        model.to(device)
    return model


def default_target_modules(model) -> list[str]:
    """LoRA target modules for ``model``'s architecture (peft's defaults)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as M
    model_type = getattr(model.config, "model_type", None)
    if model_type not in M:
        raise CuratorError(f"no default LoRA targets for model type {model_type!r}; pass "
                           f"--target-modules (e.g. q_proj,v_proj)")
    return list(M[model_type])


def check_linear_targets(model, targets: list[str]) -> None:
    """Adapters (and NAT gates) are built on ``nn.Linear``; refuse other layer types with a
    message naming the module, rather than failing inside peft."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    found = False
    for name, module in model.named_modules():
        if name.split(".")[-1] in targets:
            found = True
            if isinstance(module, BaseTunerLayer):  # already adapted: check what it wraps
                module = module.get_base_layer()
            if not isinstance(module, torch.nn.Linear):
                raise CuratorError(f"LoRA target {name} is a {type(module).__name__}, not a "
                                   f"torch.nn.Linear; choose other --target-modules")
    if not found:
        raise CuratorError(f"no module of the model is named any of {targets}")


def attach_lora(model, adapter: str, r: int, alpha: int, dropout: float,
                target_modules: list[str] | None = None):
    """Wrap ``model`` in a peft model with a new LoRA adapter ``adapter`` (or add the adapter
    when ``model`` is already a peft model). Layers are
    :class:`distill.adapters.GatedLoraLinear`, so adapter modes work on them."""
    from peft import PeftModel, get_peft_model

    from distill.adapters import check_peft_extension, lora_config

    check_peft_extension()
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    targets = target_modules or default_target_modules(base)
    check_linear_targets(base, targets)
    cfg = lora_config(r, alpha, dropout, targets)
    if isinstance(model, PeftModel):
        was_training = model.training
        model.add_adapter(adapter, cfg)
        model.train(was_training)
        return model
    return get_peft_model(model, cfg, adapter_name=adapter)


def load_peft(base, adapter_dir: str | Path, adapter: str = "default", trainable: bool = False):
    """``base`` with the adapter saved at ``adapter_dir`` under the name ``adapter``."""
    from peft import PeftModel

    from distill.adapters import check_peft_extension, saved_lora_config

    check_peft_extension()
    adapter_dir = Path(adapter_dir)
    cfg = saved_lora_config(adapter_dir)
    return PeftModel.from_pretrained(base, str(adapter_dir), adapter_name=adapter, config=cfg,
                                     is_trainable=trainable)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CuratorError(f"{path}: {exc}") from None
