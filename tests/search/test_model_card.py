"""The model card names the shipped architecture's blocks with their widths and depths, and its head stem."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from search.engine.per_trial import record_architecture
from search.ship.model_card import write_model_card
from trainers.model.architecture import Architecture, StageChoice

ARCH = Architecture.create({"p4_backbone": StageChoice(block="RepViT", width=0.75, depth=2),
                            "p5_out": StageChoice(width=1.5)})
LABEL = "C3k2/C3k2/RepViT x0.75 d2/C3k2/C3k2/C3k2/C3k2/C3k2 x1.5"


def test_the_card_shows_blocks_with_width_and_depth(tmp_path: Path) -> None:
    card = {"hash": ARCH.hash, "architecture": ARCH.to_dict(), "blocks": ARCH.blocks_summary(), "chosen": "knee",
            "metrics": {}, "checks": {}}
    md, js = write_model_card(tmp_path, card)
    assert f"Blocks: `{LABEL}` (per stage; `x` width, `d` depth where not stock)" in md.read_text().splitlines()
    assert json.loads(js.read_text())["blocks"] == LABEL


def test_the_card_names_a_repconv_head_stem_and_not_a_stock_one(tmp_path: Path) -> None:
    rep = Architecture.create(dict(ARCH.stages), head_stem="repconv", head_stem_layers=1)
    lines = []
    for arch in (ARCH, rep):
        card = {"hash": arch.hash, "architecture": arch.to_dict(), "blocks": arch.blocks_summary(), "chosen": "knee",
                "metrics": {}, "checks": {}}
        lines.append(write_model_card(tmp_path, card)[0].read_text().splitlines())
    assert not [line for line in lines[0] if line.startswith("Head stem")]
    assert ("Head stem: `repconv`, 1 RepConv layer(s) in each class and box branch of both heads (fused to plain 3x3 "
            "convs)") in lines[1]
    assert f"Blocks: `{LABEL} + repconv head, 1 layer` (per stage; `x` width, `d` depth where not stock)" in lines[1]


def test_a_card_written_without_blocks_still_renders(tmp_path: Path) -> None:
    card = {"hash": ARCH.hash, "architecture": ARCH.to_dict(), "chosen": "knee", "metrics": {}, "checks": {}}
    md, _ = write_model_card(tmp_path, card)
    assert "Blocks:" not in md.read_text() and "| p4_backbone | RepViT | 0.75 | 2 |" in md.read_text()


def test_the_dashboards_blocks_attr_shows_width_and_depth() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    trial = study.ask()
    record_architecture(trial, ARCH)
    assert study.trials[0].user_attrs["blocks"] == LABEL and study.trials[0].user_attrs["hash"] == ARCH.hash


def test_an_int8_card_shows_float_and_int8_map_and_the_drop_of_the_search_and_the_export(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from optuna.trial import TrialState, create_trial

    from search.export import add_int8
    from search.ship.model_card import search_int8
    from search.study.records import record_attrs

    def int8(m: float, q: float, path: str) -> dict[str, object]:
        return {"backend": "openvino", "quantizer": "ultralytics-8.4.190+nncf-3.4.0", "calib_images": 8, "imgsz": 64,
                "map50_95_float": m, "map50_95_int8": q, "float_path": f"{path}.onnx", "int8_path": path,
                "int8_drop": round(100 * (m - q), 4)}

    searched = create_trial(state=TrialState.COMPLETE, values=[0.3, 1.0],
                            system_attrs=record_attrs({"int8": int8(0.31, 0.30, "search")}))
    assert search_int8(SimpleNamespace(trial=searched)) == int8(0.31, 0.30, "search")
    assert search_int8(SimpleNamespace(trial=create_trial(state=TrialState.COMPLETE, values=[0.3, 1.0]))) is None
    card = {"hash": ARCH.hash, "architecture": ARCH.to_dict(), "chosen": "knee", "metrics": {}, "checks": {},
            "files": {}}
    card = add_int8(card, int8(0.31, 0.30, "search"), int8(0.52, 0.505, "model_int8_openvino_model"), tmp_path)
    assert card["metrics"] == {"search_map50_95_int8": 0.30, "search_int8_drop": 1.0, "map50_95_float_export": 0.52,
                               "map50_95_int8": 0.505, "int8_drop_points": 1.5}
    md = write_model_card(tmp_path, card)[0].read_text().splitlines()
    section = md[md.index("## INT8 (post-training quantization)"):]
    assert section[4].split(" | ")[1:4] == ["float mAP50-95", "INT8 mAP50-95", "drop (points)"]
    assert section[6].startswith("| search trial (its own exports) | 0.3100 | 0.3000 | +1.00 | openvino, ultralytics-")
    assert section[7].startswith("| this export | 0.5200 | 0.5050 | +1.50 | openvino, ultralytics-8.4.190+nncf-3.4.0 |")
