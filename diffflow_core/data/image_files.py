"""Readers for the on-disk image layouts users already have, without torchvision; each returns uint8 pixels.

Readers return ``(pixels, labels)`` pairs (:data:`Pixels`): ``pixels`` a uint8 array ``[N, C, H, W]`` and
``labels`` an int64 array ``[N]`` or ``None``. A missing file, a wrong layout, a corrupt or truncated file and an empty folder
are one-line :class:`ConfigError` s naming the path and what was expected. Pickles (CIFAR-10's batches) go
through :func:`diffflow_core.data.safe_pickle.load_pickle`, never the unrestricted :mod:`pickle`.
"""
from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from diffflow_core import validation as check
from diffflow_core.data.base import read_npy
from diffflow_core.data.safe_pickle import load_pickle
from diffflow_core.errors import ConfigError

__all__ = ["IMAGE_SUFFIXES", "as_nchw", "check_labels", "item_pixels", "split_item", "read_cifar10",
           "read_image_arrays", "read_image_folder", "read_mnist_idx", "read_torch_dataset"]

#: uint8 images [N, C, H, W] and their int64 labels [N] (None when unlabelled)
Pixels = tuple[np.ndarray, "np.ndarray | None"]

#: Files an image folder may hold (read with PIL).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _where(path: Path) -> str:
    return f"data: {str(path)!r}"


def as_nchw(array: np.ndarray, where: str) -> np.ndarray:
    """uint8 images ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` (C = 1 or 3) as contiguous ``[N, C, H, W]``.

    The channel axis is the last one when its size is 1 or 3 (as PIL and NumPy write images), else the second
    (as PyTorch does).
    """
    if array.dtype != np.uint8:
        raise ConfigError(f"{where}: pixels of dtype {array.dtype}; expected uint8 images (0..255) [N, H, W], "
                          "[N, H, W, C] or [N, C, H, W] (other arrays: give the .npy path without 'images:')")
    if array.ndim == 3:
        return np.ascontiguousarray(array[:, None])
    if array.ndim == 4 and array.shape[-1] in (1, 3):
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    if array.ndim == 4 and array.shape[1] in (1, 3):
        return np.ascontiguousarray(array)
    raise ConfigError(f"{where}: images of shape {tuple(array.shape)}; expected [N, H, W], [N, H, W, C] or "
                      "[N, C, H, W] with C = 1 or 3 channels")


def check_labels(labels: Any, n: int, where: str) -> np.ndarray:
    """Non-negative integer class labels, one per image, as int64."""
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu" or (n and labels.min() < 0):
        raise ConfigError(f"{where}: labels of shape {labels.shape} and dtype {labels.dtype}; expected {n} "
                          "non-negative integers, one per image")
    return labels.astype(np.int64)


# -- MNIST idx files ------------------------------------------------------------------------------------------
def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file (LeCun's format: 0x00 0x00, type 0x08 = uint8, ndim, big-endian int32 sizes, the bytes)."""
    where = _where(path)
    what = f"an MNIST idx file of uint8 with {ndim} dimension(s)"
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise ConfigError(f"{where}: corrupt or truncated ({error}); expected {what}") from None
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise ConfigError(f"{where}: header {raw[:4]!r} is not that of {what} (b'\\x00\\x00\\x08\\x0{ndim}')")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", ndim, 4))
    body = len(raw) - 4 - 4 * ndim
    if body != int(np.prod(shape)):
        raise ConfigError(f"{where}: its header promises shape {shape} ({int(np.prod(shape))} bytes) but it holds "
                          f"{body} bytes; the file is truncated or corrupt, expected {what}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(root: Path, stem: str, folders: Sequence[Path]) -> Path:
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise ConfigError(f"{_where(root)}: no {stem}[.gz]; expected the MNIST idx files (train-images-idx3-ubyte, "
                      "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz) in "
                      "it or in MNIST/raw below it")


def read_mnist_idx(root: Path) -> tuple[Pixels, Pixels]:
    """MNIST-layout idx files (also Fashion-MNIST, KMNIST) in ``root``, ``root/raw`` or ``root/MNIST/raw``
    (torchvision's download folder): the given train and test splits."""
    if not root.is_dir():
        raise ConfigError(f"{_where(root)} is not a folder; expected one holding the MNIST idx files")
    folders = (root, root / "raw", root / "MNIST" / "raw")
    splits = []
    for split in ("train", "test"):
        images_stem, labels_stem = _MNIST_FILES[split]
        images_path, labels_path = _find(root, images_stem, folders), _find(root, labels_stem, folders)
        images = _read_idx(images_path, 3)
        labels = _read_idx(labels_path, 1)
        splits.append((as_nchw(images, _where(images_path)), check_labels(labels, len(images), _where(labels_path))))
    return splits[0], splits[1]


# -- CIFAR-10 python batches ------------------------------------------------------------------------------------
def _cifar_batch(path: Path) -> Pixels:
    where = _where(path)
    what = "a CIFAR-10 python batch: a dict with 'data' (uint8 [N, 3072]) and 'labels'"
    if not path.is_file():
        raise ConfigError(f"{where} is missing; expected {what} (cifar-10-batches-py holds data_batch_1..5 and "
                          "test_batch)")
    with path.open("rb") as fp:
        batch = load_pickle(fp, where, what)
    if isinstance(batch, dict):  # Python 2 keys read as str; a batch re-saved by Python 3 may have bytes keys
        batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = batch.get("data") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or "labels" not in batch:
        raise ConfigError(f"{where}: wrong layout; expected {what}")
    return data.reshape(-1, 3, 32, 32), check_labels(batch["labels"], len(data), where)


def read_cifar10(root: Path) -> tuple[Pixels, Pixels]:
    """CIFAR-10's python version: ``root/cifar-10-batches-py`` (torchvision's layout) or that folder itself."""
    if not root.is_dir():
        raise ConfigError(f"{_where(root)} is not a folder; expected one holding cifar-10-batches-py")
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    train = [_cifar_batch(folder / f"data_batch_{k}") for k in range(1, 6)]
    test = _cifar_batch(folder / "test_batch")
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])), test


# -- class-per-folder images (PIL) ------------------------------------------------------------------------------
def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _fit(image: Any, path: Path, size: int | None, crop: int | None, first: tuple[int, int] | None) -> Any:
    """Center-crop to ``crop`` x ``crop``, then resize the shorter side to ``size`` and center-crop the square."""
    from PIL import Image

    if crop is not None:
        if min(image.size) < crop:
            raise ConfigError(f"{_where(path)}: image of size {image.size} is smaller than crop={crop}; expected "
                              f"images at least {crop} x {crop}")
        left, top = (image.width - crop) // 2, (image.height - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
    if size is not None:
        scale = size / min(image.size)
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        image = image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=None)
        left, top = (width - size) // 2, (height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    elif first is not None and image.size != first:
        raise ConfigError(f"{_where(path)}: image of size {image.size} differs from the first image's {first}; "
                          "expected images of one size (or pass size= to resize and center-crop them)")
    return image


def read_image_folder(root: Path, size: int | None = None, crop: int | None = None,
                      channels: int | None = None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Images under ``root``: one sub-folder per class (labels 0.. in sorted folder-name order, as torchvision's
    ``ImageFolder``), or images directly in ``root`` and no class folders (unlabelled, e.g. CelebA's
    ``img_align_celeba``). ``channels`` is 1 (grayscale) or 3 (RGB); by default 1 when every image is grayscale.

    Returns the pixels, the labels (``None`` when unlabelled) and the class names (the folder names).
    """
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise ConfigError(f"{_where(root)} is not a folder; expected a folder of images (one sub-folder per class)")
    for name, value in (("size", size), ("crop", crop)):
        if value is not None:
            check.positive_int(f"data.{name}", value, expected="a positive integer (pixels)")
    if channels not in (None, 1, 3):
        raise ConfigError(f"data.channels: expected 1 (grayscale) or 3 (RGB), got {channels!r}")
    listed = {d: _image_files(d) for d in sorted(root.iterdir()) if d.is_dir()}
    classes = [d for d, found in listed.items() if found]
    loose = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if classes and loose:
        raise ConfigError(f"{_where(root)}: holds both images ({loose[0].name}, ...) and class folders; expected "
                          "one sub-folder per class, or images only")
    files = [(p, k) for k, d in enumerate(classes) for p in listed[d]] if classes else [(p, -1) for p in loose]
    if not files:
        raise ConfigError(f"{_where(root)}: no images; expected {'/'.join(IMAGE_SUFFIXES)} files, one sub-folder "
                          "per class (or directly in the folder)")
    arrays, first, gray = [], None, True
    for path, _ in files:
        try:
            with Image.open(path) as image:
                image.load()
                image = _fit(image, path, size, crop, first)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise ConfigError(f"{_where(path)}: corrupt or truncated image ({error}); expected a readable "
                              "PNG/JPEG") from None
        first = first or image.size
        gray = gray and image.mode in ("1", "L")
        arrays.append(np.asarray(image.convert("L" if channels == 1 else "RGB")))
    pixels = np.stack(arrays)
    if channels is None and gray:  # an RGB copy of a grayscale image repeats it in each channel
        pixels = pixels[..., 0]
    labels = np.array([k for _, k in files], dtype=np.int64) if classes else None
    return as_nchw(pixels, _where(root)), labels, [d.name for d in classes]


# -- .npy / .npz image arrays ----------------------------------------------------------------------------------
def _npz_members(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` archive (``allow_pickle=False``: an object array is refused, never unpickled)."""
    where = _where(path)
    if not path.is_file():
        raise ConfigError(f"{where} does not exist or is not a file; expected a .npz archive of uint8 images")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as error:
        raise ConfigError(f"{where}: corrupt or truncated .npz ({error}); expected a .npz archive written by "
                          "numpy.savez") from None


def _pick(members: dict[str, np.ndarray], keys: Sequence[str]) -> np.ndarray | None:
    return next((members[k] for k in keys if k in members), None)


def read_image_arrays(path: Path) -> tuple[Pixels, Pixels | None]:
    """uint8 images in a ``.npy`` file, or a ``.npz`` archive holding ``x_train``/``y_train``/``x_test``/
    ``y_test`` (Keras' layout: the given split) or ``images`` (or ``x``, or its only array) with optional
    ``labels`` (or ``y``). The second element is the given test split, or ``None`` (hold rows out)."""
    where = _where(path)
    if path.suffix == ".npy":
        return (as_nchw(np.asarray(read_npy(path)), where), None), None
    if path.suffix != ".npz":
        raise ConfigError(f"{where}: expected a .npy or .npz file of uint8 images")
    members = _npz_members(path)

    def pair(x: np.ndarray, y: np.ndarray | None) -> Pixels:
        pixels = as_nchw(x, where)
        return pixels, None if y is None else check_labels(y, len(pixels), where)

    if "x_train" in members:
        if "x_test" not in members:
            raise ConfigError(f"{where}: has x_train but no x_test; expected Keras' layout x_train, y_train, "
                              "x_test, y_test")
        return pair(members["x_train"], members.get("y_train")), pair(members["x_test"], members.get("y_test"))
    images = _pick(members, ("images", "x")) if len(members) > 1 else next(iter(members.values()), None)
    if images is None:
        raise ConfigError(f"{where}: arrays {sorted(members)}; expected 'images' (or 'x') with optional 'labels' "
                          "(or 'y'), or x_train/y_train/x_test/y_test")
    return pair(images, _pick(members, ("labels", "y"))), None


# -- any map-style torch Dataset ---------------------------------------------------------------------------------
def item_pixels(image: Any, where: str) -> np.ndarray:
    """One image (a PIL image, an array or a tensor) as uint8; float tensors/arrays must lie in [0, 1]."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"))
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype.kind == "f":
        if array.size and (np.isnan(array).any() or array.min() < 0 or array.max() > 1):
            raise ConfigError(f"{where}: float pixels outside [0, 1]; expected uint8 images, or floats in [0, 1] "
                              "(e.g. ToTensor() without Normalize)")
        array = np.rint(array * 255).astype(np.uint8)
    return array


def split_item(item: Any, where: str) -> tuple[np.ndarray, Any]:
    """A torch Dataset's item, an image or an ``(image, label)`` pair, as ``(uint8 pixels, label or None)``."""
    pair = isinstance(item, (tuple, list)) and len(item) == 2
    image, label = item if pair else (item, None)
    return item_pixels(image, where), label


def read_torch_dataset(dataset: Any) -> Pixels:
    """Every item of a map-style ``torch.utils.data.Dataset``: images, or ``(image, label)`` pairs."""
    where = f"data: {type(dataset).__name__}"
    if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
        raise ConfigError(f"{where}: expected a map-style Dataset (with __len__ and __getitem__), not an iterable one")
    images, labels = [], []
    for i in range(len(dataset)):
        image, label = split_item(dataset[i], f"{where}[{i}]")
        images.append(image)
        labels.append(label)
    if not images:
        raise ConfigError(f"{where}: is empty; expected images or (image, label) pairs")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise ConfigError(f"{where}: images of shapes {sorted(shapes)[:3]}; expected one shape (resize them)")
    if any(y is None for y in labels) and not all(y is None for y in labels):
        raise ConfigError(f"{where}: some items have labels and some do not; expected all pairs or all images")
    pixels = as_nchw(np.stack(images), where)
    if labels[0] is None:
        return pixels, None
    try:
        values = [int(y) for y in labels]
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{where}: labels like {labels[0]!r}; expected integer class labels") from None
    return pixels, check_labels(values, len(pixels), where)
