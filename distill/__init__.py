"""`distill`: train student language models from `curator export` files.

Reading order for a newcomer (the layout is described in docs/distill.md):

Shared pieces
- :mod:`distill.data`        export/eval files -> validated records -> prompt/completion ids
- :mod:`distill.collate`     batches with ``labels = -100`` on prompt and padding
- :mod:`distill.models`      load any causal LM + tokenizer, LoRA configuration
- :mod:`distill.adapters`    LoRA adapters with modes (base, one adapter, "nat"), save/load
- :mod:`distill.losses`      the baselines' losses as small pure functions
- :mod:`distill.run`         the config and ``Trainer`` every method extends; job steps
- :mod:`distill.knobs`       training knobs (CLI options, compare configs) -> a config
- :mod:`distill.tracking`    ``--report-to``: experiment trackers writing into OUT
- :mod:`distill.student`     what an output directory holds; loading it as a student
- :mod:`distill.generate`    batched sampling into JSONL that ``curator import jsonl`` reads
- :mod:`distill.evaluate`    sample, grade, vote with every rule, report accuracy

The methods, one module or package each
- :mod:`distill.baselines`   sft, mix, nt, ul, cl: one trainer per method, ``distill train``
- :mod:`distill.preference`  dpo, kto: TRL's DPO and KTO trainers on the same data and knobs
- :mod:`distill.nat`         NAT: the integration gate (``nat.gate``), trainers and job
- :mod:`distill.nce`         NCE: the loss as trained (``nce.loss``), trainer, betas, job
- :mod:`distill.asc`         ASC: the ranker (``asc.ranker``) and the vote (``asc.voting``)

Around them
- :mod:`distill.compare`     the paper's comparison table from one config file
- :mod:`distill.tiny`        a tiny local Llama model and tokenizer for tests and demos
- :mod:`distill.gguf`        a GGUF model turned into a transformers directory for --base
- :mod:`distill.cli`, :mod:`distill.cli_asc`, :mod:`distill.cli_options`
                             the ``distill`` command line (thin wrappers over the above)

Heavy dependencies (torch, transformers, peft) are imported by these modules, never by
``distill.cli`` at import time, so ``distill --help`` stays fast.
"""
