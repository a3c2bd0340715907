"""Whitelisted, typed keyword options shared by all backends.

A backend declares an `OptionSpec` (a list of `Option`). `spec.validate(kw)` returns the coerced values or raises
one error listing every problem: unknown keys (with did-you-mean), wrong types, bad choices, out-of-range numbers.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OptionsError, OptionTypeError, UnknownOptionError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Option:
    """One allowed keyword: name, type (int, float, str, bool, list, dict, Path), default, help.

    `aliases` are other accepted spellings (e.g. LazyLLM's names). `choices` restricts values; `minimum` is an
    inclusive lower bound for numbers. A default of None means "not set": the backend's own default applies.
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    aliases: tuple[str, ...] = ()
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None

    @property
    def type_name(self) -> str:
        return {list: "list of str", dict: "dict", Path: "path"}.get(self.type, self.type.__name__)

    def coerce(self, value: Any) -> Any:
        """The value converted to this option's type; ValueError with a short reason when it can't be."""
        if value is None:
            return None
        converted = _convert(self.type, value)
        if self.choices is not None and converted not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(repr, self.choices))}")
        if self.minimum is not None and isinstance(converted, (int, float)) and converted < self.minimum:
            raise ValueError(f"must be >= {self.minimum}")
        return converted


@dataclass(frozen=True)
class ChoiceOption(Option):
    """An option with choices whose error says which choice was probably meant."""

    def coerce(self, value: Any) -> Any:
        try:
            return super().coerce(value)
        except ValueError as exc:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices or ()], n=2, cutoff=0.5)
            raise ValueError(f"{exc}; did you mean {' or '.join(map(repr, close))}?" if close else str(exc)) from None


def _convert(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("expected a bool (True/False)")
    if kind is int:
        if isinstance(value, bool):
            raise ValueError("expected an int, got a bool")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError("expected an int")
    if kind is float:
        if isinstance(value, bool):
            raise ValueError("expected a number, got a bool")
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if number is None:
            raise ValueError("expected a number")
        if not math.isfinite(number):
            raise ValueError("expected a finite number")
        return number
    if kind is str:
        if isinstance(value, str):
            return value
        raise ValueError("expected a str")
    if kind is Path:
        if isinstance(value, (str, Path)) and str(value):
            return str(Path(value).expanduser())
        raise ValueError("expected a path")
    if kind is list:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            items = [p.strip().strip("'\"") for p in text.split(",")]
            return [p for p in items if p]
        if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
            return [str(v) for v in value]
        raise ValueError("expected a list of str or 'a,b'")
    if kind is dict:
        if isinstance(value, Mapping):
            return dict(value)
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict):
                return parsed
        raise ValueError("expected a dict (or a JSON object string)")
    if isinstance(value, kind):
        return value
    raise ValueError(f"expected {kind.__name__}")


class OptionSpec:
    """A backend's whitelist of options."""

    def __init__(self, backend: str, options: Iterable[Option]):
        self.backend = backend
        self.options: dict[str, Option] = {}
        self._alias_of: dict[str, str] = {}
        for opt in options:
            if opt.name in self.options or opt.name in self._alias_of:
                raise ValueError(f"{backend}: option {opt.name!r} declared twice")
            self.options[opt.name] = opt
        for opt in self.options.values():
            for alias in opt.aliases:
                if alias in self.options or alias in self._alias_of:
                    raise ValueError(f"{backend}: alias {alias!r} clashes")
                self._alias_of[alias] = opt.name

    def __contains__(self, key: str) -> bool:
        return key in self.options or key in self._alias_of

    def __iter__(self):
        return iter(self.options.values())

    def canonical(self, key: str) -> str | None:
        """The option name for a key or alias, None if unknown."""
        return key if key in self.options else self._alias_of.get(key)

    def suggestions(self, key: str, n: int = 3) -> list[str]:
        words = list(self.options) + list(self._alias_of)
        close = difflib.get_close_matches(key, words, n=n, cutoff=0.6)
        if not close:  # a key that is a prefix/part of a real one ("lora" -> lora_rank, lora_alpha ...)
            close = [w for w in words if key.lower() in w.lower()][:n]
        return close

    def unknown_message(self, key: str, what: str = "option") -> str:
        close = self.suggestions(key)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {what} {key!r} for {self.backend}{hint}"

    def validate(self, values: Mapping[str, Any], source: str = "") -> dict[str, Any]:
        """Coerce `values` (keys may be aliases) into {name: value}. Raises listing every problem at once."""
        unknown, bad = [], []
        out: dict[str, Any] = {}
        given_as: dict[str, str] = {}
        where = f" (in {source})" if source else ""
        for key, value in values.items():
            name = self.canonical(key)
            if name is None:
                unknown.append(self.unknown_message(key) + where)
                continue
            if name in given_as:
                bad.append(f"{key!r} and {given_as[name]!r} both set {name!r}{where}; pass only one")
                continue
            given_as[name] = key
            opt = self.options[name]
            try:
                out[name] = opt.coerce(value)
            except ValueError as exc:
                bad.append(f"{key!r}{where}: {exc}, got {value!r}")
        problems = unknown + bad
        if problems:
            raise (UnknownOptionError if unknown else OptionTypeError)(self.backend, problems)
        return out

    def defaults(self) -> dict[str, Any]:
        """{name: default} for options whose default is set."""
        return {o.name: o.default for o in self.options.values() if o.default is not None}

    def resolve(self, values: Mapping[str, Any], source: str = "") -> dict[str, Any]:
        """Defaults overlaid with the validated `values`."""
        return {**self.defaults(), **self.validate(values, source)}

    def describe(self) -> str:
        """A table of every option: name, type, default, help (for --help and the README)."""
        rows = []
        for o in self.options.values():
            alias = f" (alias: {', '.join(o.aliases)})" if o.aliases else ""
            rows.append(f"  {o.name:<32} {o.type_name:<10} default={o.default!r}  {o.help}{alias}")
        return "\n".join(rows)


def raise_problems(backend: str, problems: list[str]) -> None:
    """Raise an OptionsError for backend-level cross-checks (e.g. incompatible combinations)."""
    if problems:
        raise OptionsError(backend, problems)
