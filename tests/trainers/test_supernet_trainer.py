"""SPOS training of the supernet and BatchNorm recalibration.

The SPOS callback draws one path per batch from (seed, epoch, batch) and sets the same path on the
model and its EMA copy; a supernet run interrupted after an epoch resumes from ``last.pt`` (its supernet has
RepBlock and RepConv head stem candidates: resuming loads them through Ultralytics' ``DetectionModel.load``); BatchNorm
recalibration makes the running mean the calibration set's activation mean and leaves the weights alone.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from search.space.schema import parse_space
from search.space.supernet import sample_path, supernet_spec
from tests.search.search_helpers import TINY_SPACE
from trainers.model.recalibrate import calibration_images, recalibrate_bn
from trainers.model.supernet import SupernetModel, build_supernet, choice_modules, head_choice_modules
from trainers.train.supernet_trainer import (
    SupernetSettings,
    SupernetTrainer,
    path_seed,
    spos_callbacks,
    supernet_overrides,
    supernet_spec_of,
    train_supernet,
    trained_supernet,
)

TINY = yaml.safe_load(TINY_SPACE)
TINY["stages"]["p3_backbone"]["block"].append("RepBlock")
TINY["stages"]["p4_backbone"] = {"block": ["C3k2", "C3k2_RVB_SE"], "width": [0.5, 1.0], "depth": [1, 2]}  # elastic
SPEC = supernet_spec(parse_space({**TINY, "head_stem": ["stock", "repconv"], "head_stem_layers": [1]}))


def test_recalibration_gives_the_calibration_mean_and_keeps_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.03), nn.ReLU(), nn.Conv2d(4, 5, 1),
                          nn.BatchNorm2d(5, momentum=0.03))
    model[1].running_mean.fill_(7.0)  # stale statistics, as a supernet's shared ones
    weights = {k: v.clone() for k, v in model.named_parameters()}
    images = torch.rand(12, 3, 16, 16)
    recalibrate_bn(model, images, batch=4)
    with torch.no_grad():
        act = model[0](images)
        # during calibration the first BN normalizes each batch with that batch's statistics (train mode)
        second = torch.stack([model[3](model[2](nn.functional.batch_norm(
            a, None, None, model[1].weight, model[1].bias, training=True))).mean(dim=(0, 2, 3)) for a in act.split(4)])
    torch.testing.assert_close(model[1].running_mean, act.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[4].running_mean, second.mean(dim=0), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())
    assert not model.training and all(bn.momentum == 0.03 for bn in (model[1], model[4]))


def test_calibration_images_are_letterboxed_train_images(coco8_copy: Path) -> None:
    images = calibration_images(coco8_copy, 64, 3)
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert torch.equal(images, calibration_images(coco8_copy, 64, 3))  # a fixed set


def current(model: nn.Module) -> list[str]:
    """The candidate each choice module of a supernet runs: stages and downsamples, then the head's branches."""
    return [m.current for m in [*choice_modules(model).values(), *head_choice_modules(model)]]


def test_spos_picks_a_seeded_path_per_batch_on_model_and_ema(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model, ema = build_supernet(SPEC, nc=3), build_supernet(SPEC, nc=3)
    trainer = SimpleNamespace(epoch=0, epochs=2, model=model, ema=SimpleNamespace(ema=ema), train_loader=[None] * 6)
    sample = functools.partial(sample_path, SPEC)
    prepared: list[tuple[str, str]] = []  # (thread, path hash): each step's path is prepared ahead, in a thread
    real_prepare = SupernetModel.prepare
    monkeypatch.setattr(SupernetModel, "prepare", lambda self, arch: (
        prepared.append((threading.current_thread().name, arch.hash)), real_prepare(self, arch))[-1])

    def run(seed: int) -> list[object]:
        drawn: list[object] = []
        cbs = spos_callbacks(sample, seed, paths=drawn)
        cbs["on_pretrain_routine_end"](trainer)
        for epoch in range(2):
            trainer.epoch = epoch
            cbs["on_train_epoch_start"](trainer)
            for _ in range(6):
                cbs["on_train_batch_start"](trainer)
                assert current(model) == current(ema) and model.elastic_path == ema.elastic_path
                assert current(model)[-1] == ("stock" if drawn[-1].head_stem == "stock" else "repconv1")
        cbs["on_train_end"](trainer)
        return drawn

    drawn = run(0)
    assert drawn == run(0) and drawn != run(1)
    assert drawn[7] == sample(path_seed(0, 1, 1))
    assert len({a.hash for a in drawn}) > 1
    assert {a.head_stem for a in drawn} == {"stock", "repconv"}
    shapes = {(a.stage("p4_backbone").width, a.stage("p4_backbone").depth) for a in drawn}
    assert len(shapes) >= 3 and shapes <= {(w, d) for w in (0.5, 1.0) for d in (None, 2)}  # elastic p4
    ahead = [h for name, h in prepared[:12] if name.startswith("spos-next-path")]
    assert ahead == [a.hash for a in drawn[1:]]  # steps 2..12 prepared in the thread, none past the last step
    assert prepared[0] == (threading.current_thread().name, drawn[0].hash)  # the first in line


@pytest.mark.usefixtures("one_thread")
def test_an_interrupted_supernet_run_resumes_from_last(coco8_copy: Path, tmp_path: Path) -> None:
    settings = SupernetSettings(data=str(coco8_copy), out=str(tmp_path / "supernet"), epochs=2, imgsz=64, batch=4)
    sample = functools.partial(sample_path, SPEC)

    def crash(trainer: object) -> None:
        if trainer.epoch == 1:
            raise KeyboardInterrupt  # killed during the second epoch

    trainer = SupernetTrainer(overrides=supernet_overrides(settings), spec=SPEC)
    trainer.add_callback("on_train_epoch_start", crash)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    last, finished = trained_supernet(settings.out)
    assert last.is_file() and not finished
    assert train_supernet(SPEC, settings, sample) == last
    assert trained_supernet(settings.out) == (last, True)
    assert supernet_spec_of(last) == SPEC
    assert train_supernet(SPEC, settings, sample) == last  # finished: found, not trained again


def test_paths_over_the_parameter_bound_are_drawn_again() -> None:
    from trainers.deploy.inference import count_params
    from trainers.model.build import build_model
    from trainers.model.supernet import PathParams

    torch.manual_seed(0)
    model = build_supernet(SPEC, nc=3)
    count = PathParams(model)
    sample = functools.partial(sample_path, SPEC)
    free = [sample(path_seed(0, 0, b)) for b in range(12)]
    for arch in free[:3]:
        assert count(arch) == count_params(build_model(arch, nc=3))  # what the search's params_m counts
    bound = sorted(count(a) for a in free)[len(free) // 2]  # about half the free draws are over it

    trainer = SimpleNamespace(epoch=0, epochs=1, model=model, ema=None)
    drawn: list[object] = []
    cbs = spos_callbacks(sample, 0, paths=drawn, max_params=bound)
    cbs["on_pretrain_routine_end"](trainer)
    cbs["on_train_epoch_start"](trainer)
    for _ in range(12):
        cbs["on_train_batch_start"](trainer)
    assert all(count(a) <= bound for a in drawn) and any(count(a) > bound for a in free)
    assert drawn[0] == next(a for a in _draws(sample, 0) if count(a) <= bound)  # the same generator, drawn on

    tight = spos_callbacks(sample, 0, max_params=1)
    tight["on_pretrain_routine_end"](trainer)
    with pytest.raises(ValueError, match="no path within 1 parameters in 100 draws"):
        tight["on_train_batch_start"](trainer)


def _draws(sample: object, seed: int) -> list[object]:
    rng = path_seed(seed, 0, 0)
    return [sample(rng) for _ in range(100)]  # type: ignore[operator]
