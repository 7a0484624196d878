"""`distill`: train student language models from `curator export` files.

Reading order for a newcomer:

- :mod:`distill.data`     export/eval files -> validated records -> prompt/completion token ids
- :mod:`distill.collate`  batches with ``labels = -100`` on prompt and padding
- :mod:`distill.models`   load any causal LM + tokenizer, LoRA configuration
- :mod:`distill.losses`   the loss of every method as small pure functions
- :mod:`distill.trainers` one ``transformers.Trainer`` subclass per method
- :mod:`distill.nat`      NAT: the ``neg``/``pos`` adapters, the integration gate, modes
- :mod:`distill.train`    the training jobs behind ``distill train`` and ``distill nat``
- :mod:`distill.generate` batched sampling into JSONL that ``curator import jsonl`` reads
- :mod:`distill.tiny`     a tiny local Llama model and tokenizer for tests and demos
- :mod:`distill.cli`      the ``distill`` command line (thin wrappers over the above)

Heavy dependencies (torch, transformers, peft) are imported by these modules, never by
``distill.cli`` at import time, so ``distill --help`` stays fast.
"""
