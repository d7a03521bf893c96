"""Latency backends (torch, onnxruntime, openvino) on tiny real models: reports, registry, refusals, cache, ONNX.

Timing values are checked for consistency (ordered, counted, inside their interval), never
against a speed: the test machine is shared.
"""

from __future__ import annotations

import datetime
import importlib.util
import itertools
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from torch import nn
from trial_helpers import REP_ARCH

from trainers.deploy.onnx_io import export_onnx, onnxruntime_vs_torch
from trainers.latency.backends import backends, deployed_copy, get_backend
from trainers.latency.measure import LatencyCache, cache_key, measure_latency, measure_model_latency
from trainers.latency.report import LatencyReport
from trainers.latency.setting import BACKEND_NAMES, LatencySetting
from trainers.model.architecture import Architecture
from trainers.model.build import build_model
from trainers.model.heads import HEADS, post_processing

IMGSZ, NC, REPEATS = 64, 3, 5
FAST: dict[str, Any] = {"warmup": 1, "repeats": REPEATS, "min_seconds": 0.0}  # quick on 2 shared cores
ANCHORS = sum((IMGSZ // s) ** 2 for s in (8, 16, 32))  # 64 + 16 + 4 = 84 at 64 px
pytestmark = pytest.mark.usefixtures("one_thread")  # the machine is shared: one torch thread
MODES = {"torch": "eager", "onnxruntime": "session", "openvino": "infer_request"}
NO_OPENVINO = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                 reason="openvino is not installed (pip install -e '.[openvino]')")


def _backend_param(name: str, head: str) -> Any:
    return pytest.param(name, head, id=f"{name}-{head}", marks=[NO_OPENVINO] if name == "openvino" else [])


@pytest.fixture(autouse=True)
def _locks_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Device locks under ``tmp_path``, not ``studies/.locks`` of the current directory."""
    monkeypatch.setenv("REPNAS_LOCK_DIR", str(tmp_path / "locks"))


def _end2end(model: Any) -> bool:
    """Whether the detector's head is set to the one-to-one (NMS-free) output."""
    return bool(model.model[-1].end2end)


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    """The stock YOLO26n with 3 classes, training form."""
    return build_model(Architecture.baseline(), nc=NC)


@pytest.mark.parametrize(("name", "head"), [_backend_param(n, h) for n in BACKEND_NAMES for h in HEADS])
def test_report_of_each_backend_and_head(tiny: nn.Module, name: str, head: str) -> None:
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    threads, training, end2end = torch.get_num_threads(), tiny.training, _end2end(tiny)
    report = measure_latency(
        tiny, LatencySetting(imgsz=IMGSZ, device="cpu", threads=1, backend=name, head=head), **FAST
    )
    assert (report.backend, report.head, report.mode) == (name, head, MODES[name])
    assert report.backend_version == get_backend(name).version() != "missing"
    assert report.post.startswith(post_processing(head))
    assert ("candidate boxes" in report.post) == (head == "nms")
    lo, hi = report.interval
    assert report.ci_low_ms is not None and report.ci_high_ms is not None
    assert 0 < lo <= report.median_ms <= hi
    assert round(lo, 4) in report.samples and round(hi, 4) in report.samples  # order statistics (kept rounded)
    assert report.n == len(report.samples) == REPEATS
    assert report.median_ms <= report.p90_ms and report.cv >= 0
    measured = datetime.datetime.fromisoformat(report.measured_at)
    assert measured.tzinfo is not None
    assert abs(datetime.datetime.now(datetime.timezone.utc) - measured) < datetime.timedelta(minutes=5)
    assert report.threads == 1 and report.fused is True
    assert (report.dtype, report.batch, report.imgsz) == ("float32", 1, IMGSZ) and "cpu" in report.device
    assert LatencyReport.from_dict(report.to_dict()) == report
    assert torch.get_num_threads() == threads  # the thread count is restored
    # the model measured was a copy: still the training form, same weights, same mode, head not pinned
    assert any(isinstance(m, nn.BatchNorm2d) for m in tiny.modules())
    assert (tiny.training, _end2end(tiny)) == (training, end2end)
    assert tiny.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in tiny.state_dict().items())


def test_registry_keys_are_the_backend_names() -> None:
    known = backends()
    assert tuple(known) == BACKEND_NAMES
    assert all(backend.name == name for name, backend in known.items())


def test_unknown_backend_is_a_value_error_listing_the_names() -> None:
    with pytest.raises(ValueError, match=r"must be one of \['torch', 'onnxruntime', 'openvino'\], got 'tensorrt'"):
        get_backend("tensorrt")


@pytest.mark.parametrize(
    ("device", "dtype", "batch", "why"),
    [
        ("cpu", "float16", 1, "float32 or int8 export, got dtype 'float16'"),
        ("cpu", "auto", 2, "batch-1 export, got batch 2"),
        ("cuda:0", "auto", 1, "CUDA is not available"),
    ],
    ids=["float16", "batch2", "cuda"],
)
def test_onnxruntime_refuses_float16_batches_and_missing_cuda(
    tiny: nn.Module, device: str, dtype: str, batch: int, why: str
) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    setting = LatencySetting(IMGSZ, device, dtype, batch, backend="onnxruntime")
    assert why in (get_backend("onnxruntime").unavailable(setting) or "")
    with pytest.raises(ValueError, match=f"latency backend 'onnxruntime' cannot run here: .*{why}"):
        measure_latency(
            tiny, LatencySetting(imgsz=IMGSZ, device=device, dtype=dtype, batch=batch, backend="onnxruntime"), **FAST
        )


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_missing_runtime_package_is_the_reason(tiny: nn.Module, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # ``import name`` raises ImportError
    backend = get_backend(name)
    assert backend.version() == "missing"
    assert backend.unavailable(LatencySetting(IMGSZ, "cpu")) == f"{name} is not installed (pip install {name})"
    with pytest.raises(ValueError, match=f"cannot run here: {name} is not installed"):
        measure_latency(tiny, LatencySetting(imgsz=IMGSZ, device="cpu", backend=name), **FAST)


@NO_OPENVINO
def test_openvino_refuses_other_devices_and_dtypes() -> None:
    backend = get_backend("openvino")
    assert backend.unavailable(LatencySetting(IMGSZ, "cpu")) is None
    assert "got dtype 'float16'" in (backend.unavailable(LatencySetting(IMGSZ, "cpu", "float16")) or "")
    assert "got batch 4" in (backend.unavailable(LatencySetting(IMGSZ, "cpu", batch=4)) or "")
    why = backend.unavailable(LatencySetting(IMGSZ, "cuda:0")) or ""
    assert ("measures on the CPU" if torch.cuda.is_available() else "CUDA is not available") in why


@pytest.mark.parametrize("name", ["onnxruntime", pytest.param("openvino", marks=NO_OPENVINO)])
def test_onnx_backends_refuse_the_unfused_form(tiny: nn.Module, name: str) -> None:
    with pytest.raises(ValueError, match=f"the {name} backend measures the fused export, got fused=False"):
        measure_latency(tiny, LatencySetting(imgsz=IMGSZ, device="cpu", backend=name), fused=False, **FAST)


def test_cache_key_differs_per_backend_and_head() -> None:
    settings = list(itertools.product(BACKEND_NAMES, HEADS))
    keys = {
        cache_key(LatencySetting(imgsz=IMGSZ, device="cpu", dtype="auto", backend=b, head=h), "abc")
        for b, h in settings
    }
    raw = {cache_key(LatencySetting(IMGSZ, "cpu", "float32", 1, backend=b, head=h), "abc") for b, h in settings}
    assert len(keys) == len(raw) == len(settings)
    key = cache_key(LatencySetting(imgsz=IMGSZ, device="cpu", dtype="auto", backend="onnxruntime", head="nms"), "abc")
    assert f"onnxruntime-{get_backend('onnxruntime').version()}" in key.split("|") and key.endswith("|nms")


def test_cached_report_keeps_its_backend_and_head(tiny: nn.Module, tmp_path: Path) -> None:
    cache = LatencyCache(tmp_path / "latency.json")
    kw: dict[str, Any] = {"cache": cache, **FAST}
    setting = LatencySetting(imgsz=IMGSZ, device="cpu", threads=1, backend="onnxruntime", head="nms")
    first, hit = measure_model_latency(tiny, "abc", setting, **kw)
    assert hit is False and (first.backend, first.head) == ("onnxruntime", "nms")
    again, hit = measure_model_latency(tiny, "abc", setting, **kw)
    assert hit is True and again == first
    reread = LatencyCache(cache.path).get(
        cache_key(LatencySetting(imgsz=IMGSZ, device="cpu", dtype="auto", backend="onnxruntime", head="nms"), "abc")
    )
    assert reread == first
    # the same architecture with another backend or head is not a hit
    assert (
        cache.get(
            cache_key(LatencySetting(imgsz=IMGSZ, device="cpu", dtype="auto", backend="torch", head="nms"), "abc")
        )
        is None
    )
    assert (
        cache.get(cache_key(LatencySetting(imgsz=IMGSZ, device="cpu", dtype="auto", backend="onnxruntime"), "abc"))
        is None
    )


# nms_free: top-k with k = min(max_det 300, anchors), so (1, 84, 6) at 64 px and (1, 300, 6) from 160 px on
@pytest.mark.parametrize(
    ("head", "shape"), [("nms_free", (1, min(300, ANCHORS), 6)), ("nms", (1, 4 + NC, ANCHORS))], ids=list(HEADS)
)
def test_onnx_output_shape_per_head(tiny: nn.Module, tmp_path: Path, head: str, shape: tuple[int, ...]) -> None:
    import onnxruntime as ort

    path = export_onnx(deployed_copy(tiny, head), tmp_path / f"{head}.onnx", IMGSZ)
    (output,) = onnx.load(str(path)).graph.output
    assert tuple(d.dim_value for d in output.type.tensor_type.shape.dim) == shape
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": torch.rand(1, 3, IMGSZ, IMGSZ).numpy()})
    assert got.shape == shape


def _calibrated(model: Any, imgsz: int = IMGSZ, seed: int = 0, box_std: float = 0.1) -> nn.Module:
    """``model`` in eval mode, its BatchNorm statistics those of random images, its one-to-one outputs spread.

    With fresh BN (mean 0, var 1) an untrained model loses the input on its way to the head:
    every anchor scores the class-bias init (~0.004) to within ~1e-6, and two runtimes' top-k
    order such near-ties differently (rows swap places), which says nothing about the export.
    Here the BN statistics are those of 32 random images, and the head's last convs are rescaled
    on them: class logits to unit spread, box distances to ``box_std`` (boxes are in pixels: at
    unit spread, float32 rounding through the untrained network alone reaches 1e-3 px).
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(32, 3, imgsz, imgsz, generator=gen)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: one batch sets the statistics
    with torch.no_grad():
        model.train()(x)
        detect = model.model[-1]
        spread = {b[-1]: box_std for b in detect.one2one_cv2} | {b[-1]: 1.0 for b in detect.one2one_cv3}
        last = list(spread)
        for conv in last:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
            conv.bias.zero_()
        outs: dict[nn.Module, torch.Tensor] = {}
        hooks = [conv.register_forward_hook(lambda m, i, o: outs.__setitem__(m, o)) for conv in last]
        model.eval()(x)
        for conv in last:
            conv.weight.mul_(spread[conv] / outs[conv].std())
        for hook in hooks:
            hook.remove()
    for m in norms:
        m.momentum = 0.03
    return model


@pytest.mark.slow
def test_onnxruntime_matches_torch_on_a_rep_architecture(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _calibrated(build_model(REP_ARCH, nc=NC))
    deployed = deployed_copy(model, "nms_free")
    path = export_onnx(deployed, tmp_path / "rep.onnx", IMGSZ)
    # seed 4: an input whose top-k scores are well separated (an untrained net saturates on some inputs)
    x, other = (torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(s)) for s in (4, 5))
    with torch.no_grad():
        scores, other_scores = deployed(x)[0][0, :, 4], deployed(other)[0][0, :, 4]
    assert (scores[:-1] - scores[1:]).min() > 1e-5 and scores[0] < 0.9999  # top-k order well defined, not ties
    assert (scores - other_scores).abs().max() > 1e-2  # the output depends on the input: the check is not vacuous
    check = onnxruntime_vs_torch(deployed, path, x)
    assert check["ok"] and check["matched"] == ANCHORS and check["max_box_diff"] < 1e-3, check["detail"]
