"""diffflow_core.validation: one rule for every parameter check (bools, NumPy scalars, NaN/inf, bounds, names)."""
from __future__ import annotations

import math

import attrs
import numpy as np
import pytest

from diffflow_core import validation as check
from diffflow_core.config import TrainConfig
from diffflow_core.errors import ConfigError

NUMBER_CHECKS = [lambda v: check.finite("x", v), lambda v: check.positive("x", v),
                 lambda v: check.non_negative("x", v), lambda v: check.in_range("x", v, 0, 1)]
INTEGER_CHECKS = [lambda v: check.integer("x", v), lambda v: check.positive_int("x", v),
                  lambda v: check.non_negative_int("x", v)]


@pytest.mark.parametrize("validate", NUMBER_CHECKS + INTEGER_CHECKS)
@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_a_bool_is_never_a_number(validate, value):
    with pytest.raises(ConfigError, match=rf"^x: expected .*, got {value!r}$"):
        validate(value)


@pytest.mark.parametrize("validate", NUMBER_CHECKS)
@pytest.mark.parametrize("value", [np.float32(0.5), np.float64(0.25)])
def test_numpy_numbers_are_numbers_and_come_back_as_python_floats(validate, value):
    out = validate(value)
    assert type(out) is float and out == float(value)


def test_an_integer_is_a_number():
    out = check.positive("x", np.int64(3))
    assert type(out) is float and out == 3.0


@pytest.mark.parametrize("validate", INTEGER_CHECKS)
@pytest.mark.parametrize("value", [np.int8(3), np.int64(3), np.uint16(3), 3])
def test_numpy_integers_are_integers_and_come_back_as_python_ints(validate, value):
    out = validate(value)
    assert type(out) is int and out == 3


@pytest.mark.parametrize("validate", INTEGER_CHECKS)
@pytest.mark.parametrize("value", [2.0, 2.5, np.float64(2.0), "2", None])
def test_an_integer_setting_refuses_non_integers(validate, value):
    with pytest.raises(ConfigError, match=r"^x: expected an? .*integer"):
        validate(value)


@pytest.mark.parametrize("validate", NUMBER_CHECKS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("inf")])
def test_nan_and_infinity_are_never_settings(validate, value):
    with pytest.raises(ConfigError, match=r"\(not a finite number\)$"):
        validate(value)


def test_bounds_and_their_wording():
    assert check.non_negative("w", 0) == 0.0
    with pytest.raises(ConfigError, match=r"^w: expected a positive number, got 0$"):
        check.positive("w", 0)
    with pytest.raises(ConfigError, match=r"^w: expected a number >= 0, got -1e-09$"):
        check.non_negative("w", -1e-9)
    assert check.in_range("p", 0, 0, 1) == 0.0
    with pytest.raises(ConfigError, match=r"^p: expected a number in \[0, 1\), got 1$"):
        check.in_range("p", 1, 0, 1)
    assert check.in_range("h", 1, 0, 1, low_open=True, high_open=False) == 1.0
    with pytest.raises(ConfigError, match=r"^h: expected a number in \(0, 1\], got 0$"):
        check.in_range("h", 0, 0, 1, low_open=True, high_open=False)
    assert check.integer("n", 2, 2, 5) == 2 and check.integer("n", 5, 2, 5) == 5
    with pytest.raises(ConfigError, match=r"^n: expected an integer in \[2, 5\], got 6$"):
        check.integer("n", 6, 2, 5)
    with pytest.raises(ConfigError, match=r"^n: expected an integer >= 2, got 1$"):
        check.integer("n", 1, 2)
    with pytest.raises(ConfigError, match=r"^rate: expected a finite number > 0.5, got 0.5$"):
        check.number("rate", 0.5, 0.5, low_open=True)


def test_expected_rewords_the_message_but_not_the_rule():
    with pytest.raises(ConfigError, match=r"^steps: expected a positive integer number of Euler steps, got 0$"):
        check.positive_int("steps", 0, expected="a positive integer number of Euler steps")
    assert check.positive_int("steps", 1, expected="anything") == 1


def test_messages_are_one_line_and_name_field_value_and_expectation():
    with pytest.raises(ConfigError) as info:
        check.positive("flow.eta", -2.5)
    assert str(info.value) == "flow.eta: expected a positive number, got -2.5"
    assert "\n" not in str(info.value)


def test_boolean_refuses_truthy_stand_ins():
    assert check.boolean("flip", False) is False
    for value in (0, 1, "false", None):
        with pytest.raises(ConfigError, match=rf"^flip: expected true or false, got {value!r}$"):
            check.boolean("flip", value)


def test_one_of_suggests_the_closest_choice():
    assert check.one_of("precision", "bfloat16", ("float32", "bfloat16")) == "bfloat16"
    with pytest.raises(ConfigError, match=r"^precision: expected one of float32, bfloat16, got 'bfloat61'; "
                                          r"did you mean 'bfloat16'"):
        check.one_of("precision", "bfloat61", ("float32", "bfloat16"))
    with pytest.raises(ConfigError, match=r"got 3$"):  # no suggestion for a non-string
        check.one_of("precision", 3, ("float32", "bfloat16"))


def test_attrs_fields_name_config_sections_and_store_python_numbers():
    config = TrainConfig(steps=np.int64(7), lr=np.float32(0.5), grad_clip=None)
    assert type(config.steps) is int and type(config.lr) is float and config.grad_clip is None
    with pytest.raises(ConfigError, match=r"^train\.lr: expected a positive number, got True$"):
        TrainConfig(lr=True)
    with pytest.raises(ConfigError, match=r"^train\.precision: .*did you mean 'float32'"):
        TrainConfig(precision="float23")

    @attrs.define
    class Penalty:
        weight: float = check.attrs_field(check.non_negative, default=0.0)

    with pytest.raises(ConfigError, match=r"^weight: expected a number >= 0, got -1$"):
        Penalty(-1)
