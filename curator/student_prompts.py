"""The student's prompt: how a question becomes the prompt a student is trained on.

Shared by `distill` (which tokenizes it) and `curator export --layout sft|preference|
unpaired` (which writes it as text or chat messages for other trainers), so that a
student trained by either sees the same prompt. Pure Python: no torch, no tokenizer.

* plain text: ``template.format(question=...)``, by default :data:`DEFAULT_TEMPLATE`;
* chat: the question as the user turn, optionally after the system and few-shot turns of
  a prompt template (:mod:`curator.teachers.prompts`); the tokenizer's chat template
  renders it.
"""

from __future__ import annotations

from curator.errors import CuratorError

DEFAULT_TEMPLATE = "Question: {question}\nAnswer: "


def check_template(template: str) -> str:
    """A plain prompt template must use ``{question}`` and nothing else in braces."""
    if "{question}" not in template:
        raise CuratorError(f"--prompt-template must contain {{question}}: {template!r}")
    try:
        template.format(question="")
    except (KeyError, IndexError, ValueError) as exc:
        raise CuratorError(f"--prompt-template {template!r} cannot be filled in: it may use "
                           f"{{question}} only; write a literal brace as {{{{ or }}}} "
                           f"({type(exc).__name__}: {exc})") from None
    return template


def render_prompt(template: str, question: str) -> str:
    """The plain-text prompt for ``question`` (what `distill` tokenizes as the prompt)."""
    return template.format(question=question)


def chat_prompt(problem: dict, template=None) -> list[dict]:
    """Chat messages for one problem: the turns of ``template`` (a
    :class:`curator.teachers.prompts.Template`, with its system and few-shot turns)
    rendered for ``problem``, or, without one, the bare question as the only user turn
    (what ``distill --chat-template`` trains on)."""
    if template is None:
        return [{"role": "user", "content": problem["question"]}]
    return template.render(problem)
