"""Teachers: sampling chain-of-thought rationales from LLM providers into the warehouse.

- :mod:`~curator.teachers.generate`: `curator generate` as a function (plan, dry run, run)
- :mod:`~curator.teachers.engine`: the asyncio engine (concurrency, limits, retries)
- :mod:`~curator.teachers.providers`: OpenAI / Anthropic / OpenAI-compatible adapters
- :mod:`~curator.teachers.limits`: rate pacing, backoff, endpoint fleet
- :mod:`~curator.teachers.journal`: the fsync'd journal that makes responses durable
- :mod:`~curator.teachers.store`: selecting problems, storing samples idempotently
- :mod:`~curator.teachers.prompts`: built-in and user prompt templates
- :mod:`~curator.teachers.pricing`: price table and cost
- :mod:`~curator.teachers.batch`: provider batch APIs (submit, status, collect, cancel)
"""
