"""Reading the pickles that image datasets ship in (MNIST's ``mnist.pkl.gz``, CIFAR-10's python batches) without
executing code from them.

A pickle is a program: the unrestricted :mod:`pickle` imports and calls whatever the file names, so a planted
``data_batch_1`` could run ``os.system``. :func:`load_pickle` uses an unpickler whose ``find_class`` admits only
the three callables a NumPy array needs to rebuild itself (``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``); every other global, and any persistent id, stops the load before anything
runs. The loaded object is then checked to be plain data: dicts, lists and tuples of bytes, strings, numbers and
numeric (never object) arrays.
"""
from __future__ import annotations

import pickle
import zlib
from typing import IO, Any

import numpy as np
from numpy._core import multiarray as _multiarray

from diffflow_core.errors import ConfigError

__all__ = ["load_pickle"]

#: (module, name) -> the object a NumPy array's pickle may name; nothing else is ever imported. The legacy module
#: path (NumPy < 2 wrote ``numpy.core``) maps to the same function without importing the deprecated shim.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

_PLAIN = (bytes, str, int, float, bool, type(None))


class _Forbidden(pickle.UnpicklingError):
    """The pickle asks for something beyond NumPy arrays and builtin containers (raised before it could run)."""


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that can rebuild NumPy arrays and builtin containers, and import nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Forbidden(f"it names {module}.{name}, which is not a NumPy array part") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Forbidden("it uses a persistent id")


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything but containers of plain values and numeric arrays (an object array could hold anything)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ConfigError(f"{where}: holds an array of dtype {value.dtype}; expected numeric arrays only")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, where)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, where)
    elif not isinstance(value, _PLAIN):
        raise ConfigError(f"{where}: holds a {type(value).__name__}; expected dicts/lists of bytes and numeric arrays")


def load_pickle(fp: IO[bytes], where: str, expected: str) -> Any:
    """The plain data pickled in ``fp`` (Python 2 strings read as latin-1, as NumPy's own loader does).

    ``where`` names the file in messages and ``expected`` says what it should hold. A corrupt or truncated file,
    a forbidden global or non-plain content is a one-line :class:`ConfigError`; no code in the file runs.
    """
    try:
        value = _ArraysOnly(fp, encoding="latin1").load()
    except _Forbidden as error:
        raise ConfigError(f"{where}: refused to unpickle ({error}); expected {expected}") from None
    except (pickle.UnpicklingError, EOFError, OSError, zlib.error, ValueError, TypeError, KeyError, IndexError,
            AttributeError, MemoryError) as error:
        raise ConfigError(f"{where}: corrupt or truncated ({type(error).__name__}: {error}); expected {expected}") \
            from None
    _check_plain(value, where)
    return value
