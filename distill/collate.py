"""Collators: lists of encoded rationales -> padded tensors with ``labels``.

``labels`` is ``input_ids`` with -100 on padding (never trained on) and, unless
``train_on_prompt`` (what the paper's code did), on the prompt. Padding is located by
length, not by token id, because many tokenizers use EOS as the pad token and the EOS
that ends a rationale must stay a target.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100


def build_batch(seqs: list[list[int]], prompt_lengths: list[int], pad_id: int,
                train_on_prompt: bool = False, left_pad: bool = False) -> dict:
    """``input_ids``, ``attention_mask`` and ``labels`` for a list of sequences."""
    import torch
    width = max(len(s) for s in seqs)
    n = len(seqs)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    for i, (s, p) in enumerate(zip(seqs, prompt_lengths)):
        start = width - len(s) if left_pad else 0
        t = torch.tensor(s, dtype=torch.long)
        input_ids[i, start:start + len(s)] = t
        attention[i, start:start + len(s)] = 1
        first_target = 0 if train_on_prompt else p
        labels[i, start + first_target:start + len(s)] = t[first_target:]
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


@dataclass
class RationaleCollator:
    """Rows of :func:`distill.data.rationale_dataset` -> one batch. Adds ``is_negative``
    (bool per row) so that methods mixing positives and negatives see both in one
    forward pass."""
    pad_id: int
    train_on_prompt: bool = False

    def __call__(self, rows: list[dict]) -> dict:
        import torch
        batch = build_batch([r["input_ids"] for r in rows], [r["prompt_length"] for r in rows],
                            self.pad_id, self.train_on_prompt)
        batch["is_negative"] = torch.tensor([bool(r.get("is_negative", False)) for r in rows])
        return batch


@dataclass
class GroupCollator:
    """Rows of :func:`distill.data.group_dataset` (one problem, several candidates) ->
    one flat batch with ``group`` (index of the problem within the batch per row)."""
    pad_id: int
    train_on_prompt: bool = False

    def __call__(self, rows: list[dict]) -> dict:
        import torch
        seqs, prompts, neg, group = [], [], [], []
        for g, r in enumerate(rows):
            seqs += r["input_ids"]
            prompts += r["prompt_length"]
            neg += r["is_negative"]
            group += [g] * len(r["input_ids"])
        batch = build_batch(seqs, prompts, self.pad_id, self.train_on_prompt)
        batch["is_negative"] = torch.tensor(neg, dtype=torch.bool)
        batch["group"] = torch.tensor(group, dtype=torch.long)
        return batch
