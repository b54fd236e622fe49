"""Prompt templates: text with named slots such as `{subject}`, checked before a trend can go live."""

from __future__ import annotations

import string

# The slots a generation fills in (the shot planner of the generations app writes them).
PROMPT_SLOTS: dict[str, str] = {
    "subject": "the person: their Soul ID or selfie, described for the model",
    "user_prompt": "what the user typed on top of the trend, if anything",
    "camera": "camera body and lens",
    "movement": "the camera movement with its strength",
    "lighting": "lighting",
    "mood": "colour and mood",
}


def template_problems(template: str, *, needs_subject: bool) -> list[str]:
    """What is wrong with a prompt template, in words a curator can act on; empty when it is fine."""
    template = template or ""
    if not template.strip():
        return ["The prompt template is empty."]
    try:
        fields = [name for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
        specs = [(spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name]
    except ValueError as exc:
        return [
            f"The prompt template does not parse ({exc}); write slots as {{subject}}, and {{{{ for a brace."
        ]
    problems = []
    if any(name == "" or name.isdigit() for name in fields):
        problems.append("The prompt template has an empty or numbered slot; name every slot, like {subject}.")
    unknown = sorted({name for name in fields if name and not name.isdigit() and name not in PROMPT_SLOTS})
    if unknown:
        problems.append(
            "The prompt template uses unknown slots: "
            + ", ".join("{" + name + "}" for name in unknown)
            + ". Known slots: "
            + ", ".join("{" + name + "}" for name in PROMPT_SLOTS)
            + "."
        )
    if any(spec or conv for spec, conv in specs):
        problems.append("Slots cannot carry a format or conversion (like {subject!r}); write just {subject}.")
    if needs_subject and "subject" not in fields:
        problems.append("This trend uses the person's face, so its prompt template needs the {subject} slot.")
    return problems


def template_render(template: str, **slots: str) -> str:
    """The prompt with its slots filled; a missing slot becomes empty text."""
    values = {name: slots.get(name, "") for name in PROMPT_SLOTS}
    return " ".join(template.format(**values).split())
