"""A user's own data end to end: ``diffflow run --data x.npy`` holds out a test split and says so, records the
file's absolute path, measures any dimension against data-vs-data floors and draws it; the model samples from
any working directory, even after the file has gone; bad files, shape mismatches and configs a checkpoint
cannot hold get one-line errors."""
import contextlib
import json
import shutil

import numpy as np
import pytest
import torch

from diffflow_core import build
from diffflow_core.cli import main
from diffflow_core.errors import ConfigError
from diffflow_core.model import Model

PNG = b"\x89PNG"


def _blobs(n, d, seed=0):
    """Two Gaussian blobs in ``d`` dimensions, as a user's float64 array."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, 1)) < 0.5, -1.5, 1.5) + 0.5 * rng.normal(size=(n, d))


def _size(path):
    from PIL import Image

    with Image.open(path) as picture:
        return picture.size


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("own")


@pytest.fixture(scope="module", params=[2, 5])
def run(request, folder):
    """``diffflow run --preset rectified-flow --data points<d>.npy`` (a relative path): (data dimension, folder)."""
    d = request.param
    with contextlib.chdir(folder):
        np.save(f"points{d}.npy", _blobs(2000, d))
        code = main(["run", "--preset", "rectified-flow", "--data", f"points{d}.npy", "--steps", "20", "--n", "200",
                     "--out", f"run{d}"])
    assert code == 0
    return d, folder


def test_run_on_a_npy_holds_out_a_split_records_the_path_and_measures_against_floors(run):
    d, folder = run
    out, path = folder / f"run{d}", str(folder / f"points{d}.npy")
    assert json.loads((out / "config.json").read_text())["data"] == {"name": path}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == {"name": f"points{d}", "path": path, "train": 1800, "test": 200,
                               "split": "held out 10% (200 rows, seed 0)"}
    distances = metrics["distances"]
    assert distances["n"] == 200 and distances["seeds"] == 3  # the 200 held-out rows, 3 sampling seeds
    for name in ("sliced_w2", "mmd2", "energy"):
        assert {"model", "model_std", "floor", "floor_std"} <= set(distances[name])
    sliced = distances["sliced_w2"]
    assert sliced["floor"] > 0 and sliced["ratio"] == pytest.approx(sliced["model"] / sliced["floor"])
    assert np.load(out / "samples.npy").shape == (200, d)
    assert (out / "samples.png").read_bytes().startswith(PNG)
    if d == 2:  # exact W2 too, a scatter and the particle snapshots
        assert metrics["w2"]["n"] == 200 and metrics["w2"]["floor_mean"] > 0 and metrics["w2"]["seeds"] == 3
        assert (out / "trajectory.png").read_bytes().startswith(PNG) and max(_size(out / "samples.png")) < 600
    else:  # no exact W2 beyond 2-D; the picture is the 4 x 4 matrix of pairwise projections
        assert "w2" not in metrics and not (out / "trajectory.png").exists()
        assert min(_size(out / "samples.png")) > 700


def test_the_model_samples_from_any_directory_even_after_its_data_file_has_gone(run, tmp_path, monkeypatch):
    d, folder = run
    checkpoint, data_file = folder / f"run{d}" / "checkpoint.pt", folder / f"points{d}.npy"
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--checkpoint", str(checkpoint), "--n", "50", "--out", "near.npy"]) == 0
    shutil.move(data_file, tmp_path / "moved.npy")
    try:
        assert main(["sample", "--checkpoint", str(checkpoint), "--n", "50", "--out", "far.npy"]) == 0
        model = Model.load(checkpoint)  # the checkpoint carries the small data: the split is the same
    finally:
        shutil.move(tmp_path / "moved.npy", data_file)
    assert np.array_equal(np.load("near.npy"), np.load("far.npy")) and np.load("far.npy").shape == (50, d)
    metrics = json.loads((folder / f"run{d}" / "metrics.json").read_text())
    assert model.data.describe() == metrics["data"]
    rows = {tuple(r) for r in torch.from_numpy(_blobs(2000, d)).float().tolist()}
    held_out = {tuple(r) for r in model.data.test.tolist()}
    assert held_out <= rows and not held_out & {tuple(r) for r in model.data.train.tolist()}


def _bad_file(folder, kind):
    path = folder / f"{kind}.npy"
    if kind == "text":
        path.write_text("0.5,1.5\n2.5,3.5\n")
    elif kind == "npz":
        np.savez(folder / "a.npz", x=_blobs(10, 2))
        (folder / "a.npz").rename(path)
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # a header claiming 745 GiB over a few bytes
        with open(path, "wb") as fp:
            np.lib.format.write_array_header_1_0(fp, {"descr": "<f8", "fortran_order": False,
                                                      "shape": (1_000_000, 100_000)})
            fp.write(bytes(80))
    return path


@pytest.mark.parametrize("kind, words", [("text", "is not a .npy file"), ("npz", "is a .npz archive"),
                                         ("empty", "is empty (0 bytes)"), ("huge", "(745.1 GiB)")])
def test_bad_data_files_are_one_line_cli_errors_and_no_run_folder(tmp_path, capsys, kind, words):
    path = _bad_file(tmp_path, kind)
    code = main(["run", "--preset", "rectified-flow", "--data", str(path), "--steps", "1", "--out",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"diffflow: error: data: {str(path)!r}") and words in err
    assert "\n" not in err and not (tmp_path / "run").exists()


def test_event_shape_must_match_the_data():
    with pytest.raises(ConfigError, match=r"event_shape: \(3,\) does not match the data 'array', whose rows have "
                                          r"shape \(2,\)"):
        build(preset="rectified-flow", data=_blobs(100, 2), event_shape=(3,))


def test_counts_accept_numpy_integers_and_refuse_bools_and_floats():
    model = build(preset="rectified-flow", data=_blobs(100, 2))
    assert torch.equal(model.sample(np.int64(5), np.int32(2), seed=1).x, model.sample(5, 2, seed=1).x)
    for n, steps, field in ((True, 2, "n"), (5.0, 2, "n"), (5, np.float64(2.0), "steps"), (5, False, "steps")):
        with pytest.raises(ConfigError, match=f"^{field}: expected a positive"):
            model.sample(n, steps)


def test_in_memory_data_travel_in_the_checkpoint_and_numpy_scalars_are_saved_as_numbers(tmp_path):
    model = build(preset="rectified-flow", data=_blobs(100, 2), train={"lr": np.float64(1e-3)})
    assert model.config.data is None  # not the preset's ring5: the model was never given a name for the data
    model.save(tmp_path / "m.pt")
    loaded = Model.load(tmp_path / "m.pt")
    assert torch.equal(loaded.data.train, model.data.train) and torch.equal(loaded.data.test, model.data.test)
    assert type(loaded.config.train.lr) is float and loaded.config.train.lr == 1e-3


def test_a_network_given_as_a_module_is_refused_at_save_with_what_to_do(tmp_path):
    from diffflow_core.networks import build_network

    net = build_network("mlp", in_shape=(2,))
    model = build(preset="rectified-flow", data=_blobs(100, 2), flow={"network": net})
    with pytest.raises(ConfigError, match=r"^flow\.network: a diffflow_core\.networks\.mlp\.MLP object cannot be "
                                          r"saved in a checkpoint .*register the network .* give it by name"):
        model.save(tmp_path / "m.pt")
    assert not list(tmp_path.iterdir())  # nothing written: no file that load would call corrupt
