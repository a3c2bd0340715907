"""Whitelists: unknown keys with did-you-mean, coercion, aliases, every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from lazytune.errors import OptionsError, OptionTypeError, UnknownOptionError
from lazytune.options import Option, OptionSpec

SPEC = OptionSpec("demo", [
    Option("learning_rate", float, 1e-4, minimum=0),
    Option("gradient_accumulation_steps", int, 1, aliases=("gradient_step",), minimum=1),
    Option("per_device_train_batch_size", int, 2, aliases=("micro_batch_size",), minimum=1),
    Option("bf16", bool, None),
    Option("lora_target", list, None, aliases=("lora_target_modules",)),
    Option("stage", str, "sft", choices=("pt", "sft", "dpo")),
    Option("extra", dict, None),
    Option("deepspeed", Path, None),
])  # fmt: skip


def test_unknown_key_did_you_mean() -> None:
    with pytest.raises(UnknownOptionError) as info:
        SPEC.validate({"learnig_rate": 1e-3})
    msg = str(info.value)
    assert "learnig_rate" in msg and "did you mean 'learning_rate'" in msg and "demo" in msg


def test_all_problems_at_once() -> None:
    with pytest.raises(OptionsError) as info:
        SPEC.validate({"learnig_rate": 1, "gradient_step": "x", "stage": "sftt", "bf16": "maybe"})
    assert len(info.value.problems) == 4
    assert "one of 'pt', 'sft', 'dpo'" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("learning_rate", "2e-4", 2e-4),
        ("learning_rate", 1, 1.0),
        ("gradient_step", "4", 4),
        ("gradient_step", 4.0, 4),
        ("micro_batch_size", 8, 8),
        ("bf16", "true", True),
        ("bf16", "No", False),
        ("lora_target_modules", "[q_proj, v_proj]", ["q_proj", "v_proj"]),
        ("lora_target_modules", "q_proj,v_proj", ["q_proj", "v_proj"]),
        ("lora_target", ("a", "b"), ["a", "b"]),
        ("extra", '{"a": 1}', {"a": 1}),
        ("deepspeed", "~/ds.json", str(Path("~/ds.json").expanduser())),
    ],
)
def test_coercion_and_aliases(key: str, value: object, expected: object) -> None:
    name = SPEC.canonical(key)
    assert SPEC.validate({key: value}) == {name: expected}


@pytest.mark.parametrize(
    ("key", "value"),
    [("learning_rate", True), ("gradient_step", 2.5), ("gradient_step", True), ("bf16", 1), ("stage", 3),
     ("gradient_step", 0), ("learning_rate", -1.0), ("lora_target", {"a": 1}), ("per_device_train_batch_size", -2)],
)  # fmt: skip
def test_wrong_types_and_ranges(key: str, value: object) -> None:
    with pytest.raises(OptionTypeError) as info:
        SPEC.validate({key: value})
    assert repr(key) in str(info.value)


def test_alias_and_name_both_given() -> None:
    with pytest.raises(OptionsError, match="both set"):
        SPEC.validate({"gradient_step": 2, "gradient_accumulation_steps": 4})


def test_defaults_and_resolve() -> None:
    resolved = SPEC.resolve({"gradient_step": 8})
    assert resolved["gradient_accumulation_steps"] == 8 and resolved["learning_rate"] == 1e-4
    assert "bf16" not in resolved  # None default: the backend's own default applies
    assert "learning_rate" in SPEC.describe()


def test_declaring_twice_is_an_error() -> None:
    with pytest.raises(ValueError):
        OptionSpec("x", [Option("a"), Option("b", aliases=("a",))])
