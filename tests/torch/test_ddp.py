"""DaceModule inside DistributedDataParallel (gloo, 2 processes on this machine) trains
exactly like eager DDP."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(rank: int, world: int, port: int, use_dace: bool, cache_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DACEML_CACHE_DIR=cache_dir)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from daceml.testing import zoo
        module, _ = zoo.make("mlp", seed=0)
        if use_dace:
            from daceml.torch import DaceModule
            module = DaceModule(module)
        model = torch.nn.parallel.DistributedDataParallel(module)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(100 + rank)
        losses = []
        for _ in range(8):
            x = torch.randn(4, 32, generator=g)
            target = torch.randn(4, 10, generator=g)
            loss = torch.nn.functional.mse_loss(model(x), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        if rank == 0:
            torch.save({"losses": losses, "state": {k: v.detach().clone() for k, v in module.state_dict().items()}},
                       out)
    finally:
        dist.destroy_process_group()


def _run(use_dace: bool, tmp_path) -> dict:
    out = str(tmp_path / f"result_{use_dace}.pt")
    from daceml import config
    mp.spawn(_train, args=(2, _free_port(), use_dace, config.settings.cache_dir, out), nprocs=2, join=True)
    return torch.load(out)


def test_ddp_matches_eager(tmp_path):
    eager = _run(False, tmp_path)
    dace = _run(True, tmp_path)
    for a, b in zip(eager["losses"], dace["losses"]):
        assert abs(a - b) <= 1e-3 * abs(a) + 1e-6, (eager["losses"], dace["losses"])
    assert list(eager["state"]) == list(dace["state"])
    for k in eager["state"]:
        torch.testing.assert_close(dace["state"][k], eager["state"][k], atol=1e-4, rtol=1e-3)
