"""What the model is told of the skills a container holds, in the description of the tool that runs code there
(as OpenAI does): each skill's name, description and the path of its ``SKILL.md``. Pure text, shared by every
tool over a container (the code interpreter, the hosted shell)."""

from __future__ import annotations

from collections.abc import Sequence

SKILLS_DIR = "/mnt/skills"


def skills_note(skills: Sequence[tuple[str, str]]) -> str:
    """The paragraph for ``(name, description)`` pairs; empty for none."""
    if not skills:
        return ""
    lines = [f"Skills are available, read-only, under {SKILLS_DIR}: each is a directory whose SKILL.md says how to "
             "use it. When a task matches a skill's description, read its SKILL.md first and follow it; run its "
             "scripts from where they are (write outputs under /mnt/data)."]
    lines += [f"- {name}: {' '.join(description.split())} ({SKILLS_DIR}/{name}/SKILL.md)"
              for name, description in skills]
    return "\n".join(lines)
