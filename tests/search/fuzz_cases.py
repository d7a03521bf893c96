"""Deterministic bad-input cases for ``tests/search/test_fuzz.py``: space files and ``search.run`` flags.

Space cases mutate one field of the shipped ``spaces/yolo26.yaml`` at a time (type swaps at every
field path, missing keys, empty collections, out-of-range values, unicode, deep nesting, long
strings, seeded random hostile values) or are raw file bytes (garbage, invalid UTF-8, YAML alias
bombs, duplicate keys). Everything is generated from fixed seeds, so every run sees the same cases.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "spaces" / "yolo26.yaml"
SEED = 20260

Part = str | int
SWAPS: dict[str, Any] = {"int": 7, "str": "seven", "list": [7], "mapping": {"k": 7}, "null": None, "bool": True}
HOSTILE_NUMBERS: list[Any] = [10**30, -(10**30), -1, 0, float("inf"), float("nan"), "NaN", "1e309", 3.5, 5.0]
HOSTILE_VALUES: list[Any] = HOSTILE_NUMBERS + [
    "", "\U0001f642", "\u202en", "C3k2\u200b", "x" * 5000, [], {}, [[[[[]]]]], {"\U0001f642": []}, "0x10", False,
    {"tie": "p3_backbone"}, [None], "-1",
]


@dataclass(frozen=True)
class SpaceCase:
    """One space file to check.

    Attributes:
        id: the pytest id.
        text: the file's bytes.
        field: the dotted field path that was mutated ("" for a file-level case: the message must
            name the file).
        exact: the error must name ``field`` or a field inside it (a type swap at a leaf); otherwise
            a prefix of ``field`` (its mapping or list) is enough.
        needle: a further string the message must contain ("" for none).
        invalid: invalid by construction (the CLI must reject it); other mutations are judged by ``parse_space``.
    """

    id: str
    text: bytes
    field: str = ""
    exact: bool = False
    needle: str = ""
    invalid: bool = False


def shipped_data() -> dict[str, Any]:
    """The shipped space as plain data, with YAML anchors unshared (each stage its own lists)."""
    data = yaml.safe_load(SHIPPED.read_text())
    return json.loads(json.dumps(data))


def dotted(parts: tuple[Part, ...]) -> str:
    """The schema's spelling of a path: ``("stages", "p2", "kernels", 1, 0)`` -> ``"stages.p2.kernels[1][0]"``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def walk(value: Any, parts: tuple[Part, ...] = ()) -> Iterator[tuple[tuple[Part, ...], Any]]:
    """Every (path, value) below ``value``, parents before children; the root itself is left out."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*parts, key), child
        yield from walk(child, (*parts, key))


def written(data: dict[str, Any]) -> list[tuple[tuple[Part, ...], Any]]:
    """The (path, value) pairs of ``data`` as the shipped file writes them: an alias (``*backbone_stage``)
    is a field path of its own, but what it points to is visited once, under its anchor."""
    seen: set[int] = set()
    paths: set[tuple[Part, ...]] = set()

    def visit(node: yaml.Node, parts: tuple[Part, ...]) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        children: Any = ([(k.value, v) for k, v in node.value] if isinstance(node, yaml.MappingNode)
                         else enumerate(node.value) if isinstance(node, yaml.SequenceNode) else ())
        for key, child in children:
            paths.add((*parts, key))
            visit(child, (*parts, key))

    visit(yaml.compose(SHIPPED.read_text()), ())
    return [(p, v) for p, v in walk(data) if p in paths]


def replaced(data: Any, parts: tuple[Part, ...], value: Any) -> Any:
    """A copy of ``data`` with the node at ``parts`` set to ``value``."""
    out = json.loads(json.dumps(data))
    node = out
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value
    return out


def deleted(data: Any, parts: tuple[Part, ...]) -> Any:
    """A copy of ``data`` without the mapping key at ``parts``."""
    out = json.loads(json.dumps(data))
    node = out
    for p in parts[:-1]:
        node = node[p]
    del node[parts[-1]]
    return out


def dump(data: Any) -> bytes:
    """YAML bytes of ``data`` (no anchors: every node is its own object)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when present: 10x faster
    return yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True, width=1 << 30).encode("utf-8")


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return {int: "int", str: "str", list: "list", dict: "mapping", type(None): "null"}.get(type(value), "other")


def type_swaps(data: dict[str, Any]) -> list[SpaceCase]:
    """Every field path of the shipped file, its value swapped for each other type in turn."""
    cases = []
    for parts, value in written(data):
        for name, new in SWAPS.items():
            if name != _type_name(value):
                field = dotted(parts)
                cases.append(SpaceCase(f"swap-{field}-{name}", dump(replaced(data, parts, new)), field, exact=True))
    return cases


def missing_and_empty(data: dict[str, Any]) -> list[SpaceCase]:
    """Each mapping key of the shipped file removed in turn; each list and mapping emptied in turn."""
    cases = []
    for parts, value in written(data):
        field = dotted(parts)
        if isinstance(parts[-1], str):
            cases.append(SpaceCase(f"missing-{field}", dump(deleted(data, parts)), field))
        if isinstance(value, (list, dict)):
            empty: Any = [] if isinstance(value, list) else {}
            cases.append(SpaceCase(f"empty-{field}", dump(replaced(data, parts, empty)), field))
    return cases


ZERO_MEANS_OFF = frozenset({"oneshot.calib_images", "oneshot.retrain_top"})  # documented: 0 turns it off


def out_of_range(data: dict[str, Any]) -> list[SpaceCase]:
    """Huge, negative, zero, infinite, NaN and fractional values at every integer leaf of one stage and the settings."""
    leaves = [p for p, v in walk(data) if isinstance(v, int) and not isinstance(v, bool)
              and (p[0] != "stages" or p[1] == "p2_backbone")]
    return [SpaceCase(f"range-{dotted(p)}-{v!r}", dump(replaced(data, p, v)), dotted(p), exact=True, invalid=True)
            for p in leaves for v in HOSTILE_NUMBERS if not (v == 0 and dotted(p) in ZERO_MEANS_OFF)]


def unicode_and_size(data: dict[str, Any]) -> list[SpaceCase]:
    """Emoji, right-to-left and zero-width text in keys and values; deep nesting; very long strings."""
    smile, rtl, zw = "\U0001f642", "\u202e", "\u200b"
    edits: list[tuple[tuple[Part, ...], Any]] = [
        (("scale",), "\u05e0"), (("scale",), rtl + "n"), (("scale",), "n" + zw),
        (("base",), "yolo26" + smile + ".yaml"),
        (("stages", "p2_backbone", "block", 0), "C3k2" + zw), (("stages", "p2_backbone", "block", 0), "\u202bRepViT"),
        (("stages", "p2_backbone", "downsample", 1), "Rep\u200dConv"), (("latency", "device"), "cuda:\u0661"),
        (("latency", "device"), "\u0661"), (("latency", "dtype"), "float\uff11\uff16"),
        (("constraints", 0), "params_m <= \uff14"), (("constraints", 0), "params_m \u2264 4"),
        (("objectives", "latency_ms"), "minimize" + zw), (("stages", "p4_neck", "tie"), "p4_backbone" + smile),
        (("stages", "p2_backbone", "block"), _nested(60)), (("stages", "p2_backbone", "se", "reduction"), _nested(100)),
        (("stages", "p2_backbone", "kernels"), [_nested(30)]), (("scale",), "n" * 100_000),
        (("stages", "p2_backbone", "block", 0), "C" * 100_000), (("constraints", 0), "params_m <= " + "9" * 5000),
        (("constraints", 0), "params_m <= 1" + "0" * 400), (("train", "data"), "d" * 5000 + ".txt"),
    ]
    cases = [SpaceCase(f"value-{dotted(p)}-{i}", dump(replaced(data, p, v)), dotted(p), exact=True, invalid=True)
             for i, (p, v) in enumerate(edits)]
    keys: list[tuple[tuple[Part, ...], str]] = [
        ((), smile), (("stages",), "p3_backbone" + smile), (("stages",), rtl + "p3_out"),
        (("stages", "p2_backbone", "se"), smile), (("objectives",), "map50_95" + zw), (("latency",), "img" + zw + "sz"),
        ((), "k" * 10_000), (("train",), "\u05d0\u05d1"),
    ]
    for i, (parent, key) in enumerate(keys):
        field = dotted((*parent, key))
        cases.append(SpaceCase(f"key-{dotted(parent) or 'root'}-{i}", dump(replaced(data, (*parent, key), 1)), field,
                               exact=True, invalid=True))
    return cases


def _nested(depth: int) -> Any:
    value: Any = "C3k2"
    for _ in range(depth):
        value = [value]
    return value


def random_hostile(data: dict[str, Any], n: int = 120) -> list[SpaceCase]:
    """``n`` seeded draws: a random field path of the shipped space set to a random hostile value."""
    rng = random.Random(SEED)
    paths = [p for p, _ in walk(data)]
    cases = []
    for i in range(n):
        parts = rng.choice(paths)
        value = rng.choice(HOSTILE_VALUES)
        cases.append(SpaceCase(f"random-{i}-{dotted(parts)}", dump(replaced(data, parts, value)), dotted(parts)))
    return cases


def _bomb(levels: int, width: int = 9) -> str:
    """A flow list whose last element expands to ``width ** levels`` items through aliases."""
    parts = ["&a0 [" + ",".join(["lol"] * width) + "]"]
    parts += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def raw_files() -> list[SpaceCase]:
    """Whole files that are not a valid space: garbage bytes, broken encodings, bombs, duplicate keys, deep nesting."""
    rng = random.Random(SEED)
    shipped = SHIPPED.read_bytes()
    ok_stage = "stages: {p3_backbone: {block: C3k2}}\n"
    cases = [SpaceCase(f"garbage-{n}", rng.randbytes(n), invalid=True) for n in (16, 256, 4096, 65536)]
    cases += [SpaceCase("nul-bytes", b"\x00" * 100, invalid=True),
              SpaceCase("nul-in-shipped", shipped[:200] + b"\x00" + shipped[200:], invalid=True),
              SpaceCase("invalid-utf8", b"stages: {p3_backbone: {block: \xff\xfe\xc3\x28}}\n", invalid=True),
              SpaceCase("utf16", shipped.decode().encode("utf-16"), invalid=True),
              SpaceCase("lone-surrogate-utf8", b"scale: \xed\xa0\x80\n" + ok_stage.encode(), invalid=True),
              SpaceCase("empty-file", b"", invalid=True),
              SpaceCase("only-comment", b"# nothing here\n", invalid=True),
              SpaceCase("top-level-list", b"- stages\n- p3_backbone\n", invalid=True),
              SpaceCase("top-level-scalar", b"42\n", invalid=True),
              SpaceCase("two-documents", (ok_stage + "---\n" + ok_stage).encode(), invalid=True),
              SpaceCase("python-tag", b"stages: !!python/object/apply:os.system ['true']\n", invalid=True),
              SpaceCase("tab-indent", b"stages:\n\tp3_backbone: {block: C3k2}\n", invalid=True),
              SpaceCase("unclosed-flow", b"stages: {p3_backbone: [C3k2\n", invalid=True)]
    # PyYAML scans up to 1024 characters ahead of a flow '[' (about 2 s from 2000 deep on, whatever the
    # depth): 800 is past Python's recursion limit but quick.
    cases.append(SpaceCase("deep-flow-list", ("stages: " + "[" * 800 + "]" * 800).encode(), invalid=True))
    depth = 5000
    cases.append(SpaceCase("deep-flow-map", ("stages: " + "{a: " * depth + "1" + "}" * depth).encode(), invalid=True))
    block = "stages:" + "".join("\n" + " " * i + "- " for i in range(depth)) + "x\n"
    cases.append(SpaceCase("deep-block-list", block.encode(), invalid=True))
    for field, text in (("scale", f"{ok_stage}scale: {_bomb(9)}\n"), ("stages", f"stages: {_bomb(9)}\n"),
                        ("stages.p3_backbone.block[0]", f"stages: {{p3_backbone: {{block: {_bomb(9)}}}}}\n"),
                        ("constraints[0]", f"{ok_stage}constraints: {_bomb(9)}\n"),
                        ("stages.p3_backbone.block[0]", "stages: {p3_backbone: {block: &a [*a]}}\n"),
                        ("stages.p3_backbone.p3_backbone", "stages: &a {p3_backbone: *a}\n")):
        cases.append(SpaceCase(f"bomb-{field}-{len(cases)}", text.encode(), field, exact=True, invalid=True))
    for key, text in (("stages", ok_stage + "stages: {}\n"),
                      ("block", "stages: {p3_backbone: {block: C3k2, block: RepViT}}\n"),
                      ("p3_backbone", "stages:\n  p3_backbone: {block: C3k2}\n  p3_backbone: {block: OREPA}\n"),
                      ("map50_95", ok_stage + "objectives: {map50_95: maximize, map50_95: minimize}\n"),
                      ("imgsz", ok_stage + "latency:\n  imgsz: 640\n  imgsz: 320\n")):
        cases.append(SpaceCase(f"duplicate-{key}", text.encode(), needle=f"duplicate key '{key}'", invalid=True))
    return cases


def space_cases() -> list[SpaceCase]:
    """All space-file cases, in a fixed order."""
    data = shipped_data()
    return (type_swaps(data) + missing_and_empty(data) + out_of_range(data) + unicode_and_size(data)
            + random_hostile(data) + raw_files())


# search.run flags: (extra argv, what the one-line message must contain), added to a valid command
# line run from a folder holding a_file; {dir} is a directory, {file} the absolute a_file (see test_fuzz.run_argv).
RUN_FLAG_CASES: list[tuple[list[str], str]] = [
    *[([flag, value], flag) for flag in ("--trials", "--epochs", "--batch", "--imgsz", "--workers")
      for value in ("-1", "0", str(10**30), "many", "1.5", "1e3", "", "NaN", "\U0001f642")],
    (["--trials=-5"], "--trials"), (["--imgsz", "-32"], "--imgsz"), (["--imgsz", "8192"], "--imgsz"),
    *[([flag, value], flag) for flag in ("--latency-budget-ms", "--trial-timeout")
      for value in ("0", "-3", "nan", "inf", "1e309", "abc", "", "\u221e", "0x10")],
    (["--latency-budget-ms=-inf"], "--latency-budget-ms"), (["--trial-timeout=-1e309"], "--trial-timeout"),
    *[(["--seed", value], "--seed") for value in ("-1", str(2**31), str(10**30), "seed", "")],
    *[(["--sampler", value], "--sampler") for value in ("cmaes", "", "TPE", "tpe\u200b", "\U0001f642")],
    *[(["--backend", value], "--backend") for value in ("dask", "", "Ray", "optuna\u202e")],
    *[(["--study", value], "--study") for value in ("\U0001f642", "\u202eevil", "a\u200bb", "../escape", "x" * 101,
                                                   "", "a b", "\u05d0\u05d1", "-lead")],
    *[(["--device", value], "--device") for value in ("gpu7", "cuda:-1", "cuda:\u0661", "\u0661", "", "cuda:0 ")],
    (["--storage", "redis://x"], "--storage"), (["--storage", "sqlite:///{file}/x.db"], "--storage"),
    (["--storage", "sqlite:///a_file/x.db"], "--storage"), (["--storage", "postgres"], "--storage"),
    (["--storage", "sqlite:///a\x00b.db"], "--storage"), (["--studies-dir", "{file}"], "--studies-dir"),
    (["--studies-dir", "a\x00b"], "--studies-dir"),
    (["--ray-address", "auto"], "--ray-address"), (["--data", "/nonexistent/data.yaml"], "--data"),
    (["--data", "{dir}"], "--data"), (["--nope"], "--nope"), (["extra"], "extra"), (["--trials"], "--trials"),
    (["--trials", "1", "--trials", "x"], "--trials"),
]
