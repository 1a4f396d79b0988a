"""The Dataset type, user data (arrays, tensors, ``.npy`` files) with its held-out split, and name resolution."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError, format_bytes
from diffflow_core.interfaces import check_finite

#: The share of a user's array held out as its test split (a seeded permutation: every run holds out the same rows).
TEST_FRACTION = 0.1

#: Data reaching larger magnitudes are refused: the presets' networks and noise levels assume data of order 1
#: (squared distances of 1e30-scale data overflow float32), so such data must be standardised first.
MAX_MAGNITUDE = 1e6

#: Array data up to this size travel inside checkpoints (see :meth:`Dataset.state`), so a model trained on a
#: file samples and evaluates after the file has moved; registered datasets rebuild by name instead.
STORED_BYTES = 16 * 2 ** 20

_NUMERIC_KINDS = "biuf"


class Dataset:
    """A finite train/test split; subclasses with a closed-form law override the analytic methods.

    ``split`` says how the test split was made (it goes into ``metrics.json``); ``path`` is the absolute path
    of the file the data were read from, if any.
    """

    name: str = "array"
    split: str = "given"
    path: str | None = None

    def __init__(self, train: Any, test: Any = None, train_labels: Tensor | None = None,
                 test_labels: Tensor | None = None, name: str | None = None, split: str | None = None,
                 path: str | None = None) -> None:
        label = _label(path)
        train = _as_float32(train, label)
        if train.ndim < 2 or train.shape[0] < 2:
            raise ConfigError(f"{label}: expected an array [N, *shape] with N >= 2, got shape {tuple(train.shape)}")
        test = train if test is None else _as_float32(test, f"{label} (test split)")
        if test.shape[1:] != train.shape[1:] or test.shape[0] < 1:
            raise ConfigError(f"{label}: the test split has shape {tuple(test.shape)} but the train split has rows "
                              f"of shape {tuple(train.shape[1:])}")
        for part, values in (("train", train),) + ((("test", test),) if test is not train else ()):
            try:
                check_finite(values, f"{label} ({part} split)")
            except FloatingPointError as error:
                raise ConfigError(str(error)) from None
            peak = float(values.abs().max())
            if peak > MAX_MAGNITUDE:
                raise _scale_error(f"{label} ({part} split)", peak)
        if bool((train == train[:1]).all()):
            raise ConfigError(f"{label}: all {train.shape[0]} training rows are identical; a generative model needs "
                              "data that vary (this law is a single point)")
        self.train = train
        self.test = test
        self.train_labels = None if train_labels is None else torch.as_tensor(train_labels, dtype=torch.long)
        self.test_labels = None if test_labels is None else torch.as_tensor(test_labels, dtype=torch.long)
        if name is not None:
            self.name = name
        self.split = split or ("none: test = train" if test is train else "given")
        self.path = path

    @property
    def train_rows(self) -> Any:
        """What batches are drawn from: indexing it with row indices gives float32 model-space rows. The train
        tensor itself for array data; image datasets return uint8 storage that converts only the rows drawn."""
        return self.train

    @property
    def test_rows(self) -> Any:
        """The test split, indexable like :attr:`train_rows`."""
        return self.test

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.train_rows.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return None if self.train_labels is None else int(self.train_labels.max()) + 1

    @property
    def has_density(self) -> bool:
        return type(self).log_prob is not Dataset.log_prob

    @property
    def has_sampler(self) -> bool:
        """Whether :meth:`sample` draws fresh points of a law (True) or resamples the train rows (False)."""
        return type(self).sample is not Dataset.sample

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` fresh samples of the law (a closed-form law draws new ones; an array resamples rows)."""
        idx = torch.randint(0, self.train_rows.shape[0], (n,), generator=generator)
        return self.train_rows[idx]

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"dataset '{self.name}' has no closed-form density")

    def score(self, x: Tensor) -> Tensor:
        return self.smoothed_score(x, 0.0)

    def smoothed_score(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        raise NotImplementedError(f"dataset '{self.name}' has no closed-form score")

    def to_data_space(self, x: Tensor) -> Tensor:
        """Map model-space samples back to the data's own space (identity unless the data were rescaled)."""
        return x

    def describe(self) -> dict[str, Any]:
        """Name, source file, split sizes and how the split was made (the ``data`` entry of ``metrics.json``)."""
        return {"name": self.name, **({"path": self.path} if self.path else {}), "train": self.train_rows.shape[0],
                "test": self.test_rows.shape[0], "split": self.split}

    def state(self) -> dict[str, Any] | None:
        """What a checkpoint stores to rebuild array data without their file: the tensors, name, split and path.

        ``None`` for registered datasets (subclasses, rebuilt by name) and for arrays over ``STORED_BYTES``.
        """
        test = None if self.test is self.train else self.test
        size = sum(t.numel() * t.element_size() for t in (self.train, test) if t is not None)
        if type(self) is not Dataset or size > STORED_BYTES:
            return None
        return {"train": self.train.cpu(), "test": None if test is None else test.cpu(),
                "train_labels": self.train_labels, "test_labels": self.test_labels, "name": self.name,
                "split": self.split, "path": self.path}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Dataset":
        """The Dataset :meth:`state` described (on the CPU, wherever the checkpoint was mapped)."""
        cpu = {k: v.cpu() if isinstance(v, Tensor) else v for k, v in state.items()}
        return cls(cpu["train"], cpu.get("test"), cpu.get("train_labels"), cpu.get("test_labels"),
                   name=cpu.get("name"), split=cpu.get("split"), path=cpu.get("path"))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, train={tuple(self.train_rows.shape)}, "
                f"test={tuple(self.test_rows.shape)})")


def _label(path: str | None) -> str:
    """How messages name the data: with its file when there is one."""
    return f"data {path!r}" if path else "data"


def _scale_error(what: str, peak: float) -> ConfigError:
    return ConfigError(f"{what}: values reach {peak:.3g}; expected data of order 1 (|x| <= {MAX_MAGNITUDE:g}): "
                       "the networks and noise levels assume it, so standardise first, e.g. (x - x.mean(0)) / x.std(0)")


def _check_dtype(dtype: np.dtype, what: str) -> None:
    """Only plain integers, booleans and reals become float32 data; everything else is named and refused."""
    if dtype.names is not None:
        raise ConfigError(f"{what}: a structured dtype with fields {list(dtype.names)}; expected a plain numeric "
                          "array [N, *shape] (stack the fields: np.stack([x[f] for f in x.dtype.names], axis=-1))")
    if dtype.kind == "c":
        raise ConfigError(f"{what}: complex values ({dtype}); expected real numbers (the imaginary part would be "
                          "lost): store real and imaginary parts as features, np.stack([x.real, x.imag], axis=-1)")
    if dtype.kind == "O":
        raise ConfigError(f"{what}: Python objects (dtype object); expected a numeric array (data are never "
                          "unpickled)")
    if dtype.kind in "US":
        raise ConfigError(f"{what}: text (dtype {dtype}); expected numbers")
    if dtype.kind not in _NUMERIC_KINDS:
        raise ConfigError(f"{what}: dtype {dtype} is not numeric; expected integers or real numbers")


def _as_float32(values: Any, what: str) -> Tensor:
    """``values`` (a tensor, an array or nested lists) as a float32 tensor, after the dtype checks."""
    if isinstance(values, Tensor):
        if values.is_complex():
            _check_dtype(np.dtype(np.complex64), what)
        return values.detach().to(torch.float32)
    array = np.asarray(values)
    _check_dtype(array.dtype, what)
    if array.dtype.kind == "f" and array.dtype.itemsize > 4:  # beyond float32's range the cast would give inf
        peak = float(np.max(np.abs(array), where=np.isfinite(array), initial=0.0))
        if peak > MAX_MAGNITUDE:
            raise _scale_error(what, peak)
    return torch.from_numpy(np.array(array, dtype=np.float32))  # a copy: the Dataset owns its rows


def read_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file, memory-mapped and never unpickled.

    The header is read first (``numpy.lib.format``) so that a file that is not a ``.npy`` (text, a renamed
    ``.npz``), a non-numeric dtype, or a header promising more bytes than the file holds is refused by name
    before anything is allocated.
    """
    where = f"data: {str(path)!r}"
    if not path.exists():
        raise ConfigError(f"data: file {str(path)!r} does not exist")
    if not path.is_file():
        raise ConfigError(f"{where} is not a file; expected a .npy array [N, *shape]")
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(f"{where} is empty (0 bytes); expected a .npy array written by numpy.save")
    with path.open("rb") as fp:
        head = fp.read(6)
        if head.startswith(b"PK\x03\x04"):
            raise ConfigError(f"{where} is a .npz archive (a zip of arrays), not a .npy file; save one of its arrays "
                              "with numpy.save(path, numpy.load(archive)[key])")
        if head != b"\x93NUMPY":
            raise ConfigError(f"{where} is not a .npy file (it starts with {head!r}, not the NumPy header "
                              "b'\\x93NUMPY'); write the array with numpy.save (text: numpy.loadtxt first)")
        fp.seek(0)
        try:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise ValueError(f"format version {version}, expected 1.0 or 2.0")
        except ValueError as error:
            raise ConfigError(f"{where} has an unreadable .npy header ({error})") from None
        offset = fp.tell()
    _check_dtype(dtype, where)
    needed = math.prod(shape) * dtype.itemsize
    if needed > size - offset:
        raise ConfigError(f"{where}: its header promises a {dtype} array of shape {shape} ({format_bytes(needed)}) but the "
                          f"file holds {format_bytes(size - offset)} of data; the file is truncated or not a valid .npy")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ConfigError(f"{where}: cannot read it as a numeric .npy array ({error})") from None


def split_array(values: Any, test_fraction: float = TEST_FRACTION, seed: int = 0, name: str = "array",
                path: str | None = None) -> Dataset:
    """User data ``[N, *shape]`` with ``round(test_fraction * N)`` rows held out by a seeded permutation.

    Rows keep their order within each split. When fewer than two rows would be held out (or fewer than two
    remain) nothing is held out and the split says so: the test split is then the train split.
    """
    x = _as_float32(values, _label(path))
    is_test, split = held_out(x.shape[0] if x.ndim >= 2 else 0, test_fraction, seed)
    if is_test is None:
        return Dataset(x, name=name, path=path, split=split)
    return Dataset(x[~is_test], x[is_test], name=name, path=path, split=split)


def held_out(rows: int, test_fraction: float, seed: int) -> tuple[Tensor | None, str]:
    """Which of ``rows`` rows form the test split (a boolean mask from a seeded permutation) and how the split
    was made; ``None`` when fewer than two rows would be held out or remain (the test split is then the train
    split). Array and image data without a given test split share it, so both hold out the same rows."""
    test_fraction = check.in_range("data.test_fraction", test_fraction, 0, 1)
    seed = check.integer("data.seed", seed)
    held = round(test_fraction * rows)
    if held < 2 or rows - held < 2:
        why = "test_fraction = 0" if test_fraction == 0 else f"{rows} rows are too few to hold out {test_fraction:.0%}"
        return None, f"none ({why}): test = train"
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(int(seed)))
    is_test = torch.zeros(rows, dtype=torch.bool)
    is_test[order[:held]] = True
    return is_test, f"held out {test_fraction:.0%} ({held} rows, seed {seed})"
