"""Bad input never gets past the boundary: exit code 2, one line on stderr naming the field or flag.

The cases (``fuzz_cases.py``) mutate the shipped ``spaces/yolo26.yaml`` one field at a time, feed
raw garbage, alias bombs and duplicate keys, and throw hostile values at every ``search.run`` flag.
A mutation may happen to stay valid (a scalar is a one-element list of choices): whether it does
is judged in-process by ``parse_space`` and the CLI must agree (exit 0). The bulk runs in-process
through ``search.space.__main__.main`` and ``search.run.validate``; a handful run as real
processes to show there is no traceback or hang at the process level.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fuzz_cases import RUN_FLAG_CASES, SHIPPED, SpaceCase, space_cases

from search.run import validate
from search.space import SpaceError
from search.space.__main__ import main as space_main
from search.space.schema import parse_space

CASES = space_cases()
BY_ID = {c.id: c for c in CASES}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
TIMEOUT_S = 60
HANG_S = 10  # in-process cases cannot be killed: a case slower than this fails


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the whole module (a fresh tmp_path per case would dominate the runtime)."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "a_file").write_text("not a folder\n")
    (root / "a_dir").mkdir()
    (root / "good.yaml").write_bytes(SHIPPED.read_bytes())
    return root


@functools.cache
def is_valid(case_id: str) -> bool:
    """Whether the schema accepts the case (raw cases are invalid by construction)."""
    case = BY_ID[case_id]
    if case.invalid:
        return False
    try:
        parse_space(yaml.load(case.text, Loader=LOADER), "space.yaml")
    except SpaceError:
        return False
    return True


def one_line(err: str) -> str:
    """The single line of ``err`` (asserts there is exactly one and no traceback)."""
    assert "Traceback" not in err, err[-2000:]
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err[:500]!r}"
    assert lines[0].startswith("error: "), lines[0][:300]
    return lines[0]


def _boundary(outer: str, inner: str) -> bool:
    """``inner`` is ``outer`` or a field inside it (``stages.p3`` contains ``stages.p3.block[0]``).

    Unknown keys are shown escaped (``repr``) and cut at 60 characters (ending in ``...``).
    """
    escaped = repr(outer)[1:-1]
    if "..." in inner and "..." not in escaped:
        head, _, tail = inner.partition("...")
        return escaped.startswith(head) and escaped.endswith(tail)
    outer = repr(outer)[1:-1] if repr(outer)[1:-1] != outer and not inner.startswith(outer) else outer
    return inner == outer or (inner.startswith(outer) and inner[len(outer)] in ".[")


def assert_names_field(line: str, source: str, case: SpaceCase) -> None:
    """The message names the file and, where a field was mutated, that field (or one inside or around it)."""
    prefix = f"error: {source}: "
    assert line.startswith(prefix), f"message does not name the file {source!r}: {line[:300]!r}"
    if case.needle:
        assert case.needle in line, f"{case.needle!r} not in {line[:300]!r}"
    if not case.field:
        return
    named = line[len(prefix):].split(": ", 1)[0]
    if case.exact:
        assert _boundary(case.field, named), f"mutated {case.field!r}, message names {named!r}: {line[:300]!r}"
        return
    # A coarser field is fine (a list's uniqueness, a stage left empty); so is the tie of another stage
    # when the mutated stage was the one it ties to.
    ok = _boundary(case.field, named) or _boundary(named, case.field) or named.endswith(".tie")
    assert ok, f"mutated {case.field!r}, message names {named!r}: {line[:300]!r}"


def test_cases_are_many_distinct_and_mostly_invalid() -> None:
    assert len(BY_ID) == len(CASES), "case ids must be unique"
    invalid = [c.id for c in CASES if not is_valid(c.id)]
    assert len(invalid) >= 600, len(invalid)
    assert sum(c.id.startswith("swap-") and not is_valid(c.id) for c in CASES) >= 300
    assert len(RUN_FLAG_CASES) >= 50


@pytest.mark.parametrize("case", CASES, ids=[c.id[:80] for c in CASES])
def test_space_check_in_process(case: SpaceCase, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = workdir / "space.yaml"
    path.write_bytes(case.text)
    if is_valid(case.id):
        assert space_main(["check", str(path)]) == 0
        out = capsys.readouterr().out
        assert json.loads(out)["valid"] is True
        return
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        space_main(["check", str(path)])
    assert time.monotonic() - start < HANG_S  # an alias bomb once took 80 s (a full repr of 9**9 items)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_names_field(one_line(captured.err), str(path), case)


def run_cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` as a real process (no traceback, no hang within 60 s)."""
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=TIMEOUT_S)


SUBPROCESS_SPACE_IDS = ["garbage-4096", "invalid-utf8", "bomb-scale-", "deep-flow-list", "duplicate-stages",
                        "swap-stages.p2_backbone.se.reduction[1]-str", "key-stages-1", "range-latency.imgsz-inf"]


@pytest.mark.parametrize("prefix", SUBPROCESS_SPACE_IDS)
def test_space_check_as_a_process(prefix: str, tmp_path: Path) -> None:
    (case,) = [c for c in CASES if c.id.startswith(prefix)][:1]
    assert not is_valid(case.id)
    path = tmp_path / "space \U0001f642.yaml"  # a file name with a space and an emoji, named back verbatim
    path.write_bytes(case.text)
    r = run_cli("search.space", "check", str(path), cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert_names_field(one_line(r.stderr), str(path), case)


@pytest.mark.parametrize(("args", "needle"), [
    ([], "command"),
    (["check"], "path"),
    (["lint", "{good}"], "lint"),
    (["check", "{dir}"], "{dir}"),
    (["check", "/dev/null"], "/dev/null"),
    (["check", "{missing}"], "{missing}"),
    (["check", ""], "''"),
    (["check", "{good}", "--n", "3"], "--n"),
    (["sample", "{good}", "--n", "-1"], "--n"),
    (["sample", "{good}", "--n", str(10**30)], "--n"),
    (["sample", "{good}", "--seed", "seed"], "--seed"),
    (["sample", "{good}", "--nc", "0"], "--nc"),
    (["sample", "{good}", "--imgsz", "\U0001f642"], "--imgsz"),
    (["baseline", "{good}", "--imgsz", "1e309"], "--imgsz"),
    (["baseline", "{good}", "--nc", "-80"], "--nc"),
])
def test_space_cli_arguments(args: list[str], needle: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = {"good": workdir / "good.yaml", "dir": workdir / "a_dir", "missing": workdir / "missing.yaml"}
    with pytest.raises(SystemExit) as exit_info:
        space_main([a.format(**paths) for a in args])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert needle.format(**paths) in one_line(captured.err)


def run_argv(extra: list[str], workdir: Path) -> list[str]:
    """A valid ``search.run`` command line plus ``extra`` ({file}, {dir} filled in)."""
    fill = {"file": workdir / "a_file", "dir": workdir / "a_dir"}
    base = ["--space", str(workdir / "good.yaml"), "--studies-dir", str(workdir / "studies")]
    return base + [a.format(**fill) for a in extra]


def test_valid_run_command_line_passes(workdir: Path) -> None:
    cfg, _ = validate(run_argv([], workdir))
    assert cfg.study == "good" and cfg.storage.endswith("good.db")


@pytest.mark.parametrize(("extra", "needle"), RUN_FLAG_CASES,
                         ids=[f"{i}-{' '.join(a)[:40]}" for i, (a, _) in enumerate(RUN_FLAG_CASES)])
def test_run_flags_in_process(extra: list[str], needle: str, workdir: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)  # relative paths in a case land in the test's folder
    with pytest.raises(SystemExit) as exit_info:
        validate(run_argv(extra, workdir))
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert needle in one_line(captured.err)


@pytest.mark.parametrize(("space", "needle"), [
    (None, "--space"),
    ("{dir}", "{dir}"),
    ("/dev/null", "/dev/null"),
    ("{dir}/nope.yaml", "{dir}/nope.yaml"),
    ("", "''"),
    ("a\x00b.yaml", "file not found"),
    ("{garbage}", "{garbage}: not UTF-8"),
])
def test_run_space_argument(space: str | None, needle: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill = {"dir": workdir / "a_dir", "garbage": workdir / "\u05d0 garbage \U0001f642.yaml"}
    fill["garbage"].write_bytes(b"\xff\xfe\x00garbage")
    argv = ["--studies-dir", str(workdir / "studies")] + ([] if space is None else ["--space", space.format(**fill)])
    with pytest.raises(SystemExit) as exit_info:
        validate(argv)
    assert exit_info.value.code == 2
    assert needle.format(**fill) in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(("extra", "needle"), [
    ([], "--space"),
    (["--space", "/dev/null"], "/dev/null"),
    (["--space", "{good}", "--trials", "-1"], "--trials"),
    (["--space", "{good}", "--latency-budget-ms", "nan"], "--latency-budget-ms"),
    (["--space", "{good}", "--study", "\u202e\U0001f642"], "--study"),
    (["--space", "{good}", "--storage", "sqlite:///{file}/x.db"], "--storage"),
])
def test_run_as_a_process(extra: list[str], needle: str, workdir: Path) -> None:
    fill = {"good": workdir / "good.yaml", "file": workdir / "a_file"}
    args = [a.format(**fill) for a in extra] + ["--studies-dir", str(workdir / "studies")]
    r = run_cli("search.run", *args, cwd=workdir)
    assert r.returncode == 2 and r.stdout == ""
    assert needle in one_line(r.stderr)
