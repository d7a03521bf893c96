"""``python -m search.space check|sample|baseline`` as real processes.

A bad space file is one line on stderr naming the file and the field, exit code 2, no traceback;
``sample`` and ``baseline`` print JSON lines only on stdout, the same ones for the same seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from search.space import SearchSpace
from search.space.__main__ import sample_architectures
from trainers.model.architecture import Architecture

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "spaces").glob("*.yaml"))
DEFAULT = REPO / "spaces" / "yolo26.yaml"
STOCK_N_PARAMS = 2_572_280  # YOLO("yolo26n.yaml") at nc=80

GOOD_STAGE = "stages:\n  p3_backbone: {block: [C3k2, RepViT]}\n"


def space_cli(*args: str, cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "search.space", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused input (exit 2, no traceback, nothing on stdout)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {proc.stderr[:1000]!r}"
    assert lines[0].startswith("error: ")
    assert proc.stdout == ""
    return lines[0]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_check_accepts_every_shipped_space(path: Path) -> None:
    proc = space_cli("check", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    space = SearchSpace.load(path)
    assert report == {"path": str(path), "valid": True, "stages": len(space.spec.stages),
                      "dimensions": space.dimensions(), "size": space.size()}
    assert proc.stderr.strip() == (f"{path}: ok: {report['stages']} stages, {report['dimensions']} dimensions, "
                                   f"{report['size']} architectures")


# (file name, content as text or bytes or None for no file, what the one stderr line must contain after the file name)
BAD_FILES: list[tuple[str, str | bytes | None, str]] = [
    ("wrong-type-block", "stages:\n  p3_backbone: {block: 3}\n",
     "stages.p3_backbone.block[0]: must be one of ['C3k2', 'RepViT', 'C3k2_RVB_SE', 'OREPA', 'RepBlock'], got 3"),
    ("wrong-type-stage", "stages:\n  p4_backbone: [RepViT]\n", "stages.p4_backbone: must be a mapping, got list"),
    ("wrong-type-reduction", "stages:\n  p4_backbone: {block: RepViT, se: {placement: in_blocks, reduction: '8'}}\n",
     "stages.p4_backbone.se.reduction[0]: must be an integer in [1, 64], got '8'"),
    ("unknown-block", "stages:\n  p3_backbone: {block: [C3k2, MobileOne]}\n",
     "stages.p3_backbone.block[1]: must be one of ['C3k2', 'RepViT', 'C3k2_RVB_SE', 'OREPA', 'RepBlock'], got "
     "'MobileOne'"),
    ("even-kernel", "stages:\n  p3_backbone: {block: RepViT, kernels: [[3], [3, 4]]}\n",
     "stages.p3_backbone.kernels[1][1]: must be one of [3, 5, 7, 9, 11], got 4"),
    ("min-ratio-above-max-dynamic",
     "stages:\n  p4_backbone:\n    block: RepViT\n    se: {placement: in_blocks, kind: [fixed, dynamic], "
     "min_ratio: 16, max_ratio: [4, 8]}\n",
     "stages.p4_backbone.se.min_ratio: must be < max_ratio for at least one pair, got min_ratio [16] "
     "and max_ratio [4, 8]"),
    ("empty-choices", "stages:\n  p4_backbone: {block: RepViT, downsample: []}\n",
     "stages.p4_backbone.downsample: must list at least one choice, got []"),
    ("unknown-key", "stages:\n  p4_backbone:\n    block: RepViT\n    se: {placement: in_blocks, reduktion: 8}\n",
     "stages.p4_backbone.se.reduktion: unknown key, allowed: ['placement', 'kind', 'reduction', 'min_ratio', "
     "'max_ratio'] (did you mean 'reduction'?)"),
    ("unknown-stage", "stages:\n  p5_bakbone: {block: C3k2}\n", "stages.p5_bakbone: unknown key, allowed: "),
    ("broken-yaml", "stages:\n  p3_backbone: {block: [C3k2, RepViT}\n", "broken YAML at line 2"),
    ("not-a-mapping", "- stages\n- p3_backbone\n", "must be a mapping, got list ['stages', 'p3_backbone']"),
    ("empty-file", "", "file is empty, expected a mapping with a 'stages' key"),
    ("missing-file", None, "file not found"),
    ("garbage-bytes", bytes(range(128, 256)) * 8, "not UTF-8 text (byte 0)"),
    ("unicode-junk", "stages:\n  p3_backbone: {block: \"R\u00e9pViT \u2603\U0001f4a5\"}\n",
     "stages.p3_backbone.block[0]: must be one of ['C3k2', 'RepViT', 'C3k2_RVB_SE', 'OREPA', 'RepBlock'], got "
     "'R\u00e9pViT \u2603\U0001f4a5'"),
    ("unicode-key", "st\u00e4ges:\n  p3_backbone: {block: C3k2}\n",
     "st\u00e4ges: unknown key, allowed: ['base', 'scale', 'backbone', 'head', 'head_stem', 'head_stem_layers', "
     "'stages', 'objectives', 'constraints', 'latency', 'train', 'oneshot', 'presets'] (did you mean 'stages'?)"),
    ("negative-epochs", GOOD_STAGE + "train: {epochs: -3}\n", "train.epochs: must be an integer in [1, 10000], got -3"),
    ("bad-head", GOOD_STAGE + "head: nmsfree\n", "head: must be one of ['nms_free', 'nms'], got 'nmsfree'"),
    ("bad-head-stem", GOOD_STAGE + "head_stem: [stock, repvgg]\n",
     "head_stem[1]: must be one of ['stock', 'repconv'], got 'repvgg'"),
    ("head-stem-layers-3", GOOD_STAGE + "head_stem: repconv\nhead_stem_layers: [2, 3]\n",
     "head_stem_layers[1]: must be one of [1, 2], got 3"),
    ("head-stem-layers-string", GOOD_STAGE + "head_stem: repconv\nhead_stem_layers: two\n",
     "head_stem_layers[0]: must be one of [1, 2], got 'two'"),
    ("bad-backend", GOOD_STAGE + "latency: {backend: tensorrt}\n",
     "latency.backend: must be one of ['torch', 'onnxruntime', 'openvino'], got 'tensorrt'"),
    ("negative-se-cost", GOOD_STAGE + "train: {se_width_cost: -0.1}\n",
     "train.se_width_cost: must be a finite number >= 0, got -0.1"),
    ("string-distill-weight", GOOD_STAGE + "train: {distill_weight: heavy}\n",
     "train.distill_weight: must be a finite number >= 0, got 'heavy'"),
    ("zero-threads", GOOD_STAGE + "latency: {threads: 0}\n", "latency.threads: must be an integer in [1, 256], got 0"),
    ("huge-reduction",
     "stages:\n  p4_backbone: {block: RepViT, se: {placement: in_blocks, reduction: 1000000000000000000000}}\n",
     "stages.p4_backbone.se.reduction[0]: must be an integer in [1, 64], got 1000000000000000000000"),
    ("huge-batch", GOOD_STAGE + "train: {batch: 123456789}\n", "train.batch: must be an integer in [1, 1024]"),
    ("tie-to-unknown-stage", "stages:\n  p4_backbone: {block: RepViT}\n  p4_out: {tie: p4_backone}\n",
     "stages.p4_out.tie: must name an untied stage of this file ['p4_backbone'], got 'p4_backone'"),
    ("bad-constraint", GOOD_STAGE + "constraints: ['latency_ms < 5']\n",
     "constraints[0]: must read 'metric <= number' or 'metric >= number', got 'latency_ms < 5'"),
    ("latency-imgsz", GOOD_STAGE + "latency: {imgsz: 600}\n",
     "latency.imgsz: must be a multiple of 32 (the model's largest stride), got 600"),
    ("duplicate-key", "stages:\n  p3_backbone: {block: C3k2}\n  p3_backbone: {block: RepViT}\n",
     "broken YAML at line 3: duplicate key 'p3_backbone'"),
    ("width-off-grid", "stages:\n  p4_backbone: {width: [0.5, 0.8]}\n",
     "stages.p4_backbone.width[1]: must be a multiple of 0.125 in [0.25, 2.0], got 0.8"),
    ("width-string", "stages:\n  p4_backbone: {width: wide}\n",
     "stages.p4_backbone.width[0]: must be a multiple of 0.125 in [0.25, 2.0], got 'wide'"),
    ("depth-zero", "stages:\n  p2_backbone: {block: RepViT, depth: [0, 1]}\n",
     "stages.p2_backbone.depth[0]: must be an integer in [1, 8], got 0"),
    ("depth-fraction", "stages:\n  p2_backbone: {depth: 1.5}\n",
     "stages.p2_backbone.depth[0]: must be an integer in [1, 8], got 1.5"),
]


def _write(tmp_path: Path, name: str, content: str | bytes | None) -> Path:
    path = tmp_path / f"{name}.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    return path


def test_bad_files_are_many_and_distinct() -> None:
    assert len(BAD_FILES) >= 15
    assert len({name for name, _, _ in BAD_FILES}) == len({c for _, c, _ in BAD_FILES}) == len(BAD_FILES)


@pytest.mark.parametrize("name, content, needle", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_check_refuses_a_bad_file_in_one_line(tmp_path: Path, name: str, content: str | bytes | None,
                                              needle: str) -> None:
    path = _write(tmp_path, name, content)
    line = one_error_line(space_cli("check", str(path)))
    assert line == f"error: {path}: {needle}" or line.startswith(f"error: {path}: {needle}"), line


@pytest.mark.parametrize("args, needle", [
    (["check"], "the following arguments are required: path"),
    (["sample", str(DEFAULT), "--n", "0"], "--n must be an integer in [1, 10000], got 0"),
    (["sample", str(DEFAULT), "--seed", "x"], "--seed must be an integer in [0, 2147483647], got 'x'"),
    (["bogus", str(DEFAULT)], "invalid choice: 'bogus'"),
], ids=["no-path", "n-0", "seed-x", "bad-command"])
def test_bad_arguments_are_one_line(args: list[str], needle: str) -> None:
    assert needle in one_error_line(space_cli(*args))


def test_sample_refuses_a_bad_file_before_building_anything(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad", "stages:\n  p3_backbone: {block: RepViT, kernels: [[4]]}\n")
    line = one_error_line(space_cli("sample", str(path), "--n", "2"))
    assert line == f"error: {path}: stages.p3_backbone.kernels[0][0]: must be one of [3, 5, 7, 9, 11], got 4"


def _json_lines(proc: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]  # every stdout line must be JSON


def test_sample_prints_json_lines_only_and_the_same_for_the_same_seed() -> None:
    first = space_cli("sample", str(DEFAULT), "--n", "2", "--seed", "3")
    second = space_cli("sample", str(DEFAULT), "--n", "2", "--seed", "3")
    lines = _json_lines(first)
    assert len(lines) == 2 and len(first.stdout.splitlines()) == 2
    assert first.stdout == second.stdout
    expected = sample_architectures(SearchSpace.load(DEFAULT), 2, 3)  # the CLI samples what the library samples
    for line, arch in zip(lines, expected):
        assert set(line) == {"hash", "params", "gflops", "base", "scale", "stages"}
        assert Architecture.from_dict(line) == arch and line["hash"] == arch.hash
        assert isinstance(line["params"], int) and line["params"] > 1_000_000
        assert isinstance(line["gflops"], float) and 1.0 < line["gflops"] < 50.0
        assert not arch.is_baseline
    assert lines[0]["hash"] != lines[1]["hash"]
    other = _json_lines(space_cli("sample", str(DEFAULT), "--n", "2", "--seed", "4"))
    assert [x["hash"] for x in other] != [x["hash"] for x in lines]


def test_baseline_prints_the_stock_model() -> None:
    proc = space_cli("baseline", str(DEFAULT))
    lines = _json_lines(proc)
    assert len(lines) == 1
    line = lines[0]
    assert line["params"] == STOCK_N_PARAMS
    assert Architecture.from_dict(line) == Architecture.baseline() and line["hash"] == Architecture.baseline().hash
    assert line["gflops"] == pytest.approx(5.48, abs=0.01)  # fused (Detect's one-to-many branch dropped), 640 px


def test_sample_builds_widths_and_depths(tmp_path: Path) -> None:
    path = _write(tmp_path, "shaped", "stages:\n  p4_backbone: {width: [0.5, 1.25], depth: [1, 2]}\n"
                                      "  p4_neck: {tie: p4_backbone}\n")
    lines = _json_lines(space_cli("sample", str(path), "--n", "4", "--seed", "5", "--imgsz", "64"))
    shapes = set()
    for line in lines:
        arch = Architecture.from_dict(line)
        p4, neck = arch.stage("p4_backbone"), arch.stage("p4_neck")
        assert (neck.width, neck.depth) == (p4.width, p4.depth)  # tied (p4_neck has no stride-2 conv of its own)
        written: Any = line["stages"]
        assert written["p4_backbone"]["width"] == p4.width
        assert written["p4_backbone"].get("depth") == p4.depth  # depth 1 (stock) is not written
        params: Any = line["params"]
        if p4.width > 1.0:
            assert params > STOCK_N_PARAMS
        elif p4.depth is None:
            assert params < STOCK_N_PARAMS
        shapes.add((p4.width, p4.depth))
    assert shapes == {(0.5, None), (0.5, 2), (1.25, None), (1.25, 2)}  # seed 5 draws all four
