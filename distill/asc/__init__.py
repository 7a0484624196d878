"""ASC, Adaptive Self-Consistency (METHOD.md step 3).

- :mod:`distill.asc.ranker`  the ranking model s(question, rationale) in [0, 1]: pairs,
  loss, trainer, ``train_ranker`` and :class:`~distill.asc.ranker.Ranker` for scoring
- :mod:`distill.asc.voting`  the vote: greedy, first sample, self-consistency, weighted SC
  and the ASC weightings 1, 1+s, 1+2s, s

:mod:`distill.evaluate` samples, grades, scores and votes with these rules.
"""
