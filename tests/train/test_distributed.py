"""Two CPU processes with gloo on loopback train like one process on the union of their batches."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nnshrink.data import TensorLoader
from nnshrink.train import fit, init_distributed, is_main_process, unwrap, wrap_ddp


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 4, 4, generator=g)
    return x, (x.flatten(1).sum(1) > 0).long()


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    info = init_distributed("gloo")
    x, y = _data()
    loader = TensorLoader(
        x, y, 16, shuffle=True, seed=5, rank=info.rank, world_size=info.world_size
    )
    model = wrap_ddp(_model())
    fit(model, loader, epochs=2, lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant",
        seed=1, checkpoint=os.path.join(out_dir, "state.pt"), progress=False)  # fmt: skip
    torch.save(unwrap(model).state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    assert is_main_process() == (rank == 0)
    dist.destroy_process_group()


class _UnionLoader:
    """Single-process reference: at each step, the concatenation of both ranks' batches."""

    def __init__(self, x, y):
        self.shards = [TensorLoader(x, y, 16, shuffle=True, seed=5, rank=r, world_size=2)
                       for r in range(2)]  # fmt: skip

    def set_epoch(self, epoch):
        for shard in self.shards:
            shard.set_epoch(epoch)

    def __len__(self):
        return len(self.shards[0])

    def __iter__(self):
        for (xa, ya), (xb, yb) in zip(*self.shards):
            yield torch.cat([xa, xb]), torch.cat([ya, yb])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    x, y = _data()
    reference = _model()
    fit(reference, _UnionLoader(x, y), epochs=2, lr=0.1, momentum=0.0, weight_decay=0.0,
        schedule="constant", seed=1, progress=False)  # fmt: skip
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(rank0[key], value, rtol=1e-5, atol=1e-6)
    # only rank 0 wrote the training state, with unwrapped (no "module.") keys
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    assert set(state["model"]) == set(reference.state_dict())
