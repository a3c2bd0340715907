"""Secrets: which environment variables are credentials, and keeping their values out of logs, scripts, manifests.

A variable is a secret when a part of its name is a credential word (HF_TOKEN, OPENAI_API_KEY, PGPASSWORD), but not
TOKENIZERS_PARALLELISM. Values shorter than 4 characters are never masked (they would mask ordinary text).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

# A credential word ending a name part: HF_TOKEN, OPENAI_API_KEY, PGPASSWORD, MY_APIKEY, but not TOKENIZERS_PARALLELISM.
SECRET_NAME = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)S?(_|$)", re.IGNORECASE)


def is_secret(name: str) -> bool:
    """Whether a variable name looks like a credential (TOKEN, KEY, SECRET, PASSWORD, ...)."""
    return bool(SECRET_NAME.search(name))


def mask_secret(name: str, value: str) -> str:
    """Hide the value of variables whose name looks like a credential."""
    return "***" if is_secret(name) else value


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-named variables in `env` (default os.environ), longest first."""
    env = os.environ if env is None else env
    return sorted({v for k, v in env.items() if v and len(v) >= 4 and is_secret(k)}, key=len, reverse=True)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace the values of secret-named variables appearing in `text` by ***."""
    return redact_data(text, secret_values(env))


def redact_data(value: Any, secrets: list[str]) -> Any:
    """`value` with every secret removed from its strings (structure kept, so the JSON stays valid)."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: redact_data(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v, secrets) for v in value]
    return value
