"""LoRA adapters with *modes* (and the layer that holds NAT's integration gate), built on peft.

Every LoRA layer ``distill`` creates is a :class:`GatedLoraLinear`: peft's own
``lora.Linear`` (so adapters live in peft's containers and are saved and loaded in peft's
format), registered through peft's custom-module hook ``LoraConfig._register_custom_module``,
plus two things:

- the NAT integration gate of an adapter (``pos``), held in adapter-keyed containers
  ``lora_gate_query/key/value_in/value_out`` listed in ``adapter_layer_names``, so that peft
  saves the gate with its adapter, moves it with the layer and deletes it with the adapter;
- a *mode* that decides what the layer computes, set for the whole model by
  :func:`adapter_mode`: ``"base"`` (no adapter), the name of one adapter (``"neg"``,
  ``"pos"``, ``"student"``, ...), or ``"nat"`` (``pos`` and ``neg`` combined by the gate).
  With no mode set the layer is exactly peft's ``lora.Linear``.

The gate itself (its formula, :class:`GateConfig` and the two ways of computing it) is in
:mod:`distill.nat.gate`; this module holds its weights in the layer and runs it in "nat"
mode.

peft marks its layer classes as private-ish; :func:`check_peft_extension` verifies every
internal this module relies on and fails with a clear message after an incompatible peft
upgrade (a test calls it).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import torch
from peft import LoraConfig
from torch.utils.checkpoint import checkpoint
from peft.tuners.lora import layer as lora_layer
from torch import nn

from distill.nat.gate import (NAT, NEG, POS, GateConfig, integration_gate,  # noqa: F401
                               integration_gate_lowrank)

BASE = "base"
GATE_FILE = "nat_gate.json"


class GatedLoraLinear(lora_layer.Linear):
    """peft's LoRA ``Linear`` with a mode switch and an optional NAT gate per adapter."""

    # One adapter-keyed container per gate matrix, so that peft's key mapping
    # (``<layer>.<container>.<adapter>.weight`` <-> ``<layer>.<container>.weight``) applies
    # unchanged and a saved gate loads under any adapter name.
    gate_parts = ("lora_gate_query", "lora_gate_key", "lora_gate_value_in", "lora_gate_value_out")
    adapter_layer_names = lora_layer.Linear.adapter_layer_names + gate_parts
    other_param_names = lora_layer.Linear.other_param_names + ("gate_config",)

    def update_layer(self, adapter_name, r, lora_alpha, config, **kwargs):
        # peft's __init__ runs nn.Module.__init__ and then update_layer, which walks
        # adapter_layer_names: the gate containers must exist by then.
        if "lora_gate_query" not in self._modules:
            for part in self.gate_parts:
                setattr(self, part, nn.ModuleDict())
            self.gate_config: dict[str, GateConfig] = {}
            self.mode: str | None = None
            self.recompute_gate = True
        return super().update_layer(adapter_name, r, lora_alpha, config=config, **kwargs)

    def add_gate(self, adapter_name: str, cfg: GateConfig) -> None:
        """Attach an integration gate to ``adapter_name`` (combined with ``cfg.partner``).
        Q reads the layer input, K and V its output, so each is sized from this layer's
        real widths; V's output projection is zero, making the unit the identity."""
        for name in (adapter_name, cfg.partner):
            if name not in self.lora_A:
                raise ValueError(f"add_gate: layer has no LoRA adapter {name!r} "
                                 f"(has {sorted(self.lora_A)})")
        ref = self.lora_A[adapter_name].weight
        parts = {
            "lora_gate_query": nn.Linear(self.in_features, cfg.width, bias=False),
            "lora_gate_key": nn.Linear(self.out_features, cfg.width, bias=False),
            "lora_gate_value_in": nn.Linear(self.out_features, cfg.width),
            "lora_gate_value_out": nn.Linear(cfg.width, self.out_features),
        }
        nn.init.zeros_(parts["lora_gate_value_out"].weight)
        nn.init.zeros_(parts["lora_gate_value_out"].bias)
        for part, module in parts.items():
            getattr(self, part)[adapter_name] = module.to(device=ref.device, dtype=ref.dtype)
        self.gate_config[adapter_name] = cfg

    def gated_adapters(self) -> list[str]:
        return list(self.lora_gate_query.keys())

    def _delta(self, name: str, x: torch.Tensor, dropout: bool = True) -> torch.Tensor:
        """s * B A x for one adapter (x already in the adapter dtype)."""
        a, b = self.lora_A[name], self.lora_B[name]
        if dropout:
            x = self.lora_dropout[name](x)
        return b(a(x)) * self.scaling[name]

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        mode = self.mode
        if mode is None:
            return super().forward(x, *args, **kwargs)
        if self.merged:
            raise RuntimeError("adapter modes need unmerged adapters; call unmerge_adapter()")
        if mode == NAT:
            return self._nat(x, *args, **kwargs)
        base = self.base_layer(x, *args, **kwargs)
        if mode == BASE:
            return base
        if mode not in self.lora_A:
            raise RuntimeError(f"mode {mode!r}: no such adapter (have {sorted(self.lora_A)})")
        xa = self._cast_input_dtype(x, self.lora_A[mode].weight.dtype)
        return base + self._delta(mode, xa).to(base.dtype)

    def _nat(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """y = b + (1 - alpha) V(h_pos) + alpha V(h_neg), see :func:`integration_gate`."""
        if self.recompute_gate and torch.is_grad_enabled():
            # Keep only x for backward and recompute the whole layer there (base product,
            # adapters, dropout with the same random draw, gate): the gate's activations
            # would otherwise cost several d- and width-wide tensors per token and layer.
            return checkpoint(self._gate, x, args, kwargs, use_reentrant=False)
        return self._gate(x, args, kwargs)

    def _gate(self, x: torch.Tensor, args, kwargs) -> torch.Tensor:
        gated = self.gated_adapters()
        if len(gated) != 1:
            raise RuntimeError(f"'nat' mode needs exactly one gated adapter, found {gated}")
        pos = gated[0]
        cfg = self.gate_config[pos]
        neg = cfg.partner
        base = self.base_layer(x, *args, **kwargs)
        xa = self._cast_input_dtype(x, self.lora_A[pos].weight.dtype)
        ax_pos = self.lora_A[pos](self.lora_dropout[pos](xa))
        # The partner is a frozen, fully trained adapter: evaluated as at inference.
        ax_neg = self.lora_A[neg](xa)
        y = integration_gate_lowrank(
            xa, base.to(xa.dtype), ax_pos, ax_neg, self.lora_B[pos].weight * self.scaling[pos],
            self.lora_B[neg].weight * self.scaling[neg], self.lora_gate_query[pos],
            self.lora_gate_key[pos], self.lora_gate_value_in[pos],
            self.lora_gate_value_out[pos], cfg.beta, cfg.temperature)
        return y.to(base.dtype)

    def __repr__(self) -> str:
        return "gated_" + super().__repr__()


# -- peft glue -----------------------------------------------------------------------------

def lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.05,
                target_modules: list[str] | None = None) -> LoraConfig:
    """A causal-LM ``LoraConfig`` whose layers are :class:`GatedLoraLinear`."""
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=target_modules, task_type="CAUSAL_LM", bias="none")
    cfg._register_custom_module({nn.Linear: GatedLoraLinear})
    return cfg


def gated_layers(model: nn.Module) -> list[GatedLoraLinear]:
    return [m for m in model.modules() if isinstance(m, GatedLoraLinear)]


def set_gate_recompute(model: nn.Module, on: bool) -> None:
    """Recompute the "nat" layers in backward (less memory, a little more time; default)."""
    for layer in gated_layers(model):
        layer.recompute_gate = on


def set_mode(model: nn.Module, mode: str | None) -> None:
    """Set the mode of every adapted layer (None: peft's own active-adapter behaviour)."""
    layers = gated_layers(model)
    if mode == BASE and not layers:
        return  # a model without adapters is the base
    if mode is not None and not layers:
        raise ValueError("the model has no distill LoRA layers; create adapters with "
                         "distill.adapters.lora_config()")
    if mode not in (None, BASE, NAT):
        missing = [i for i, layer in enumerate(layers) if mode not in layer.lora_A]
        if missing:
            raise ValueError(f"mode {mode!r}: no adapter of that name "
                             f"(have {sorted(layers[0].lora_A)})")
    if mode == NAT and not any(layer.gated_adapters() for layer in layers):
        raise ValueError("mode 'nat': the model has no integration gates (load a NAT model)")
    for layer in layers:
        layer.mode = mode


@contextmanager
def adapter_mode(model: nn.Module, mode: str | None) -> Iterator[nn.Module]:
    """Run ``model`` as the base alone (``"base"``), with one adapter (its name), or as the
    NAT model (``"nat"``), restoring the previous modes on exit::

        with adapter_mode(model, "neg"), torch.no_grad():
            p_neg = model(**batch).logits

    Under gradient checkpointing, run the backward pass inside the same mode."""
    layers = gated_layers(model)
    saved = [layer.mode for layer in layers]
    set_mode(model, mode)
    try:
        yield model
    finally:
        for layer, m in zip(layers, saved):
            layer.mode = m


def add_gates(peft_model, adapter: str = POS, cfg: GateConfig = GateConfig()) -> int:
    """Attach an integration gate to ``adapter`` in every adapted layer; returns how many."""
    layers = [layer for layer in gated_layers(peft_model) if adapter in layer.lora_A]
    if not layers:
        raise ValueError(f"no adapted layer has adapter {adapter!r}")
    for layer in layers:
        layer.add_gate(adapter, cfg)
    return len(layers)


def gate_config_of(peft_model, adapter: str = POS) -> GateConfig:
    for layer in gated_layers(peft_model):
        if adapter in layer.gate_config:
            return layer.gate_config[adapter]
    raise ValueError(f"adapter {adapter!r} has no integration gate")


def adapter_param_names(model: nn.Module, adapter: str) -> list[str]:
    """Names of the parameters belonging to ``adapter`` (LoRA A/B and its gate), found the
    way peft itself filters adapter keys."""
    return [n for n, _ in model.named_parameters() if f".{adapter}." in n]


def train_only(model: nn.Module, adapters: list[str]) -> list[str]:
    """Make exactly the parameters of ``adapters`` trainable; everything else frozen.
    Returns the trainable parameter names."""
    names = set()
    for a in adapters:
        names.update(adapter_param_names(model, a))
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    if not names:
        raise ValueError(f"no parameters belong to adapters {adapters}")
    return sorted(names)


def save_adapter(peft_model, adapter: str, out: str | Path) -> Path:
    """Save one adapter in peft's format into the directory ``out`` (adapter_config.json +
    adapter_model.safetensors, gate included, plus ``nat_gate.json`` when it has a gate).
    Other files in ``out`` are kept; the weights file is moved in last, so a directory with
    both files holds a complete adapter."""
    import os
    import shutil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".saving-{adapter}"
    if tmp.exists():
        shutil.rmtree(tmp)
    peft_model.save_pretrained(str(tmp), selected_adapters=[adapter])
    # peft writes a non-default adapter into a subdirectory named after it.
    src = tmp / adapter if (tmp / adapter).is_dir() else tmp
    if any(adapter in layer.gate_config for layer in gated_layers(peft_model)):
        (src / GATE_FILE).write_text(json.dumps(asdict(gate_config_of(peft_model, adapter)),
                                                indent=2))
    files = sorted(src.iterdir(), key=lambda f: f.name == "adapter_model.safetensors")
    for f in files:
        os.replace(f, out / f.name)
    shutil.rmtree(tmp)
    return out


def saved_lora_config(path: str | Path) -> LoraConfig:
    """The :func:`lora_config` of the adapter saved in the directory ``path``."""
    from curator.errors import CuratorError

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise CuratorError(f"{path}: not a peft adapter directory (no adapter_config.json)")
    saved = LoraConfig.from_pretrained(str(path))
    return lora_config(saved.r, saved.lora_alpha, saved.lora_dropout,
                       sorted(saved.target_modules) if saved.target_modules else None)


def load_adapter(peft_model, path: str | Path, adapter: str, trainable: bool = False) -> None:
    """Load an adapter saved by :func:`save_adapter` (or any peft LoRA adapter) into an
    existing peft model under the name ``adapter``, gate included, strictly: every saved
    tensor must find its parameter and vice versa."""
    path = Path(path)
    cfg = saved_lora_config(path)
    cfg.inference_mode = not trainable
    was_training = peft_model.training
    peft_model.add_adapter(adapter, cfg)
    # New submodules (dropout) are created in training mode; match the model's mode.
    peft_model.train(was_training)
    gate_file = path / GATE_FILE
    if gate_file.is_file():
        add_gates(peft_model, adapter, GateConfig(**json.loads(gate_file.read_text())))
    load_adapter_weights(peft_model, path, adapter)


def load_adapter_weights(peft_model, path: str | Path, adapter: str) -> None:
    """Overwrite the weights of the existing adapter ``adapter`` (gate included) with
    those saved in ``path``, strictly, without touching ``requires_grad``."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    from curator.errors import CuratorError

    weights_file = Path(path) / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise CuratorError(f"{path}: no adapter_model.safetensors")
    state = load_file(str(weights_file))
    result = set_peft_model_state_dict(peft_model, state, adapter_name=adapter)
    missing = [k for k in result.missing_keys if f".{adapter}." in k]
    if result.unexpected_keys or missing:
        raise CuratorError(f"{path}: adapter does not match the model: "
                           f"missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")


def check_peft_extension() -> None:
    """Assert that the peft internals this module builds on still behave as assumed.
    Raises RuntimeError naming the broken assumption (e.g. after a peft upgrade)."""
    import inspect

    import peft
    from peft.tuners.lora.layer import LoraLayer
    from peft.tuners.lora.model import LoraModel

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise RuntimeError(f"peft {peft.__version__} is incompatible with distill's NAT "
                               f"layer: {what}")

    need(hasattr(LoraConfig, "_register_custom_module"),
         "LoraConfig._register_custom_module (custom LoRA layer hook) is gone")
    need("_custom_modules" in inspect.getsource(LoraModel._create_new_module),
         "LoraModel._create_new_module no longer dispatches config._custom_modules")
    need(isinstance(LoraLayer.adapter_layer_names, tuple)
         and {"lora_A", "lora_B"} <= set(LoraLayer.adapter_layer_names),
         "LoraLayer.adapter_layer_names is no longer a tuple naming lora_A/lora_B")
    params = inspect.signature(lora_layer.Linear.__init__).parameters
    need(list(params)[1:3] == ["base_layer", "adapter_name"],
         f"lora.Linear.__init__ signature changed: {list(params)}")
    for attr in ("_cast_input_dtype", "update_layer", "forward", "merged", "set_adapter",
                 "delete_adapter", "_move_adapter_to_device_of_base_layer"):
        need(hasattr(lora_layer.Linear, attr), f"lora.Linear lost {attr}")
    # Structural check on a real layer: containers keyed by adapter name, as assumed.
    lin = nn.Linear(4, 3)
    layer = GatedLoraLinear(lin, "a", config=lora_config(r=2, alpha=4, dropout=0.0),
                            r=2, lora_alpha=4)
    need(isinstance(layer.lora_A, nn.ModuleDict) and "a" in layer.lora_A
         and isinstance(layer.scaling, dict) and layer.scaling["a"] == 2.0,
         "lora.Linear no longer keeps lora_A/lora_B/scaling keyed by adapter name")
    need(all(p in layer._modules for p in layer.gate_parts) and layer.mode is None,
         "gate containers were lost during peft's __init__")
    layer.add_gate("a", GateConfig(width=2, partner="a"))
    layer.delete_adapter("a")
    need("a" not in layer.lora_gate_query and "a" not in layer.gate_config,
         "peft's delete_adapter no longer walks adapter_layer_names/other_param_names")
