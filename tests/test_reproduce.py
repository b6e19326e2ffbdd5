"""experiments/reproduce.py: every generated block of the README and the results pages belongs to a study, and a
rerun rewrites exactly that block with its provenance and the study's own report."""

import importlib.util
import re
import shutil
import sys
from datetime import date
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _load():
    if "reproduce" not in sys.modules:
        spec = importlib.util.spec_from_file_location("reproduce", ROOT / "experiments" / "reproduce.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["reproduce"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["reproduce"]


@pytest.fixture(scope="module")
def reproduce():
    return _load()


def test_every_generated_block_belongs_to_a_study_and_every_study_has_its_blocks(reproduce):
    found = {}
    for page in PAGES:
        text = page.read_text()
        opened = re.findall(r"<!-- generated: (\S+) -->", text)
        closed = re.findall(r"<!-- end generated: (\S+) -->", text)
        assert opened == closed, page
        for name in opened:
            assert name in reproduce.STUDIES, (page, name)
            found.setdefault(name, []).append(str(page.relative_to(ROOT)))
    assert found == {name: s.pages for name, s in reproduce.STUDIES.items()}


def test_quick_runs_refuse_the_repository_pages(reproduce, capsys):
    with pytest.raises(SystemExit) as err:
        reproduce.main(["main_job", "--quick"])
    assert err.value.code == 2 and "give --root a copy" in capsys.readouterr().err


def test_a_quick_rerun_rewrites_its_block_with_provenance_and_nothing_else(reproduce, tmp_path):
    page = "docs/results/cvae-label.md"
    (tmp_path / page).parent.mkdir(parents=True)
    shutil.copy(ROOT / page, tmp_path / page)
    assert reproduce.main(["cvae_labels_digits", "--quick", "--root", str(tmp_path), "--runs", str(tmp_path)]) == 0
    before, after = (ROOT / page).read_text(), (tmp_path / page).read_text()
    pattern = reproduce.markers("cvae_labels_digits")
    assert pattern.sub("", before) == pattern.sub("", after)  # the rest of the page is untouched
    new = pattern.search(after).group(0)
    assert new != pattern.search(before).group(0)
    first = new.splitlines()[1]
    assert first.startswith("`python experiments/cvae_study.py labels experiments/digits_cvae_label.toml --set")
    for part in ("CPU", date.today().isoformat(), "torch ", "pyro-ppl ", " min"):
        assert part in first
    # the study's own table, with the "|" of p(x|c) escaped so the Markdown table keeps its columns
    table = [line for line in new.splitlines() if line.startswith("|")]
    assert len(table) == 3 and "log p̂(x\\|c)" in table[0]
    assert {line.count("|") - line.count("\\|") for line in table} == {7}


def test_a_failed_study_leaves_its_pages_as_they_were(reproduce, tmp_path, monkeypatch):
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    failing = reproduce.Study(["python", "-c", "import sys; sys.exit(3)"], ["README.md"], 0, "flag")
    monkeypatch.setitem(reproduce.STUDIES, "main_job", failing)
    with pytest.raises(SystemExit, match="exited with 3; its pages are left as they were"):
        reproduce.run("main_job", False, tmp_path, tmp_path)
    assert (tmp_path / "README.md").read_text() == (ROOT / "README.md").read_text()


def test_a_text_report_drops_progress_and_file_locations(reproduce):
    out = "== training guide 'amortized'\nguide  ELBO\n-----  ----\na      -1.0\nrun folder: runs/x\n"
    study = reproduce.STUDIES["main_job"]
    text = reproduce.block("main_job", study, out, 90.0, "2026-01-02")
    assert "```text\nguide  ELBO\n-----  ----\na      -1.0\n```" in text and "run folder" not in text
    assert text.startswith("<!-- generated: main_job -->\n`pyro-lvm compare experiments/digits_compare.toml` · ")
    assert "2026-01-02" in text and "1.5 min" in text


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("name", sorted(_load().STUDIES))
def test_every_study_command_parses_in_full_and_quick_form(reproduce, name, quick, monkeypatch):
    """Each command of each study (with its output folder and, for --quick, its small budget) is accepted by the
    script's or the CLI's own parser; nothing trains (parsing stops the call)."""
    import argparse

    from pyro_lvm.cli import build_parser

    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse(self, args, namespace)
        raise _Parsed

    study = reproduce.STUDIES[name]
    where = {"set": ["--set=compare.out_dir=X"], "flag": ["--out", "X"], "": []}[study.out]
    for i, command in enumerate([*study.before, [*study.command, *where]]):
        argv = [a.replace("{out}", "X") for a in command] + (study.quick if quick and i == 0 else [])
        if argv[0] == "pyro-lvm":
            build_parser().parse_args(argv[1:])  # exits 2 on a bad argument
            continue
        spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / argv[1])
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        with pytest.raises(_Parsed):
            script.main(argv[2:])
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)


def test_blocks_do_not_interleave():
    for page in PAGES:
        names = re.findall(r"<!-- (generated|end generated): (\S+) -->", page.read_text())
        assert len(names) % 2 == 0, page
        pairs = zip(names[::2], names[1::2], strict=True)
        assert all(a[0] == "generated" and b == ("end generated", a[1]) for a, b in pairs), page


def test_a_quick_quadrant_study_writes_its_markdown_table(reproduce, tmp_path):
    page = "docs/results/cvae-quadrants.md"
    (tmp_path / page).parent.mkdir(parents=True)
    shutil.copy(ROOT / page, tmp_path / page)
    assert reproduce.main(["cvae_quadrants_digits", "--quick", "--root", str(tmp_path)]) == 0
    new = reproduce.markers("cvae_quadrants_digits").search((tmp_path / page).read_text()).group(0)
    table = [line for line in new.splitlines() if line.startswith("|")]
    assert len(table) == 3 and "−log p(x\\|c)" in table[0] and "conditional" in table[2]  # 1 quadrant, 1 prior
    out = tmp_path / "runs" / "reproduce" / "cvae_quadrants_digits"
    assert (out / "quadrants.md").read_text().startswith(table[0]) and (out / "quadrants.json").is_file()
