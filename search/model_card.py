"""``model_card.md`` + ``model_card.json``: what was shipped, how good and fast it is, how to reproduce it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_model_card(folder: Path, card: dict[str, Any]) -> tuple[Path, Path]:
    """Write the card as JSON and as Markdown into ``folder``."""
    js = folder / "model_card.json"
    js.write_text(json.dumps(card, indent=1, default=str))
    md = folder / "model_card.md"
    md.write_text(_markdown(card))
    return md, js


def _markdown(card: dict[str, Any]) -> str:
    arch = card["architecture"]
    lines = [f"# YOLO26{arch['scale']} searched model `{card['hash']}`", "",
             f"Chosen: {card['chosen']}", "",
             f"Head: `{card.get('head', 'unpinned')}` (validated, measured and exported)", "",
             "## Architecture", "", "| stage | block | SE | kernels | downsample |",
             "|---|---|---|---|---|"]
    for name, st in arch["stages"].items():
        se = st.get("se")
        se_text = "-" if not se else f"{se['placement']}, {se['kind']} " + (
            f"r={se['reduction']}" if "reduction" in se else f"r in [{se['min_ratio']}, {se['max_ratio']}]")
        lines.append(f"| {name} | {st['block']} | {se_text} | {st.get('kernels', '-')} | {st.get('downsample', '-')} |")
    lines += ["", "## Metrics", "", "| | value |", "|---|---|"]
    for key, value in card["metrics"].items():
        lines.append(f"| {key} | {value} |")
    lat = card["latency"]
    lines += ["", "## Latency", "",
              f"{lat['median_ms']:.3f} ms median (p90 {lat['p90_ms']:.3f}, cv {100 * lat['cv']:.1f}%, n={lat['n']}), "
              f"{lat['mode']} {lat['dtype']} batch {lat['batch']} at {lat['imgsz']} px on {lat['device']}, "
              f"{lat['threads']} threads, torch {lat['torch']}, fused={lat['fused']}", "",
              "## Checks", ""]
    for name, check in card["checks"].items():
        lines.append(f"- {name}: {'PASS' if check['ok'] else 'FAIL'} ({check['detail']})")
    lines += ["", "## Data and versions", "", f"- data: {card.get('data')}",
              f"- versions: {json.dumps(card.get('versions', {}))}", "", "## Reproduce", ""]
    lines += [f"    {cmd}" for cmd in card.get("commands", [])]
    lines += ["", "## Files", "", "- `model.pt`: fused weights, loads with `torch.load(..., weights_only=True)`; "
              "`trainers.load_exported(path)` rebuilds the model.",
              "- `best.pt`: the Ultralytics checkpoint. It is a pickle: load only files you trust.",
              "- `model.onnx`: fused model, input `images` (1x3xSxS float32 0-1), output `output0`."]
    return "\n".join(lines) + "\n"
