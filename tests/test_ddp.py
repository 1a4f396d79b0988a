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
    Trainer(model, out_dir={out!r}, checkpoint_every=4).fit(model.data)
    state = dict(model.state_dict(), world=torch.tensor(int(os.environ["WORLD_SIZE"])))
    torch.save(state, os.path.join({out!r}, f"rank{{rank}}.pt"))  # one file per rank: stdout lines interleave
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
    assert int(a["world"]) == int(b["world"]) == 2
    # the two shards saw different data: their RNG streams differ
    streams = ckpt["train_state"]["rng"]
    assert not torch.equal(streams[0]["stream"]["order"], streams[1]["stream"]["order"])
