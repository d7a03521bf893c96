"""``python -m search.export``: ship a Pareto model as fused weights and ONNX, verified, with a model card.

    python -m search.export --storage sqlite:///studies/yolo26.db --study yolo26 --pick knee --out studies/ship

Writes ``model.pt`` (safe format, ``weights_only=True``), ``best.pt`` (the Ultralytics
checkpoint: a pickle), ``model.onnx``, ``model_card.md`` and ``model_card.json``. Before it
finishes it checks and prints: onnxruntime vs fused torch (the top-k detections of the ``nms_free``
head as sets: class, box IoU >= 0.99, score within 1e-3, ties at the k-th score may differ), the
``model.pt`` round trip, fused vs trained mAP50-95 on the val set (within 1e-3), and one Conv
per rep block in the ONNX graph. A failed check: exit 1, files kept, the check named.
With an INT8 target (``latency.dtype: int8``) it also writes the quantized model beside the float one
(``model_int8.onnx``, or ``model_openvino_model/`` and ``model_int8_openvino_model/``), quantized by
Ultralytics' exporter on the target's calibration images (:mod:`trainers.deploy.quantize`), and checks it
against the float export by mAP50-95 on the validation set at the export size (quantized outputs differ
by design, so never element-wise): the drop, in points, must be at most ``--int8-max-drop`` (default 1.0).
``--target T`` (a target measured by ``search.remeasure``): ``--pick`` chooses on that target's
front, the model is exported at its size with its head, and the card records the target and its figure.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from search.pick import Picked, PickError, add_pick_args, check_pick_args, pick
from search.ship.options import ExportOptions
from search.study.records import retrained_key, retrained_records
from trainers.cli import OneLineParser, fail, log, non_negative_float, positive_int

ORT_TOL, MAP_TOL = 1e-3, 1e-3


def weights_of(chosen: Picked, explicit: str | None) -> Path:
    """``--weights``, else the retrained checkpoint recorded on the study, else the trial's best."""
    if explicit:
        return Path(explicit)
    if chosen.trial is None:
        raise PickError("--arch needs --weights PATH (an Ultralytics checkpoint of that architecture)")
    retrained = chosen.study.user_attrs.get(retrained_key(chosen.trial.number)) if chosen.study else None
    if retrained:
        return Path(retrained["path"])
    if "weights" not in chosen.trial.user_attrs:  # a one-shot trial scored on the supernet: no weights of its own
        raise PickError(f"trial {chosen.trial.number} has no trained weights (source: "
                        f"{chosen.trial.user_attrs.get('source', 'unknown')}): retrain it first with python -m "
                        f"search.retrain --trial {chosen.trial.number}, or give --weights")
    return Path(chosen.trial.user_attrs["weights"])


def trusted_roots(chosen: Picked) -> list[Path]:
    """Folders whose checkpoints this project wrote: the study's trial run folders and its retrain outputs."""
    if chosen.study is None:
        return []
    roots = set()
    for t in chosen.study.get_trials(deepcopy=False):
        if "weights" in t.user_attrs:
            roots.add(Path(t.user_attrs["weights"]).resolve().parents[2])  # <study dir>/trial_*/weights/best.pt
    for value in retrained_records(chosen.study).values():
        roots.add(Path(value["path"]).resolve().parents[1])
    return sorted(roots)


def check_trusted(path: Path, chosen: Picked) -> None:
    """Refuse to unpickle a checkpoint from outside the study's own run folders (``--arch`` mode: the user's file)."""
    roots = trusted_roots(chosen)
    if chosen.study is not None and not any(path.resolve().is_relative_to(r) for r in roots):
        raise PickError(f"--weights {str(path)!r} is outside the study's run folders {[str(r) for r in roots]}: "
                        "Ultralytics checkpoints are pickles, only the study's own are loaded")


def load_trained(path: Path, expected_hash: str) -> Any:
    """Load an Ultralytics checkpoint written by our trainer; it must hold the chosen architecture."""
    from ultralytics.nn.tasks import load_checkpoint

    from trainers.model.build import architecture_of

    if not path.is_file():
        raise PickError(f"--weights: no such file {str(path)!r}")
    try:
        model, _ = load_checkpoint(str(path), device="cpu")
    except Exception as e:
        raise PickError(f"{path}: not a readable Ultralytics checkpoint ({type(e).__name__})") from None
    got = architecture_of(model).hash
    if got != expected_hash:
        raise PickError(f"{path}: holds architecture {got}, not the chosen {expected_hash}")
    return model.float().eval()


def rep_blocks_one_conv(fused: Any) -> dict[str, Any]:
    """Each fused rep block (RepConv, RepVGGDW, MultiScaleRepVGGDW, OREPAConv) holds exactly one Conv2d."""
    from torch import nn

    import blocks

    kinds = (blocks.RepConv, blocks.RepVGGDW, blocks.MultiScaleRepVGGDW, blocks.OREPAConv)
    reps = [m for m in fused.modules() if isinstance(m, kinds)]
    bad = [type(m).__name__ for m in reps if sum(isinstance(c, nn.Conv2d) for c in m.modules()) != 1]
    return {"rep_blocks": len(reps), "not_one_conv": bad}


def run_checks(trained: Any, fused: Any, out: Path, imgsz: int, data: str | None, val_imgsz: int,
               head: str) -> dict[str, Any]:
    """All export checks, each ``{"ok": bool, "detail": str, ...figures}``."""
    import torch

    import blocks
    from trainers.deploy.exported import load_exported
    from trainers.deploy.onnx_io import conv_calls, conv_layers, conv_nodes, export_onnx, onnxruntime_vs_torch

    checks: dict[str, Any] = {}
    x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    checks["onnxruntime_vs_torch"] = onnxruntime_vs_torch(fused, out / "model.onnx", x, ORT_TOL)
    with torch.no_grad():
        loaded_diff = float((load_exported(out / "model.pt")(x)[0] - fused(x)[0]).abs().max())
    checks["model_pt_roundtrip"] = {"ok": loaded_diff <= 1e-5, "max_abs_diff": loaded_diff,
                                    "detail": f"load_exported vs fused: max abs diff {loaded_diff:.2e}"}
    if any(isinstance(m, blocks.OREPAConv) for m in trained.modules()):
        # OREPA's training form computes its kernel at run time: the TorchScript exporter cannot trace it
        unfused_convs, how = conv_calls(trained, imgsz), "convs run by torch: unfused OREPA does not export"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            unfused_convs, how = conv_nodes(export_onnx(trained, Path(tmp) / "unfused.onnx", imgsz)), "ONNX"
    fused_convs, reps = conv_nodes(out / "model.onnx"), rep_blocks_one_conv(fused)
    ok = fused_convs == conv_layers(fused) and not reps["not_one_conv"]
    checks["one_conv_per_rep_block"] = {
        "ok": ok, "fused_conv_nodes": fused_convs, "unfused_conv_nodes": unfused_convs, **reps,
        "detail": f"ONNX Conv nodes fused {fused_convs} (Conv2d layers {conv_layers(fused)}), unfused {unfused_convs};"
                  f" ({how}); {reps['rep_blocks']} rep blocks, each one Conv: {not reps['not_one_conv']}"}
    if data is None:
        checks["fused_vs_trained_map"] = {"ok": True, "detail": "skipped: no data YAML known (give --data)"}
    else:
        from trainers.train.evaluate import evaluate

        with tempfile.TemporaryDirectory() as tmp:
            a = evaluate(trained, data, val_imgsz, device="cpu", save_dir=Path(tmp) / "trained", head=head)
            b = evaluate(fused, data, val_imgsz, device="cpu", save_dir=Path(tmp) / "fused", head=head)
        delta = abs(a["map50_95"] - b["map50_95"])
        checks["fused_vs_trained_map"] = {"ok": delta <= MAP_TOL, "trained": a["map50_95"], "fused": b["map50_95"],
                                          "detail": f"mAP50-95 trained {a['map50_95']:.4f} vs fused "
                                                    f"{b['map50_95']:.4f} (|delta| {delta:.2e}, limit {MAP_TOL:g})"}
    return checks


def int8_check(trained: Any, plan: ExportPlan, out: Path, max_drop: float) -> tuple[dict[str, Any],
                                                                                  dict[str, Any] | None]:
    """Quantize ``trained`` for the INT8 target into ``out`` and compare its mAP50-95 with the float export's (same
    runtime, export size, validator); the check and :meth:`~trainers.deploy.quantize.Int8Accuracy.to_dict`."""
    from trainers.deploy.quantize import QuantizeError, int8_accuracy

    if plan.data is None:
        return {"ok": False, "detail": "INT8 target: no data YAML known for the mAP check (give --data)"}, None
    setting = replace(plan.setting, calib_data=plan.setting.calib_data or plan.data)
    try:
        acc = int8_accuracy(trained, setting, plan.data, out)
    except QuantizeError as e:
        return {"ok": False, "detail": f"INT8 target: {e}"}, None
    ok = acc.int8_drop <= max_drop
    return {"ok": ok, "float": acc.map50_95_float, "int8": acc.map50_95_int8, "drop_points": acc.int8_drop,
            "detail": f"mAP50-95 float export {acc.map50_95_float:.4f} vs INT8 {acc.map50_95_int8:.4f} "
                      f"({acc.backend}, {acc.quantizer}, {acc.calib_images} calibration images, {acc.imgsz} px): "
                      f"drop {acc.int8_drop:.2f} points (limit {max_drop:g})"}, acc.to_dict()


def int8_files(out: Path, int8: dict[str, Any]) -> dict[str, str]:
    """The INT8 target's files in ``out`` and what each needs to load."""
    runtime = "onnxruntime" if int8["backend"] == "onnxruntime" else "openvino"
    files = {Path(int8["int8_path"]).name: f"INT8 ({int8['quantizer']}, {int8['calib_images']} calibration images "
                                           f"listed in calibration/calibration.txt); {runtime}, or `YOLO(path)`",
             Path(int8["float_path"]).name: f"float32 export the INT8 model is checked against; {runtime}"}
    return {name: what for name, what in files.items() if (out / name).exists()}


def _parser() -> OneLineParser:
    p = OneLineParser(prog="python -m search.export", description=__doc__)
    add_pick_args(p)
    p.add_argument("--weights", help="checkpoint to export (default: retrained, else the trial's best.pt)")
    p.add_argument("--data", help="data YAML for the mAP check (default: the one the trial trained on)")
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), help="export/latency size (default: study's)")
    p.add_argument("--out", required=True)
    p.add_argument("--int8-max-drop", type=non_negative_float("--int8-max-drop"), default=1.0,
                   help="INT8 target: largest float minus INT8 mAP50-95 drop, in points, the check passes")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 all checks pass, 1 a check failed, 2 bad input."""
    args = _parser().parse_args(argv)
    if (problem := check_pick_args(args)) is not None:
        fail(problem)
    if args.data and not Path(args.data).is_file():
        fail(f"--data: no such file {args.data!r}")
    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    try:
        chosen = pick(args)
        weights = weights_of(chosen, args.weights)
        check_trusted(weights, chosen)
        trained = load_trained(weights, chosen.arch.hash)
    except (PickError, ValueError) as e:
        fail(str(e))
    return export_model(chosen, trained, ExportOptions.from_args(args))


@dataclass(frozen=True)
class ExportPlan:
    """The sizes, head, data and weights an export uses, resolved once from the options and the study."""

    imgsz: int
    val_imgsz: int
    head: str
    data: str | None
    weights: Path
    setting: Any  # the LatencySetting the deployed model is measured in


def plan_export(chosen: Picked, opts: ExportOptions) -> ExportPlan:
    """What to export at: ``--target``'s size and head, else the study's, else the defaults."""
    from trainers.latency.setting import LatencySetting
    from trainers.model.heads import DEFAULT_HEAD

    recorded = chosen.config.trial if chosen.config is not None else None
    on_target = chosen.target_latency  # --target: deploy at that target's size, with its head
    imgsz = opts.imgsz or (on_target.imgsz if on_target else recorded.latency.imgsz if recorded else 640)
    head = on_target.head if on_target else recorded.head if recorded else DEFAULT_HEAD
    setting = replace(recorded.latency if recorded else LatencySetting(), imgsz=imgsz, head=head)
    return ExportPlan(imgsz=imgsz, val_imgsz=recorded.imgsz if recorded else 640, head=head,
                      data=opts.data or (recorded.data if recorded and recorded.data else None),
                      weights=weights_of(chosen, opts.weights), setting=setting)


def export_model(chosen: Picked, trained: Any, opts: ExportOptions) -> int:
    """Write the five files, run the checks, print each figure; the exit code."""
    from search.ship.model_card import search_int8, write_model_card
    from trainers.deploy.exported import save_exported
    from trainers.deploy.inference import fused_copy
    from trainers.deploy.ultralytics_export import export_with_ultralytics
    from trainers.latency.measure import measure_latency
    from trainers.model.heads import pin_head

    out, plan = opts.out, plan_export(chosen, opts)
    out.mkdir(parents=True, exist_ok=True)
    fused = fused_copy(trained, before_fuse=lambda m: pin_head(m, plan.head))
    save_exported(fused, chosen.arch, out / "model.pt", extra={"imgsz": plan.imgsz, "head": plan.head})
    shutil.copyfile(plan.weights, out / "best.pt")
    export_with_ultralytics(plan.weights, out / "model.onnx", "onnx", plan.imgsz, plan.head)  # Ultralytics' metadata
    log(f"exporting {chosen.arch.hash} ({chosen.rule}) from {plan.weights}")
    checks = run_checks(trained, fused, out, plan.imgsz, plan.data, plan.val_imgsz, plan.head)
    int8 = None
    if plan.setting.dtype == "int8":
        checks["int8_vs_float_map"], int8 = int8_check(trained, plan, out, opts.int8_max_drop)
    latency = measure_latency(trained, plan.setting)
    card = add_int8(model_card(chosen, plan, opts, (trained, fused), checks, latency), search_int8(chosen), int8, out)
    write_model_card(out, card)
    if chosen.study is not None and chosen.config is not None:  # the card beside the study, in the dashboard
        from search.study.artifacts import artifact_store, upload_study_artifacts

        upload_study_artifacts(artifact_store(chosen.config), chosen.study,
                               [out / "model_card.md", out / "model_card.json"])
    return report_export(chosen, out, checks, latency)


def add_int8(card: dict[str, Any], searched: dict[str, Any] | None, int8: dict[str, Any] | None,
             out: Path) -> dict[str, Any]:
    """``card`` with the INT8 figures: the search trial's (``searched``, its ``int8`` record) and this export's
    (``int8``, from :func:`int8_check`), each as a record, as metrics and, for the export, its files in ``out``."""
    if searched is not None:
        card["search_int8"] = searched
        card["metrics"].update(search_map50_95_int8=searched["map50_95_int8"], search_int8_drop=searched["int8_drop"])
    if int8 is not None:
        card["int8"] = int8
        card["metrics"].update(map50_95_float_export=int8["map50_95_float"], map50_95_int8=int8["map50_95_int8"],
                               int8_drop_points=int8["int8_drop"])
        card["files"] = {**card["files"], **int8_files(out, int8)}
    return card


def model_card(chosen: Picked, plan: ExportPlan, opts: ExportOptions, models: tuple[Any, Any],
               checks: dict[str, Any], latency: Any) -> dict[str, Any]:
    """The model card's data: architecture, sizes, metrics, checks, latency, warm start, versions, commands."""
    from search.ship.model_card import (
        FILES,
        latency_measurements,
        reproduce_commands,
        teacher_comparison,
        warm_start_of,
    )
    from trainers.deploy.inference import count_params
    from trainers.versions import versions

    trained, fused = models
    attrs = chosen.trial.user_attrs if chosen.trial is not None else {}
    study_attrs = chosen.study.user_attrs if chosen.study is not None else {}
    recorded = chosen.config.trial if chosen.config is not None else None
    on_target = chosen.target_latency
    retrained = study_attrs.get(retrained_key(chosen.trial.number)) if chosen.trial is not None else None
    return {"hash": chosen.arch.hash, "architecture": chosen.arch.to_dict(), "blocks": chosen.arch.blocks_summary(),
            "chosen": chosen.rule, "head": plan.head,
            "sizes": {"train_imgsz": retrained.get("imgsz") if retrained else recorded.imgsz if recorded else None,
                      "val_imgsz": plan.val_imgsz, "export_imgsz": plan.imgsz},
            "metrics": {"search_map50_95": attrs.get("map50_95"), "search_epochs": attrs.get("epochs"),
                        "retrained_map50_95": retrained["map50_95"] if retrained else None,
                        "retrained_epochs": retrained["epochs"] if retrained else None,
                        "params_fused": count_params(fused), "params_training_form": count_params(trained),
                        "gflops_fused": attrs.get("gflops"), "latency_ms": round(latency.median_ms, 4)},
            "latency": latency.to_dict(), "latency_measurements": latency_measurements(chosen, latency),
            "checks": checks, "data": plan.data, "weights": str(plan.weights), "files": FILES,
            "target": {"name": chosen.target, "latency_ms": round(on_target.median_ms, 4),
                       "latency": on_target.to_dict()} if on_target else None,
            "warm_start": warm_start_of(chosen, retrained),
            "teacher_comparison": teacher_comparison(chosen.study, chosen.trial.number) if chosen.trial else None,
            "versions": versions(), "commands": reproduce_commands(chosen, opts, plan.data, plan.imgsz, retrained)}


def report_export(chosen: Picked, out: Path, checks: dict[str, Any], latency: Any) -> int:
    """Print each check and the latency; 0 when every check passed, else 1."""
    for name, check in checks.items():
        log(f"check {name}: {'PASS' if check['ok'] else 'FAIL'}: {check['detail']}")
    log(f"latency: {latency.label()}")
    if chosen.target_latency:
        log(f"latency on target {chosen.target} (recorded by search.remeasure): {chosen.target_latency.label()}")
    written = ["model.pt", "best.pt", "model.onnx", "model_card.md", "model_card.json"]
    written += [p.name for p in sorted(out.glob("*int8*"))]
    log(f"wrote {out}/{', '.join(written)}")
    failed = [n for n, c in checks.items() if not c["ok"]]
    if failed:
        log(f"export FAILED check(s): {', '.join(failed)} (files kept in {out})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
