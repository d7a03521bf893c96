"""Multi-GPU supernet training, as far as a CPU can show it.

Ultralytics' multi-GPU launch rebuilds the trainer in every worker from what ``generate_ddp_file`` pickles; the
first test runs that very file (on the CPU, where the worker trains alone) and checks the rebuilt trainer trains
the supernet with the SPOS path of every step. The second wraps the supernet in ``DistributedDataParallel`` with
``find_unused_parameters=True`` (as Ultralytics does) on two CPU processes (gloo) and checks that steps whose
paths leave most candidates unused keep the ranks' weights equal and train exactly the drawn candidates.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from search.space.supernet import sample_path
from tests.trainers.test_supernet_trainer import SPEC, current
from trainers.model.supernet import build_supernet, set_path
from trainers.train.supernet_trainer import (
    SupernetSettings,
    SupernetTrainer,
    path_seed,
    spos_callbacks,
    supernet_overrides,
)

pytestmark = pytest.mark.slow
SAMPLE = functools.partial(sample_path, SPEC)


@pytest.mark.usefixtures("one_thread")
def test_a_ddp_worker_rebuilds_the_supernet_trainer_with_its_spos_callbacks(coco8_copy: Path, tmp_path: Path) -> None:
    from ultralytics.utils.dist import generate_ddp_file

    settings = SupernetSettings(data=str(coco8_copy), out=str(tmp_path / "supernet"), epochs=1, imgsz=64, batch=2,
                                seed=3)
    trainer = SupernetTrainer(overrides=supernet_overrides(settings), spec=SPEC)
    for event, fn in spos_callbacks(SAMPLE, settings.seed).items():
        trainer.add_callback(event, fn)
    script = Path(generate_ddp_file(trainer))  # what each GPU worker runs
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    try:
        r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                           env={**env, "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, timeout=600)
    finally:
        script.unlink(missing_ok=True)
        script.with_suffix(".pt").unlink(missing_ok=True)
    assert r.returncode == 0, r.stderr[-3000:]
    images = len(list((coco8_copy.parent / "images" / "train").iterdir()))
    assert f"supernet epoch 1/1: {images // 2} paths trained" in r.stderr  # the SPOS callbacks ran in the worker
    ckpt = torch.load(tmp_path / "supernet" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    saved = ckpt.get("ema") or ckpt["model"]  # a finished run is stripped: the EMA saved as the model
    assert saved.yaml["supernet"] == SPEC.to_dict()
    expected = build_supernet(SPEC, nc=saved.nc)
    fresh = current(expected)
    set_path(expected, SAMPLE(path_seed(settings.seed, 0, images // 2 - 1)))  # the last step's path
    assert current(saved) == current(expected) != fresh


def _ddp_steps(rank: int, world: int, rendezvous: str, out: str, steps: int) -> None:
    """One rank: the supernet in DDP (gloo, find_unused_parameters=True), ``steps`` SGD steps on its own images,
    each on the path the SPOS callback sets for that step (on the DDP-wrapped model, as in a trainer); its
    parameters and the paths it drew saved to ``out/rank<rank>.pt``."""
    from types import SimpleNamespace

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_supernet(SPEC, nc=3).train()
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(rank)  # each rank its own batch
    drawn: list[Any] = []
    spos = spos_callbacks(SAMPLE, 0, paths=drawn)
    trainer = SimpleNamespace(epoch=0, epochs=1, model=ddp, ema=None)
    spos["on_train_epoch_start"](trainer)
    for _ in range(steps):
        spos["on_train_batch_start"](trainer)
        opt.zero_grad()
        loss = _total(ddp(torch.rand(2, 3, 64, 64, generator=gen)))
        loss.backward()
        opt.step()
    torch.save({"params": {k: v.detach() for k, v in model.named_parameters()}, "paths": [a.hash for a in drawn]},
               Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _total(outputs: Any) -> torch.Tensor:
    """The sum of the means of every tensor in a (nested) model output: a loss reaching every output."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float().mean()
    items = outputs.values() if isinstance(outputs, dict) else outputs
    return sum((_total(o) for o in items), torch.zeros(()))


def test_ddp_with_unused_candidates_keeps_ranks_equal_and_trains_the_drawn_path(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    steps = 2
    mp.spawn(_ddp_steps, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path), steps), nprocs=2, join=True)
    saved = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert saved[0]["paths"] == saved[1]["paths"] == [SAMPLE(path_seed(0, 0, s)).hash for s in range(steps)]
    assert len(set(saved[0]["paths"])) == steps  # every step another path, the same on both ranks
    ranks = [s["params"] for s in saved]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # gradients were averaged over ranks
    torch.manual_seed(0)
    init = build_supernet(SPEC, nc=3)
    on_path = set()
    for step in range(steps):
        set_path(init, SAMPLE(path_seed(0, 0, step)))
        on_path |= {id(p) for p in _used_parameters(init)}
    names = dict(init.named_parameters())
    drawn = {k for k, p in names.items() if id(p) in on_path}
    changed = {k for k in names if not torch.equal(names[k], ranks[0][k])}
    assert changed <= drawn and len(changed) > len(drawn) // 2  # what was drawn trained, and nothing else
    assert len(drawn) < len(names)  # candidates off every drawn path kept their weights


def _used_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters that get a gradient from one forward/backward on ``model``'s current path."""
    model.zero_grad(set_to_none=True)
    _total(model.train()(torch.rand(1, 3, 64, 64))).backward()
    return [p for p in model.parameters() if p.grad is not None]
