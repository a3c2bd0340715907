"""What alpacalora and collie share: alpaca-lora style prompt templates (lazytune/scripts/templates/*.json, or a
user's JSON file with 'prompt_input' and 'prompt_no_input'), found and checked at plan time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import SCRIPTS

TEMPLATES = SCRIPTS / "templates"


def find_template(name: str) -> Path:
    """A shipped template name (alpaca, alpaca_legacy, alpaca_short, puyu, vigogne) or a template JSON file's path."""
    shipped = sorted(p.stem for p in TEMPLATES.glob("*.json"))
    if name in shipped:
        return TEMPLATES / f"{name}.json"
    path = Path(name).expanduser()
    if path.suffix == ".json" and path.is_file():
        return path.resolve()
    raise ConfigError(
        f"unknown prompt_template_name {name!r}: no such template (known: {', '.join(shipped)}, "
        "or the path of a JSON file with 'prompt_input' and 'prompt_no_input')"
    )


def load_template(path: Path) -> dict[str, Any]:
    """The template at `path`, checked: both prompts are strings with their {instruction} / {input} slots."""
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"prompt template {path}: cannot read it as JSON ({exc})") from None
    problems = []
    for key in ("prompt_input", "prompt_no_input"):
        text = template.get(key) if isinstance(template, dict) else None
        if not isinstance(text, str):
            problems.append(f"no {key!r} string")
        elif "{instruction}" not in text:
            problems.append(f"{key!r} has no {{instruction}} placeholder")
    if not problems and "{input}" not in template["prompt_input"]:
        problems.append("'prompt_input' has no {input} placeholder")
    if problems:
        raise ConfigError(f"prompt template {path}: {'; '.join(problems)}")
    return template
