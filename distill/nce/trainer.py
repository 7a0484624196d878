"""NCE's config, data and trainer (METHOD.md step 2): self-distillation from the NAT model
into a fresh ``student`` LoRA on the positives. The loss is :mod:`distill.nce.loss`;
:meth:`NCETrainer.compute_loss` gathers what it needs from the model and calls it.

Where this differs from the released code, and why:

- **One copy of the base.** The teacher's passes ("nat", then "neg") and the student's run
  through the *same* model instance, switched by :func:`distill.adapters.adapter_mode`;
  the teacher's under ``torch.no_grad()`` and in eval mode (no dropout). The trainable set
  is asserted every step instead of being trusted (peft re-enables ``requires_grad`` in
  several of its adapter switches).
- **No full-vocabulary tensor.** The model runs with ``logits_to_keep=1``; its final hidden
  states are taken from the decoder, and only at the positions that count (completion
  tokens by default; every attended token with ``distill_all_tokens``, as the paper did);
  :func:`distill.nce.loss.nce_objective` computes the loss on them in chunks.
- **beta once.** beta depends only on the frozen teacher; ``precompute_beta`` computes
  every beta before training (saving the "neg" pass in every step) and stores it with the
  run (:class:`distill.nce.betas.BetaStore`, keyed by ``sample_id``; resumable).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import Trainer

from curator.errors import CuratorError
from distill import data as D
from distill.adapters import NAT, NEG, adapter_mode, adapter_param_names
from distill.collate import RationaleCollator
from distill.nce.loss import (_logits, auto_chunk, beta_from_kl, distill_positions, kl_rows,
                              nce_objective)
from distill.run import DistillConfig, DistillTrainer

if TYPE_CHECKING:
    from distill.nce.betas import BetaStore

STUDENT = "student"


# -- config, data, collator ------------------------------------------------------------------

@dataclass
class NCEConfig(DistillConfig):
    """NCE knobs on top of the shared ones. ``nce_lambda`` is the paper's lambda."""
    nce_lambda: float = 0.5
    nce_temperature: float = 1.0
    precompute_beta: bool = False
    distill_all_tokens: bool = False   # KD and beta over every attended token (the paper)
    nce_chunk_tokens: int = 0          # rows per chunk of distributions (0: ~64 MiB each)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.nce_lambda <= 1.0:
            raise CuratorError(f"--lambda must lie in [0, 1], got {self.nce_lambda}")
        if not self.nce_temperature > 0:
            raise CuratorError(f"--temperature must be > 0, got {self.nce_temperature}")
        if self.nce_chunk_tokens < 0:
            raise CuratorError(f"--chunk-tokens must be >= 0, got {self.nce_chunk_tokens}")


def nce_dataset(records: list[dict], tokenizer, fmt: D.PromptFormat, max_length: int,
                report: D.EncodeReport | None = None):
    """One row per positive rationale: ``input_ids``, ``prompt_length``, ``sample_id`` and
    ``row`` (its index, which the collator passes on so betas can be matched to samples)."""
    import datasets
    seen: set[str] = set()
    for r in records:
        if r["sample_id"] in seen:
            raise CuratorError(f"sample_id {r['sample_id']} occurs twice in the export; "
                               f"betas are keyed by it")
        seen.add(r["sample_id"])
    rows = D.encoded_rows(records, tokenizer, fmt, max_length, report,
                          {"sample_id": lambda r, _: r["sample_id"], "row": lambda _, kept: kept},
                          "there are no positives")
    return datasets.Dataset.from_dict(rows)


@dataclass
class NCECollator(RationaleCollator):
    """:class:`RationaleCollator` plus ``row`` (dataset index) and, when the rows carry a
    precomputed ``beta``, that beta."""

    def __call__(self, rows: list[dict]) -> dict:
        batch = super().__call__(rows)
        batch["row"] = torch.tensor([r["row"] for r in rows], dtype=torch.long)
        if "beta" in rows[0]:
            batch["beta"] = torch.tensor([r["beta"] for r in rows], dtype=torch.float32)
        return batch


# -- the trainer -------------------------------------------------------------------------------

class NCETrainer(DistillTrainer):
    """NCE with the global token normalisation of :class:`DistillTrainer`, for two counts:
    the CE targets and the distillation positions of the whole global batch (they differ
    with ``distill_all_tokens``). Each micro-batch's loss is
    ``((1 - lambda) ce_sum / N_ce + lambda kd_sum / N_kd) * world_size``."""

    mode = STUDENT

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        model = self.model
        self.trainable = set(adapter_param_names(model, STUDENT))
        self.check_trainable()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._decoder = base.get_decoder()
        self._head = base.get_output_embeddings()
        if not isinstance(self._head, torch.nn.Linear):
            raise CuratorError(f"NCE needs a plain linear output head; this model's is a "
                               f"{type(self._head).__name__}")
        if getattr(base.config, "final_logit_softcapping", None):
            raise CuratorError("NCE's chunked loss does not support logit soft-capping "
                               "(final_logit_softcapping) models")
        self._keep_arg = "logits_to_keep" in inspect.signature(base.forward).parameters
        self._head_checked = False
        self._stats = {"ce": 0.0, "kd": 0.0, "beta": 0.0, "n": 0}
        self.seen_betas: dict[int, tuple[float, float, int]] = {}
        # precomputed betas by dataset row when they cover only part of the dataset
        # (use_betas); a row missing there gets its beta computed when trained on
        self.known_betas: dict[int, float] | None = None

    # -- invariants
    def check_trainable(self) -> None:
        now = {n for n, p in self.model.named_parameters() if p.requires_grad}
        if now != self.trainable:
            extra, missing = sorted(now - self.trainable), sorted(self.trainable - now)
            raise RuntimeError(f"NCE: trainable parameters changed (only the student may "
                               f"train): now also {extra[:3]}, no longer {missing[:3]}")

    # -- counts
    def count_normaliser(self, batch: dict) -> torch.Tensor:
        ce, kd = distill_positions(batch["labels"], batch["attention_mask"],
                                   self.args.distill_all_tokens)
        return torch.stack([ce.sum(), kd.sum()])

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, _ = Trainer.get_batch_samples(self, epoch_iterator, num_batches, device)
        if not batch_samples:
            return batch_samples, None
        n = sum(self.count_normaliser(b) for b in batch_samples).to(device)
        if self.args.world_size > 1:
            n = self.accelerator.gather(n.view(1, 2)).view(-1, 2).sum(0)
        return batch_samples, n

    # -- passes
    def _autocast(self):
        dev = self.args.device.type
        return torch.autocast(dev, dtype=torch.bfloat16, enabled=bool(self.args.bf16))

    def _hidden(self, model, batch: dict) -> torch.Tensor:
        """Final hidden states ``[B, T, d]`` from one forward pass of ``model`` in its current
        mode; the LM head only runs on the last position."""
        captured = {}

        def grab(_m, _i, out):
            captured["h"] = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

        hook = self._decoder.register_forward_hook(grab)
        try:
            kw = {"logits_to_keep": 1} if self._keep_arg else {}
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        use_cache=False, **kw)
        finally:
            hook.remove()
        h = captured["h"]
        if not self._head_checked:
            self._check_head(h, out.logits)
        return h

    def _check_head(self, h: torch.Tensor, logits: torch.Tensor) -> None:
        """The chunked loss recomputes logits as head(hidden): refuse architectures whose
        logits are something else (scaled, capped)."""
        mine = _logits(h[:, -1].detach(), self._head.weight, self._head.bias)
        theirs = logits[:, -1].detach().float()
        tol = 5e-2 if mine.dtype != h.dtype or h.dtype != torch.float32 else 1e-4
        if not torch.allclose(mine, theirs, atol=tol * max(1.0, theirs.abs().max().item()),
                              rtol=tol):
            raise CuratorError("this model's logits are not its output embedding applied to "
                               "the decoder's last hidden state; NCE's chunked loss does not "
                               "support it")
        self._head_checked = True

    def _teacher_hidden(self, batch: dict, mode: str) -> torch.Tensor:
        """Final hidden states of the teacher in ``mode`` ("nat" or "neg"): same model
        instance, no gradient, eval mode (no dropout), student switched off by the mode."""
        model = self.model  # unwrapped: the teacher needs no DDP hooks
        was_training = model.training
        model.eval()
        try:
            with adapter_mode(model, mode), torch.no_grad(), self._autocast():
                return self._hidden(model, batch)
        finally:
            model.train(was_training)

    def teacher_betas(self, batch: dict, h_nat_sel: torch.Tensor | None = None,
                      sel: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(beta, mean_kl, n_tokens)`` per row of ``batch`` from the teacher's "neg" and
        "nat" passes, over the distillation positions. ``h_nat_sel`` (the "nat" hidden
        states at the positions ``sel``) saves the "nat" pass when already computed."""
        _, kd = distill_positions(batch["labels"], batch["attention_mask"],
                                  self.args.distill_all_tokens)
        if h_nat_sel is None:
            sel = kd
            h_nat_sel = self._teacher_hidden(batch, NAT)[:, :-1][kd]
        h_neg = self._teacher_hidden(batch, NEG)[:, :-1][sel]
        kd_in_sel = kd[sel]
        chunk = self._chunk()
        kl = kl_rows(h_neg[kd_in_sel], h_nat_sel[kd_in_sel], self._head.weight,
                     self._head.bias, chunk)
        del h_neg
        return beta_from_kl(kl, kd)

    def _chunk(self) -> int:
        return self.args.nce_chunk_tokens or auto_chunk(self._head.weight.shape[0])

    # -- the loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.model.training:
            self.check_trainable()
        args = self.args
        ce_mask, kd_mask = distill_positions(inputs["labels"], inputs["attention_mask"],
                                             args.distill_all_tokens)
        sel = ce_mask | kd_mask
        h_nat = self._teacher_hidden(inputs, NAT)[:, :-1][sel]
        rows = inputs["row"].tolist()
        known = self.known_betas
        if "beta" in inputs:
            beta = inputs["beta"].float()
        elif known is not None and all(r in known for r in rows):
            beta = torch.tensor([known[r] for r in rows], dtype=torch.float32,
                                device=h_nat.device)
        else:
            beta, mean_kl, n_kd_rows = self.teacher_betas(inputs, h_nat, sel)
            if self.model.training:
                for r, b, k, c in zip(rows, beta.tolist(), mean_kl.tolist(), n_kd_rows.tolist()):
                    self.seen_betas[r] = (b, k, c)
                    if known is not None:
                        known[r] = b
        h_student = self._hidden(model, inputs)[:, :-1][sel]

        if num_items_in_batch is None:  # evaluation: this micro-batch alone
            num_items_in_batch = self.count_normaliser(inputs)
            scale = 1
        else:
            scale = self.accelerator.num_processes
        n_ce, n_kd = num_items_in_batch.to(h_student.device).float().clamp(min=1).unbind()
        loss, ce_tok, kd_tok = nce_objective(
            h_student, h_nat, self._head.weight, self._head.bias, inputs["labels"][:, 1:],
            ce_mask, kd_mask, beta, args.nce_lambda, n_ce, n_kd, scale,
            args.nce_temperature, self._chunk())
        if self.model.training:
            s = self._stats
            s["ce"] += (ce_tok * ce_mask[sel]).sum().item() / max(1, int(ce_mask.sum()))
            s["kd"] += (kd_tok * kd_mask[sel]).sum().item() / max(1, int(kd_mask.sum()))
            s["beta"] += beta.mean().item()
            s["n"] += 1
        return (loss, {"loss": loss}) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Adds the mean CE, softCE and beta of the micro-batches since the last log (this
        process) to the training log."""
        s = self._stats
        if "loss" in logs and s["n"]:
            logs = {**logs, "nce_ce": s["ce"] / s["n"], "nce_softce": s["kd"] / s["n"],
                    "nce_beta": s["beta"] / s["n"]}
            self._stats = {"ce": 0.0, "kd": 0.0, "beta": 0.0, "n": 0}
        super().log(logs, *args, **kwargs)

    def gathered_seen_betas(self) -> dict[int, tuple[float, float, int]]:
        """Betas computed during online training, from every process."""
        if self.args.world_size <= 1:
            return dict(self.seen_betas)
        parts = [None] * self.args.world_size
        torch.distributed.all_gather_object(parts, self.seen_betas)
        merged: dict = {}
        for p in parts:
            merged.update(p)
        return merged

    # -- precomputed betas
    def rows_to_train(self) -> list[int] | None:
        """The dataset rows this process will train on, in the trainer's order, when
        ``max_steps`` ends the run within its first epoch; None when it reaches every row.
        Read from the trainer's own training dataloader (same sampler, same seed), with the
        global RNG state put back afterwards."""
        args = self.args
        if args.max_steps is None or args.max_steps <= 0:
            return None
        loader = self.get_train_dataloader()
        need = args.max_steps * args.gradient_accumulation_steps
        if need >= len(loader):
            return None
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        rows: list[int] = []
        try:
            for i, batch in enumerate(loader):
                if i >= need:
                    break
                rows.extend(batch["row"].tolist())
        finally:
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            prepared = getattr(self.accelerator, "_dataloaders", None)
            if isinstance(prepared, list) and loader in prepared:
                prepared.remove(loader)
        return list(dict.fromkeys(rows))

    def precompute_betas(self, store: "BetaStore", batch_size: int | None = None,
                         progress=None, rows: list[int] | None = None) -> dict[str, float]:
        """beta of every training sample (or of the dataset ``rows`` given: this process's
        share, e.g. :meth:`rows_to_train`), computed with the same teacher passes as online
        training (same positions, chunking, autocast), batch by batch, appended to ``store``
        as they come (an interrupted pass resumes where it stopped). Under several
        processes each computes a strided share (or its ``rows``). ``progress(k)`` is
        called after each batch of k. Returns ``{sample_id: beta}`` of every stored beta."""
        ds = self.train_dataset
        done = store.load()
        world, rank = self.args.world_size, self.args.process_index
        ids = list(ds["sample_id"])
        wanted = ids if rows is None else [ids[i] for i in rows]
        if rows is None:
            todo = [i for i, sid in enumerate(ids) if sid not in done and i % world == rank]
        else:
            todo = [i for i in rows if ids[i] not in done]
        # Batches of similar lengths: little padding (beta of a row does not depend on it).
        lengths = [len(x) for x in ds["input_ids"]]
        todo.sort(key=lambda i: lengths[i])
        bs = batch_size or self.args.per_device_train_batch_size
        device = self.args.device
        self.model.to(device)
        mine: dict[str, dict] = {}
        with adapter_mode(self.model, self.mode):
            for s in range(0, len(todo), bs):
                rows = [ds[i] for i in todo[s:s + bs]]
                batch = {k: v.to(device) if torch.is_tensor(v) else v
                         for k, v in self.data_collator(rows).items()}
                beta, mean_kl, n = self.teacher_betas(batch)
                recs = [{"sample_id": r["sample_id"], "beta": b, "mean_kl": k, "tokens": c}
                        for r, b, k, c in zip(rows, beta.tolist(), mean_kl.tolist(), n.tolist())]
                if rank == 0:
                    store.append(recs)
                else:
                    mine.update({r["sample_id"]: r for r in recs})
                if progress is not None:
                    progress(len(rows))
        if world > 1:
            parts = [None] * world
            torch.distributed.all_gather_object(parts, mine)
            if rank == 0:
                for p in parts[1:]:
                    store.append(list(p.values()))
            torch.distributed.barrier()
        done = store.load()
        missing = [sid for sid in wanted if sid not in done]
        if missing:
            raise RuntimeError(f"beta missing for {len(missing)} samples, e.g. {missing[0]}")
        return {sid: rec["beta"] for sid, rec in done.items()}

    def use_betas(self, betas: dict[str, float]) -> None:
        """Train with these betas (no "neg" pass in the steps they cover). Betas of only
        some samples are kept by row; a batch with a sample outside them computes its
        betas in its step (recorded in :attr:`seen_betas`) and keeps them."""
        ids = list(self.train_dataset["sample_id"])
        if all(sid in betas for sid in ids):
            self.known_betas = None
            self.train_dataset = self.train_dataset.add_column(
                "beta", [float(betas[sid]) for sid in ids])
        else:
            self.known_betas = {r: float(betas[sid]) for r, sid in enumerate(ids) if sid in betas}
