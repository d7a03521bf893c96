"""``model_card.md`` + ``model_card.json``: what was shipped, how good and fast it is, how to reproduce it.

The card states what each file needs to load, the sizes it was trained, validated and exported
at, the fused parameter count (the shipped model's), every latency figure of the architecture
with its conditions (search time, each re-measured target, export time) and the commands that
reproduce it with every flag the run used.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from search.ship.options import ExportOptions
from search.study.records import retrained_key

FILES = {
    "model.onnx": "onnxruntime only (`onnxruntime.InferenceSession`); `YOLO(\"model.onnx\")` with ultralytics + "
                  "onnxruntime reads its metadata (class names, stride, image size, head)",
    "model.pt": "torch + this project installed: `trainers.load_exported(path)` (safe: `torch.load(..., "
                "weights_only=True)` reads it)",
    "best.pt": "this project installed (`pip install -e <this repo>`): the Ultralytics checkpoint pickles "
               "`trainers.model.detection_model.RepDetectionModel` and the `blocks` layers; then `YOLO(\"best.pt\")` "
               "predicts, validates and exports (its fuse() folds every block). It is a pickle: load only files you "
               "trust. Without the project it fails with `No module named 'blocks'`; do not let Ultralytics "
               "auto-install that name: the PyPI package of that name is unrelated",
}


def latency_measurements(chosen: Any, export_latency: Any) -> list[dict[str, Any]]:
    """Every latency figure of the chosen architecture: search time, each recorded target, this export."""
    from search.study.records import read_record
    from search.study.targets import read_target, targets

    rows: list[dict[str, Any]] = []
    if chosen.trial is not None:
        searched = read_record(chosen.trial, "latency")
        if searched:
            rows.append({"when": f"search, trial {chosen.trial.number}, before training", **searched})
        if chosen.study is not None:
            for target in targets(chosen.study):
                figure = read_target(chosen.study, target).get(chosen.trial.number)
                if figure is not None:
                    rows.append({"when": f"target {target} (search.remeasure or end-of-search re-measure)",
                                 **figure.to_dict()})
    rows.append({"when": "export (this card)", **export_latency.to_dict()})
    for row in rows:
        row.pop("samples", None)
    return rows


def warm_start_of(chosen: Any, retrained: dict[str, Any] | None) -> dict[str, Any]:
    """Teacher and initialisation of the search trial and of the retrain that produced the shipped weights."""
    from search.study.records import read_record

    out: dict[str, Any] = {}
    if chosen.trial is not None:
        out.update(search_teacher=read_record(chosen.trial, "teacher"),
                   search_init_from=read_record(chosen.trial, "init_from"),
                   inherited_share=chosen.trial.user_attrs.get("inherited_share"))
    if retrained:
        out.update(retrained_teacher=retrained.get("teacher"), retrained_init_from=retrained.get("init_from"))
    return {k: v for k, v in out.items() if v is not None}


def search_int8(chosen: Any) -> dict[str, Any] | None:
    """The INT8 accuracy the search measured for the chosen trial (its ``int8`` record: float and INT8 mAP50-95 of
    its own exports, the drop, quantizer, calibration images), or ``None`` (a float target, or no trial)."""
    from search.study.records import read_record

    record = read_record(chosen.trial, "int8") if chosen.trial is not None else None
    return record if isinstance(record, dict) and "map50_95_int8" in record else None


def teacher_comparison(study: Any, trial_number: int) -> dict[str, Any] | None:
    """mAP of the chosen trial retrained with a teacher and without, when both ran at the same epochs."""
    if study is None:
        return None
    runs = {v: study.user_attrs.get(retrained_key(trial_number, v)) for v in ("plain", "teacher")}
    plain, taught = runs["plain"], runs["teacher"]
    if not (plain and taught) or plain["epochs"] != taught["epochs"]:
        return None
    return {"epochs": plain["epochs"], "map50_95_without_teacher": plain["map50_95"],
            "map50_95_with_teacher": taught["map50_95"], "teacher": taught["teacher"]}


def reproduce_commands(chosen: Any, args: ExportOptions, data: str | None, imgsz: int,
                       retrained: dict[str, Any] | None) -> list[str]:
    """The commands that reproduce this model, each with the flags actually used (the storage URL without its
    password: the card ships with the model; PGPASSWORD or ~/.pgpass supply it)."""
    from search.study.config import url_without_password

    cmds = []
    if chosen.trial is not None:
        src = ["--storage", url_without_password(args.storage or ""), "--study", str(args.study),
               "--trial", str(chosen.trial.number)]
        if chosen.config is not None:
            cmds.append(chosen.config.command())
    else:
        src = ["--arch", str(args.arch)]
    if retrained:
        warm = [w for key, flag in (("teacher", "--teacher"), ("init_from", "--init-from")) if retrained.get(key)
                for w in (flag, str(retrained[key]["path"]))]
        cmds.append(shlex.join(["python", "-m", "search.retrain", *src, "--data", str(retrained["data"]),
                                "--epochs", str(retrained["epochs"]), "--imgsz", str(retrained["imgsz"]), *warm,
                                "--out", str(Path(retrained["result"]).parent)]))
    export = ["python", "-m", "search.export", *src, "--imgsz", str(imgsz), "--out", str(args.out)]
    if chosen.target:
        export += ["--target", chosen.target]
    if args.weights:
        export += ["--weights", str(args.weights)]
    if data:
        export += ["--data", data]
    cmds.append(shlex.join(export))
    return cmds


def write_model_card(folder: Path, card: dict[str, Any]) -> tuple[Path, Path]:
    """Write the card as JSON and as Markdown into ``folder``."""
    js = folder / "model_card.json"
    js.write_text(json.dumps(card, indent=1, default=str))
    md = folder / "model_card.md"
    md.write_text(_markdown(card))
    return md, js


def _latency_row(row: dict[str, Any]) -> str:
    lo, hi = row.get("ci_low_ms"), row.get("ci_high_ms")
    interval = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return (f"| {row['when']} | {row['median_ms']:.3f}{interval} | {row.get('backend', 'torch')} {row['mode']} "
            f"{row['dtype']}, batch {row['batch']}, {row['imgsz']} px, {row['threads']} threads, head "
            f"{row.get('head', 'unpinned')} | {row['device']} | torch {row['torch']} | {row.get('measured_at', '')} |")


def _teacher_lines(card: dict[str, Any]) -> list[str]:
    lines = []
    for key, title in (("search_teacher", "teacher of the search trial"), ("search_init_from", "search trial "
                       "initialised from"), ("retrained_teacher", "teacher of the retrain"),
                       ("retrained_init_from", "retrain initialised from")):
        info = card.get("warm_start", {}).get(key)
        if info:
            lines.append(f"- {title}: `{info['path']}` (sha256 {info['sha256'][:12]}, {info['architecture']}, "
                         f"{info['blocks']})")
    share = card.get("warm_start", {}).get("inherited_share")
    if share is not None:
        lines.append(f"- share of parameters inherited at initialisation: {share:.1%}")
    cmp = card.get("teacher_comparison")
    if cmp:
        lines.append(f"- retrained {cmp['epochs']} epochs: mAP50-95 {cmp['map50_95_with_teacher']:.4f} with the "
                     f"teacher, {cmp['map50_95_without_teacher']:.4f} without")
    return ["", "## Teacher and initialisation", "", *lines] if lines else []


def _int8_row(when: str, rec: dict[str, Any]) -> str:
    return (f"| {when} | {rec['map50_95_float']:.4f} | {rec['map50_95_int8']:.4f} | {rec['int8_drop']:+.2f} | "
            f"{rec['backend']}, {rec['quantizer']} | {rec['calib_images']} | {rec['imgsz']} px |")


def _int8_lines(card: dict[str, Any]) -> list[str]:
    """The INT8 section: float and INT8 mAP50-95 and the drop, of the search trial and of this export."""
    rows = [(when, card[key]) for key, when in (("search_int8", "search trial (its own exports)"),
                                                ("int8", "this export")) if card.get(key)]
    if not rows:
        return []
    return ["", "## INT8 (post-training quantization)", "",
            "Float and INT8 exports of one runtime validated alike on the val split; drop = float minus INT8, "
            "mAP50-95 points.", "",
            "| model | float mAP50-95 | INT8 mAP50-95 | drop (points) | quantizer | calibration images | size |",
            "|---|---|---|---|---|---|---|", *(_int8_row(when, rec) for when, rec in rows)]


def _markdown(card: dict[str, Any]) -> str:
    arch, sizes = card["architecture"], card.get("sizes", {})
    lines = [f"# YOLO26{arch['scale']} searched model `{card['hash']}`", "",
             f"Chosen: {card['chosen']}", "",
             *([f"Blocks: `{card['blocks']}` (per stage; `x` width, `d` depth where not stock)", ""]
               if card.get("blocks") else []),
             f"Head: `{card.get('head', 'unpinned')}` (validated, measured and exported)", "",
             *([f"Head stem: `{arch['head_stem']}`, {arch['head_stem_layers']} RepConv layer(s) in each class and box "
                "branch of both heads (fused to plain 3x3 convs)", ""] if "head_stem" in arch else []),
             "## Architecture", "", "| stage | block | width | depth | SE | kernels | downsample |",
             "|---|---|---|---|---|---|---|"]
    for name, st in arch["stages"].items():
        se = st.get("se")
        se_text = "-" if not se else f"{se['placement']}, {se['kind']} " + (
            f"r={se['reduction']}" if "reduction" in se else f"r in [{se['min_ratio']}, {se['max_ratio']}]")
        lines.append(f"| {name} | {st['block']} | {st.get('width', 1.0)} | {st.get('depth') or 'stock'} | {se_text} | "
                     f"{st.get('kernels', '-')} | {st.get('downsample', '-')} |")
    lines += ["", "## Sizes", "",
              f"- trained at {sizes.get('train_imgsz')} px, validated at {sizes.get('val_imgsz')} px",
              f"- exported at {sizes.get('export_imgsz')} px: ONNX input `images` "
              f"1x3x{sizes.get('export_imgsz')}x{sizes.get('export_imgsz')} float32 RGB in 0-1, static shape",
              "", "## Metrics", "", "| | value |", "|---|---|"]
    for key, value in card["metrics"].items():
        lines.append(f"| {key} | {value} |")
    lines += _int8_lines(card)
    lines += _teacher_lines(card)
    lines += ["", "## Latency measurements of this architecture", "",
              "| when | median ms [95% CI] | conditions | device | versions | measured at |",
              "|---|---|---|---|---|---|"]
    lines += [_latency_row(row) for row in card.get("latency_measurements", [])]
    lines += ["", "## Checks", ""]
    for name, check in card["checks"].items():
        lines.append(f"- {name}: {'PASS' if check['ok'] else 'FAIL'} ({check['detail']})")
    lines += ["", "## Data and versions", "", f"- data: {card.get('data')}",
              f"- versions: {json.dumps(card.get('versions', {}))}", "", "## Reproduce", ""]
    lines += [f"    {cmd}" for cmd in card.get("commands", [])]
    lines += ["", "## Files and what each needs to load", ""]
    lines += [f"- `{name}`: {need}." for name, need in card.get("files", FILES).items()]
    return "\n".join(lines) + "\n"
