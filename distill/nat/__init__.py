"""NAT, Negative Assistant Training (METHOD.md step 1).

- :mod:`distill.nat.gate`     the dynamic integration gate: formula, config, computation
- :mod:`distill.nat.trainer`  ``NATConfig``, the stage-1/stage-2 trainers, ``train_nat``

Kept free of imports: :mod:`distill.adapters` imports the gate, and the trainer imports
:mod:`distill.adapters`.
"""
