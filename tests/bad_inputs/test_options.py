"""Bad keyword options, for every backend: a clear error naming the key, raised before any process starts."""

from __future__ import annotations

import math

import pytest

import launchers
from lazytune import ConfigError, OptionTypeError, UnknownOptionError
from lazytune.options import Option

from .backends import ALL, expect_error
from .conftest import Workspace

pytestmark = pytest.mark.parametrize("ws", ALL, indirect=True)


def first(ws: Workspace, test) -> Option:
    """The first option of the backend's whitelist satisfying `test` (skip when there is none)."""
    for opt in ws.profile.cls().option_spec():
        if test(opt):
            return opt
    pytest.skip(f"{ws.profile.name} has no option of this kind")


def lr_name(ws: Workspace) -> str:
    return first(ws, lambda o: o.name == "learning_rate" or "learning_rate" in o.aliases).name


def test_typo_suggests_the_right_key(ws: Workspace) -> None:
    err = expect_error(ws.profile, ws.model, ws.target, ws.data, r"learning_rat'.*did you mean 'learning_rate'",
                       UnknownOptionError, learning_rat=1e-4)  # fmt: skip
    assert lr_name(ws)
    assert len(err.problems) == 1


def test_unknown_key(ws: Workspace) -> None:
    expect_error(ws.profile, ws.model, ws.target, ws.data, r"unknown option 'no_such_option_xyz'", UnknownOptionError,
                 no_such_option_xyz=1)  # fmt: skip


def test_int_given_a_word(ws: Workspace) -> None:
    opt = first(ws, lambda o: o.type is int)
    expect_error(ws.profile, ws.model, ws.target, ws.data, rf"'{opt.name}'.*expected an int.*'three'", OptionTypeError,
                 **{opt.name: "three"})  # fmt: skip


def test_int_given_a_bool(ws: Workspace) -> None:
    opt = first(ws, lambda o: o.type is int)
    expect_error(ws.profile, ws.model, ws.target, ws.data, rf"'{opt.name}'.*got a bool", OptionTypeError,
                 **{opt.name: True})  # fmt: skip


def test_float_given_a_list(ws: Workspace) -> None:
    expect_error(ws.profile, ws.model, ws.target, ws.data, r"'learning_rate'.*expected a number", OptionTypeError,
                 learning_rate=[1e-4])  # fmt: skip


@pytest.mark.parametrize("value", [math.nan, math.inf, "nan"])
def test_learning_rate_not_finite(ws: Workspace, value: object) -> None:
    expect_error(ws.profile, ws.model, ws.target, ws.data, r"'learning_rate'.*finite", OptionTypeError,
                 learning_rate=value)  # fmt: skip


def test_negative_size(ws: Workspace) -> None:
    opt = first(ws, lambda o: o.type is int and o.minimum is not None and o.minimum >= 0)
    expect_error(ws.profile, ws.model, ws.target, ws.data, rf"'{opt.name}'.*must be >=", OptionTypeError,
                 **{opt.name: -4})  # fmt: skip


def test_negative_learning_rate(ws: Workspace) -> None:
    opt = first(ws, lambda o: o.name == "learning_rate")
    if opt.minimum is None:
        pytest.fail(f"{ws.profile.name}: learning_rate has no lower bound")
    expect_error(ws.profile, ws.model, ws.target, ws.data, r"'learning_rate'.*must be >=", OptionTypeError,
                 learning_rate=-1e-4)  # fmt: skip


def test_value_not_among_choices(ws: Workspace) -> None:
    opt = first(ws, lambda o: o.choices is not None and o.type is str)
    expect_error(ws.profile, ws.model, ws.target, ws.data, rf"'{opt.name}'.*must be one of", OptionTypeError,
                 **{opt.name: "not-a-choice"})  # fmt: skip


def test_alias_and_name_together(ws: Workspace) -> None:
    opt = first(ws, lambda o: bool(o.aliases) and o.type in (int, float))
    expect_error(ws.profile, ws.model, ws.target, ws.data, r"both set", OptionTypeError,
                 **{opt.name: 2, opt.aliases[0]: 3})  # fmt: skip


def test_every_problem_reported_at_once(ws: Workspace) -> None:
    err = expect_error(ws.profile, ws.model, ws.target, ws.data, r"2 problem\(s\)", UnknownOptionError,
                       learning_rat=1e-4, learning_rate="fast")  # fmt: skip
    assert any("learning_rat'" in p for p in err.problems) and any("'fast'" in p for p in err.problems)


def test_overwrite_not_a_bool(ws: Workspace) -> None:
    expect_error(ws.profile, ws.model, ws.target, ws.data, r"overwrite must be True or False", overwrite="yes")


def test_launcher_given_as_a_string(ws: Workspace) -> None:
    expect_error(ws.profile, ws.model, ws.target, ws.data, r"launcher must be a launchers\.\* object",
                 launcher="local")  # fmt: skip


def test_launcher_with_negative_gpus(ws: Workspace) -> None:
    with pytest.raises(ValueError, match=r"ngpus must be a whole number >= 0"):
        launchers.local(ngpus=-1)
    assert issubclass(OptionTypeError, ConfigError)
