"""Data-parallel training under torchrun (2 gloo processes): identical parameters, one checkpoint."""
import sys
import textwrap
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import tinymodel  # noqa: E402

SCRIPT = textwrap.dedent("""
    import os, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    import tinymodel
    from diffflow_core import build
    from diffflow_core.training import Trainer

    tinymodel.ensure_registered()
    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)  # different initial weights: the trainer must broadcast rank 0's
    model = build(tinymodel.config(8, ema=0.5))
    history = Trainer(model, out_dir={out!r}, checkpoint_every=4).fit(model.data)
    torch.save({{k: v for k, v in model.state_dict().items()}}, os.path.join({out!r}, f"rank{{rank}}.pt"))
    print("rank", rank, "loss", history.series("loss/model")[-1], "world", os.environ["WORLD_SIZE"])
""")


def test_two_gloo_ranks_end_identical_and_write_one_checkpoint(tmp_path):
    script = tmp_path / "ddp_train.py"
    out = tmp_path / "run"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)))
    proc = tinymodel.torchrun(script, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(out / "rank0.pt", weights_only=True)
    b = torch.load(out / "rank1.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["train_state"]["world_size"] == 2 and len(ckpt["train_state"]["rng"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.csv", "metrics.jsonl",
                                                     "rank0.pt", "rank1.pt"]
    assert proc.stdout.count("world 2") == 2
    # the two shards saw different data: their RNG streams differ
    streams = ckpt["train_state"]["rng"]
    assert not torch.equal(streams[0]["stream"]["order"], streams[1]["stream"]["order"])
