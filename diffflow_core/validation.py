"""Checks of user-given parameters: each returns the value (a number as a plain Python ``int`` or ``float``) or
raises a one-line :class:`~diffflow_core.errors.ConfigError` ``"<field>: expected <expectation>, got <value>"``.

One module so that every component refuses the same things the same way: a bool is never a number (``True``
steps is a typo, not 1), NumPy integers and floats are numbers (a value computed with NumPy is a value), NaN and
infinity are never a setting (they pass every ``<``/``>`` test or fail it silently), and an integer setting
refuses ``2.5``. ``expected`` overrides the expectation's wording where the field deserves a more telling one
("a positive integer number of Euler steps"); the rule checked stays the function's.

:func:`attrs_field` makes an ``attrs`` field checked by any of them. No torch or NumPy import: the config module
uses this and stays cheap to import.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable

import attrs

from diffflow_core.errors import ConfigError, did_you_mean

__all__ = ["is_number", "is_integer", "number", "finite", "positive", "non_negative", "in_range", "integer",
           "positive_int", "non_negative_int", "boolean", "one_of", "attrs_field"]


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number, Python's or NumPy's, and not a bool (finite or not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer, Python's or NumPy's, and not a bool: what a count accepts."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fail(field: str, expected: str, value: Any, note: str = "") -> None:
    raise ConfigError(f"{field}: expected {expected}, got {value!r}{note}")


def _bound(value: float) -> str:
    """A bound as a reader writes it: ``1`` rather than ``1.0``."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else str(value)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"> {_bound(low)}" if low_open else f">= {_bound(low)}"
    if low is None:
        return f"< {_bound(high)}" if high_open else f"<= {_bound(high)}"
    return f"in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}{')' if high_open else ']'}"


def _within(value: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    return above and below


def number(field: str, value: Any, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, expected: str | None = None) -> float:
    """A finite real number (Python or NumPy; not a bool, NaN or inf) within the optional bounds, as a ``float``."""
    if expected is None:
        expected = "a finite number" + ("" if low is None and high is None
                                        else " " + _interval(low, high, low_open, high_open))
    if not is_number(value):
        _fail(field, expected, value)
    if not math.isfinite(value):
        _fail(field, expected, value, " (not a finite number)")
    if not _within(value, low, high, low_open, high_open):
        _fail(field, expected, value)
    return float(value)


def finite(field: str, value: Any, expected: str | None = None) -> float:
    """Any finite number: a mean, a bias, a guidance weight."""
    return number(field, value, expected=expected)


def positive(field: str, value: Any, expected: str | None = None) -> float:
    """A finite number ``> 0``: a rate, a scale, a standard deviation."""
    return number(field, value, 0, low_open=True, expected=expected or "a positive number")


def non_negative(field: str, value: Any, expected: str | None = None) -> float:
    """A finite number ``>= 0``: a weight or smoothing level where 0 switches the thing off."""
    return number(field, value, 0, expected=expected or "a number >= 0")


def in_range(field: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = True,
             expected: str | None = None) -> float:
    """A number in an interval, half-open ``[low, high)`` unless told otherwise (a probability, a fraction)."""
    return number(field, value, low, high, low_open=low_open, high_open=high_open,
                  expected=expected or f"a number {_interval(low, high, low_open, high_open)}")


def integer(field: str, value: Any, low: int | None = None, high: int | None = None, *,
            expected: str | None = None) -> int:
    """An integer (Python or NumPy; not a bool, not ``2.0``) in ``[low, high]`` when given, as an ``int``."""
    if expected is None:
        expected = "an integer" + ("" if low is None and high is None else " " + _interval(low, high, False, False))
    if not is_integer(value) or not _within(value, low, high, False, False):
        _fail(field, expected, value)
    return int(value)


def positive_int(field: str, value: Any, expected: str | None = None) -> int:
    """A count of at least one: steps, batch sizes, widths, intervals."""
    return integer(field, value, 1, expected=expected or "a positive integer")


def non_negative_int(field: str, value: Any, expected: str | None = None) -> int:
    """A count that may be zero: warm-up steps, padding, pre-training steps."""
    return integer(field, value, 0, expected=expected or "an integer >= 0")


def boolean(field: str, value: Any) -> bool:
    """``True`` or ``False`` only: ``1`` or ``"false"`` is refused rather than read by truthiness."""
    if not isinstance(value, bool):
        _fail(field, "true or false", value)
    return value


def one_of(field: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of ``choices``; a misspelt string gets the closest names suggested."""
    choices = list(choices)
    if value not in choices:
        hint = did_you_mean(value, [c for c in choices if isinstance(c, str)]) if isinstance(value, str) else ""
        raise ConfigError(f"{field}: expected one of {', '.join(map(str, choices))}, got {value!r}{hint}")
    return value


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python number it holds (configs are written as JSON); anything else unchanged."""
    if isinstance(value, numbers.Number) and not isinstance(value, (int, float, complex)) and hasattr(value, "item"):
        return value.item()
    return value


def attrs_field(check: Callable[..., Any], *args: Any, default: Any, optional: bool = False,
                **kwargs: Any) -> Any:
    """An ``attrs`` field checked by ``check(field, value, *args, **kwargs)``; ``optional`` lets ``None`` pass.

    NumPy scalars are stored as Python numbers. The field is named as a config file spells it: ``train.lr`` for
    a field of ``TrainConfig`` (a class named ``<Section>Config``), the bare attribute name for any other class.
    """
    def validate(instance: Any, attribute: Any, value: Any) -> None:
        if value is None and optional:
            return
        section = type(instance).__name__
        field = (f"{section.removesuffix('Config').lower()}.{attribute.name}" if section.endswith("Config")
                 else attribute.name)
        check(field, value, *args, **kwargs)

    return attrs.field(default=default, converter=_plain, validator=validate)
