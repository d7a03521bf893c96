"""Tests for trainers/model/se_budget.py: the DynamicSE width cost in the training loss.

The learning tests train a tiny conv -> DynamicSE -> head model on a fixed random regression
task (CPU, one thread, well under a second each); one test trains a real YOLO26 with a dynamic
SE stage for one epoch through :class:`trainers.train.trainer.ArchitectureTrainer`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blocks.se import DynamicSE, EfficientSE
from trainers.model.architecture import Architecture, StageChoice
from trainers.model.se_budget import SEWidthCost, install_se_width_cost, remove_se_width_cost
from trainers.train.results import TrialSettings

LAMBDA = 0.1


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinySE(nn.Module):
    """conv 3 -> 16, ReLU, DynamicSE(16), 1x1 conv 16 -> 4, global mean: four outputs per image."""

    def __init__(self, min_ratio: int = 2, max_ratio: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.se = DynamicSE(16, min_ratio=min_ratio, max_ratio=max_ratio)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.se(F.relu(self.conv(x)))).mean((2, 3))

    def width_fraction(self, x: torch.Tensor) -> float:
        """Mean active width / widest of the SE over ``x`` (eval mode, no grad)."""
        self.eval()
        with torch.no_grad():
            pooled = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1)
            return float(self.se.active_width(pooled).mean() / self.se.hidden)


def task_loss(preds: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Like Ultralytics' criteria: a per-image loss summed over the batch, and detached items."""
    per_image = F.mse_loss(preds, batch["y"], reduction="none").mean(1)
    return per_image.sum(), {"mse": per_image.mean().detach()}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 8, 8, generator=g)
    return x, torch.tanh(x.mean((2, 3)) @ torch.randn(3, 4, generator=g))


def train_tiny(weight: float, steps: int = 150, **se_kw: int) -> tuple[TinySE, float, float]:
    """Train :class:`TinySE` with the width cost ``weight``; ``(model, task MSE before, task MSE after)``."""
    torch.manual_seed(0)
    model = TinySE(**se_kw)
    x, y = _data()
    with torch.no_grad():
        before = float(F.mse_loss(model.eval()(x), y))
    criterion = SEWidthCost(model, weight, inner=task_loss)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=g)
        batch = {"img": x[idx], "y": y[idx]}
        loss, _ = criterion(model.train()(batch["img"]), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    criterion.tracker.close()
    with torch.no_grad():
        after = float(F.mse_loss(model.eval()(x), y))
    return model, before, after


def test_learned_mean_width_moves_with_lambda() -> None:
    """Without a cost the gate stays wide (it starts near 0.64 here); with one it closes to ``h_min``, and the task
    still learns."""
    x, _ = _data()
    free, free_before, free_after = train_tiny(0.0)
    priced, priced_before, priced_after = train_tiny(LAMBDA)
    w_free, w_priced = free.width_fraction(x), priced.width_fraction(x)
    h_min_fraction = priced.se.h_min / priced.se.hidden  # 2 / 8
    assert w_priced < w_free - 0.3, f"lambda {LAMBDA}: width {w_priced:.3f} vs {w_free:.3f} at lambda 0"
    assert w_priced == pytest.approx(h_min_fraction, abs=0.02)
    assert free_after < 0.1 * free_before and priced_after < 0.1 * priced_before, "the task loss must still decrease"


@pytest.mark.parametrize("max_ratio", [4, 8])
def test_with_a_cost_the_learned_ratio_follows_max_ratio(max_ratio: int) -> None:
    """The issue: ``max_ratio`` hardly mattered. With a cost the learned mean ratio ``c / h`` goes to it."""
    x, _ = _data()
    model, _, _ = train_tiny(LAMBDA, min_ratio=2, max_ratio=max_ratio)
    with torch.no_grad():
        ratio = model.se.ratio(F.relu(model.conv(x))).mean()
    assert float(ratio) == pytest.approx(max_ratio, rel=0.05)


def test_cost_is_lambda_times_batch_times_mean_width_fraction() -> None:
    torch.manual_seed(0)
    model = TinySE()
    x, y = _data()
    batch = {"img": x[:5], "y": y[:5]}
    criterion = SEWidthCost(model, 0.7, inner=task_loss)
    loss, items = criterion(model.train()(batch["img"]), batch)
    inner, inner_items = task_loss(model.eval()(batch["img"]), batch)  # no BatchNorm: eval gives the same output
    pooled = F.adaptive_avg_pool2d(F.relu(model.conv(batch["img"])), 1)
    fraction = model.se.active_width(pooled).mean() / model.se.hidden
    torch.testing.assert_close(loss, inner + 0.7 * 5 * fraction)
    torch.testing.assert_close(criterion.last_fraction, fraction.detach())
    assert items == inner_items, "the logged loss items stay the criterion's own"
    assert criterion.tracker.records == [], "each step's records are consumed"
    eval_loss, _ = criterion(model.eval()(batch["img"]), batch)
    torch.testing.assert_close(eval_loss, inner)  # eval: nothing recorded, nothing priced


class _Scheduled:
    """A criterion with Ultralytics' optional per-epoch ``update`` (YOLO26's ProgLoss)."""

    def __init__(self) -> None:
        self.updates = 0

    def __call__(self, preds: Any, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return task_loss(preds, batch)

    def update(self) -> None:
        self.updates += 1


def test_wrapper_passes_the_inner_criterions_attributes_through() -> None:
    scheduled = SEWidthCost(TinySE(), LAMBDA, inner=_Scheduled())
    scheduled.update()
    assert scheduled.inner.updates == 1 and scheduled.updates == 1
    assert not hasattr(SEWidthCost(TinySE(), LAMBDA, inner=task_loss), "update"), "the trainer checks hasattr"


class _Model(TinySE):
    def init_criterion(self) -> Any:
        return _Scheduled()


def test_install_wraps_lazily_and_remove_restores_the_model() -> None:
    model = _Model()
    cost = install_se_width_cost(model, LAMBDA)
    assert isinstance(cost, SEWidthCost) and model.criterion is cost and cost.inner is None
    assert install_se_width_cost(model, LAMBDA) is cost, "installing twice wraps once"
    x, y = _data()
    cost(model.train()(x[:2]), {"img": x[:2], "y": y[:2]})
    assert isinstance(cost.inner, _Scheduled), "the inner criterion is built at the first call, as Ultralytics does"
    remove_se_width_cost(model)
    assert model.criterion is cost.inner
    assert "width_records" not in vars(model.se) and model.se.width_records is None


def test_zero_lambda_or_no_dynamic_se_installs_nothing() -> None:
    model = _Model()
    assert install_se_width_cost(model, 0.0) is None and not hasattr(model, "criterion")
    assert model.se.width_records is None
    fixed = nn.Sequential(EfficientSE(8))
    assert install_se_width_cost(fixed, LAMBDA) is None and not hasattr(fixed, "criterion")


def test_trial_settings_carry_lambda() -> None:
    settings = TrialSettings(data="d.yaml", out="o", se_width_cost=0.25)
    assert TrialSettings.from_dict(settings.to_dict()) == settings
    assert TrialSettings.from_dict({"data": "d.yaml", "out": "o"}).se_width_cost == 0.0, "old job files: no cost"


def test_trial_cli_reads_and_checks_se_width_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trainers.train.trial import job_of_args

    arch, data = tmp_path / "arch.json", tmp_path / "data.yaml"
    arch.write_text(Architecture.baseline().to_json())
    data.write_text("nc: 1\n")
    base = ["--arch", str(arch), "--data", str(data), "--epochs", "1", "--imgsz", "64"]
    assert job_of_args(base).settings.se_width_cost == 0.0
    assert job_of_args([*base, "--se-width-cost", "0.5"]).settings.se_width_cost == 0.5
    for bad in ("-1", "nan", "x"):
        with pytest.raises(SystemExit) as e:
            job_of_args([*base, "--se-width-cost", bad])
        assert e.value.code == 2
        assert f"--se-width-cost must be a finite number >= 0, got '{bad}'" in capsys.readouterr().err


@pytest.mark.usefixtures("locks_in_tmp")
def test_trainer_with_zero_lambda_has_only_the_stock_callbacks(tmp_path: Path, coco8_copy: Path) -> None:
    from ultralytics.utils import callbacks as ul_callbacks

    from trainers.train.trainer import ArchitectureTrainer

    overrides = {"model": "yolo26n.yaml", "data": str(coco8_copy), "project": str(tmp_path), "name": "t"}
    trainer = ArchitectureTrainer(overrides=overrides)
    assert trainer.callbacks == ul_callbacks.get_default_callbacks()
    priced = ArchitectureTrainer(overrides=overrides, se_width_cost=LAMBDA)
    assert len(priced.callbacks["on_train_start"]) == len(trainer.callbacks["on_train_start"]) + 1
    assert len(priced.callbacks["on_train_end"]) == len(trainer.callbacks["on_train_end"]) + 1


DYNAMIC_ARCH = Architecture.create({
    "p5_out": StageChoice(block="C3k2_RVB_SE", se="in_blocks", se_kind="dynamic", se_min_ratio=4, se_max_ratio=16),
})


@pytest.mark.usefixtures("locks_in_tmp")
def test_a_real_training_step_carries_the_width_cost(tmp_path: Path, coco8_copy: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """One epoch of YOLO26 with a dynamic SE stage: the cost is in the loss of every batch, and gone afterwards."""
    from ultralytics.utils.torch_utils import unwrap_model

    from trainers.model.build import build_model
    from trainers.train.dataset import class_count
    from trainers.train.trainer import ArchitectureTrainer
    from trainers.train.trial import trial_overrides

    monkeypatch.chdir(tmp_path)
    settings = TrialSettings(data=str(coco8_copy), out=str(tmp_path / "out" / "t"), epochs=1, imgsz=64, batch=4,
                             device="cpu", se_width_cost=LAMBDA)
    model = build_model(DYNAMIC_ARCH, nc=class_count(coco8_copy))
    n_se = sum(isinstance(m, DynamicSE) for m in model.modules())
    assert n_se > 0
    trainer = ArchitectureTrainer(overrides=trial_overrides(DYNAMIC_ARCH, settings, Path(settings.out), "cpu"),
                                  architecture=DYNAMIC_ARCH, model=model, se_width_cost=settings.se_width_cost)
    seen: list[float] = []

    def check(tr: Any) -> None:
        criterion = unwrap_model(tr.model).criterion
        assert isinstance(criterion, SEWidthCost) and criterion.weight == LAMBDA
        assert criterion.last_fraction is not None and criterion.tracker.records == []
        seen.append(float(criterion.last_fraction))

    trainer.add_callback("on_train_batch_end", check)
    trainer.train()
    n_train = len(list((coco8_copy.parent / "images" / "train").iterdir()))  # coco8: 4; the synthetic fallback: 8
    assert len(seen) == -(-n_train // 4)  # one check per batch of 4
    assert all(0.0 < f <= 1.0 for f in seen)
    trained: Any = unwrap_model(trainer.model)  # type: ignore[arg-type]
    assert not isinstance(getattr(trained, "criterion", None), SEWidthCost)
    assert all(m.width_records is None for m in trained.modules() if isinstance(m, DynamicSE))
    assert trainer.best.exists() or trainer.last.exists()


@pytest.mark.usefixtures("locks_in_tmp")
def test_run_trial_trains_with_the_settings_lambda(tmp_path: Path, coco8_copy: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``TrialSettings.se_width_cost`` reaches the trainer of ``run_trial``, and the priced trial still scores."""
    from trial_helpers import DUMMY_LATENCY

    import trainers.model.se_budget as se_budget
    from trainers.train.results import PreTraining, TrialResult
    from trainers.train.trial import run_trial

    installed: list[SEWidthCost | None] = []
    real_install = se_budget.install_se_width_cost

    def spy(model: nn.Module, weight: float) -> SEWidthCost | None:
        installed.append(real_install(model, weight))
        return installed[-1]

    monkeypatch.setattr(se_budget, "install_se_width_cost", spy)
    monkeypatch.chdir(tmp_path)
    settings = TrialSettings(data=str(coco8_copy), out=str(tmp_path / "out" / "t"), epochs=1, imgsz=64, batch=4,
                             device="cpu", se_width_cost=LAMBDA)
    result = run_trial(DYNAMIC_ARCH, settings, PreTraining(1, 1.0, DUMMY_LATENCY))
    assert isinstance(result, TrialResult), result
    assert len(installed) == 1 and isinstance(installed[0], SEWidthCost) and installed[0].weight == LAMBDA
    assert installed[0].last_fraction is not None, "the cost was computed in the training loop"
