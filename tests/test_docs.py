"""The docs as a user meets them: the README is a front page, every ``pyro-lvm`` command in README.md and docs/
parses with the real CLI and names files that exist (configs, scripts) or run folders that an earlier documented
command creates, and the README's Python tour runs."""

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pyro_lvm.cli import build_parser

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PLACEHOLDERS = {"RUN", "RUN_DIR", "CONFIG", "OTHER", "DIR", "N", "P"}


def placeholder(arg: str) -> bool:
    """A word of a documented pattern, not of a command to copy: RUN, CONFIG, ... or a shell variable."""
    return arg in PLACEHOLDERS or "$" in arg


def commands() -> list[tuple[Path, str]]:
    """(page, command line) for every `pyro-lvm ...` in code spans and blocks, comments and prompts stripped."""
    found = []
    for page in PAGES:
        for line in page.read_text().splitlines():
            for match in re.finditer(r"pyro-lvm ((?:train|evaluate|sample|compare|diagnose|encode)\b[^`#&|]*)", line):
                found.append((page, match.group(1).strip().rstrip("\\").strip()))
    return found


def run_folders() -> set[str]:
    """Run folders the documented train and compare commands create."""
    made = set()
    for _, cmd in commands():
        args = shlex.split(cmd)
        configs = [a for a in args if a.endswith(".toml")]
        sets = dict(a.split("=", 1) for a in args if a.startswith("train.out_dir=") or a.startswith("compare.out_dir="))
        for config in configs:
            stem = Path(config).stem
            raw = tomllib.loads((ROOT / config).read_text())
            out = sets.get("train.out_dir") or raw.get("train", {}).get("out_dir") or f"runs/{stem}"
            made.add(out)
            if args[0] == "compare":
                base = sets.get("compare.out_dir") or raw.get("compare", {}).get("out_dir") or f"runs/{stem}"
                guides = raw.get("compare", {}).get("guides", ["amortized", "per_datapoint", "semi_amortized"])
                made |= {base, *(f"{base}/{g}" for g in guides)}
    return made


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for page in PAGES:
        assert "this session" not in page.read_text().lower(), page


@pytest.mark.parametrize("page, cmd", commands(), ids=lambda v: str(v)[-40:])
def test_documented_commands_parse_and_name_real_paths(page, cmd):
    args = shlex.split(cmd)
    if any(placeholder(a) or a.startswith("--resume") for a in args):
        return  # a pattern (pyro-lvm train CONFIG --nproc P), not a command to copy
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "exit", lambda *a: (_ for _ in ()).throw(AssertionError(f"{page.name}: {cmd}")))
        parsed = build_parser().parse_args(args)
    for value in [getattr(parsed, k) for k in ("config", "run_dir") if getattr(parsed, k, None)]:
        value = str(value)
        if value.endswith(".toml"):
            assert (ROOT / value).is_file(), f"{page.name}: {cmd}: no {value}"
        else:
            assert value in run_folders(), f"{page.name}: {cmd}: no documented command creates {value}"
    for run_dir in getattr(parsed, "run_dirs", None) or []:
        assert run_dir in run_folders(), f"{page.name}: {cmd}: no documented command creates {run_dir}"


def test_documented_scripts_exist():
    for page in PAGES:
        for script in re.findall(r"python ((?:experiments|benchmarks)/\w+\.py)", page.read_text()):
            assert (ROOT / script).is_file(), (page.name, script)


def test_the_readme_python_tour_runs(tmp_path):
    """The README's Python block, as written, in a fresh folder holding the experiments (eval shortened)."""
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    code = block.replace('"train.steps=500"]', '"train.steps=500", "eval.num_samples=50", "train.progress=false"]')
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'mean'" in done.stdout and (tmp_path / "runs" / "python" / "checkpoint.pt").exists()
