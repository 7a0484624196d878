"""A tiny, randomly initialised Llama-architecture model and a byte-level BPE tokenizer,
built locally with no download, for tests, benchmarks and the offline demo.

The tokenizer is trained on the demo teacher rationales shipped in ``curator/demo`` so
that math text tokenises to a realistic number of tokens; the model is random, so what it
generates is noise until trained.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass
from pathlib import Path

DEMO_TEXT = Path(__file__).resolve().parent.parent / "curator" / "demo" / "tdg_gpt4_200.jsonl.gz"

PAD, BOS, EOS, USER, ASSISTANT = "<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>"

# A minimal chat format: the tokenizer's chat template is what `--chat-template` uses.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyShape:
    """Size of the tiny model. ``kv_heads < heads`` gives grouped-query attention, where
    ``k_proj``/``v_proj`` are narrower than ``q_proj`` (the case the paper's code broke on)."""
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 4
    intermediate: int = 128
    vocab: int = 2048
    max_positions: int = 2048
    digits: bool = False          # one token per digit (see build_tokenizer)


def demo_texts(path: Path = DEMO_TEXT) -> list[str]:
    """Questions, reference solutions and teacher rationales from the demo TDG slice."""
    texts = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            texts.append(rec["question"])
            texts.append(rec["answer"])
            texts.extend(rec["generated_answer"])
    return texts


def build_tokenizer(texts: list[str], vocab_size: int = 2048, digits: bool = False):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers, with
    pad/bos/eos tokens, a BOS post-processor and a chat template.

    ``digits``: every digit is a token of its own (``4738`` -> ``4 7 3 8``, never merged
    with a neighbour or a space), which arithmetic needs; otherwise BPE merges digits into
    arbitrary chunks (``47 38``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), byte_level]) if digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS, USER, ASSISTANT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS)
    # Like Llama's tokenizer: plain text gets a BOS in front (add_special_tokens=True).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        chat_template=CHAT_TEMPLATE, model_max_length=2048)


def random_llama(shape: TinyShape, tokenizer, seed: int):
    """A randomly initialised ``LlamaForCausalLM`` of ``shape`` over ``tokenizer``'s
    vocabulary (tied embeddings, the tokenizer's pad/bos/eos ids), seeded with ``seed``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=shape.hidden,
        intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def init_tiny(out: str | Path, shape: TinyShape = TinyShape(), seed: int = 0,
              texts: list[str] | None = None) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` and its tokenizer to ``out`` (a directory
    that ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer`` load)."""
    from curator.errors import CuratorError

    if shape.heads % shape.kv_heads:
        raise CuratorError(f"--heads ({shape.heads}) must be a multiple of --kv-heads "
                           f"({shape.kv_heads})")
    if shape.hidden % shape.heads:
        raise CuratorError(f"--hidden ({shape.hidden}) must be a multiple of --heads "
                           f"({shape.heads})")
    from curator.paths import guard_output
    from distill.outputs import TINY_OUT

    # absent, empty or an earlier tiny model (replaced); never someone else's files, a
    # pre-trained model, or a folder holding a DuckDB database
    out = guard_output(out, TINY_OUT, option="OUT")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(texts if texts is not None else demo_texts(), shape.vocab,
                                digits=shape.digits)
    model = random_llama(shape, tokenizer, seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "tiny_shape.json").write_text(json.dumps({**asdict(shape), "seed": seed}, indent=2))
    return out
