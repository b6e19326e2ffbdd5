"""benchmarks/bad_input_campaign.py cannot rot: its corpus is well formed, its scoring sorts outcomes as its table
says, and a few cheap cases run through the real CLI as the campaign runs them."""

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bad_input_campaign as campaign  # noqa: E402
from bad_input_cases import all_cases  # noqa: E402
from bad_input_corpus import CATEGORIES, Case  # noqa: E402


def test_the_corpus_is_well_formed():
    cases = all_cases()
    assert len(cases) >= 150
    assert {c.category for c in cases} == set(CATEGORIES)
    names = [(c.category, c.name) for c in cases]
    assert len(names) == len(set(names)), "case names repeat within a category"
    for c in cases:
        assert c.expect in ("refuse", "run", "note"), c
        assert c.expect != "note" or c.contains, c  # a note is scored by its words
        assert c.argv == [str(a) for a in c.argv] and c.name.strip(), c
    assert sum(c.expect == "run" for c in cases) >= 20  # valid neighbours, so refusing everything would show


def _done(code: int, stderr: str) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([], code, "", stderr)


def test_scoring():
    refuse, run = Case("config", "r", [], "refuse", "steps"), Case("config", "ok", [], "run")
    assert campaign.score(refuse, _done(2, "error: train.steps is bad\n"), None)[0] == "refused"
    assert campaign.score(refuse, _done(2, "error: another key\n"), None)[0] == "other"  # not the expected words
    assert campaign.score(refuse, _done(2, "note: x\nerror: train.steps\n"), None)[0] == "other"  # two lines
    assert campaign.score(refuse, _done(0, ""), None)[0] == "silent"
    assert campaign.score(refuse, _done(1, "Traceback (most recent call last):\n"), None)[0] == "traceback"
    assert campaign.score(refuse, _done(1, "error: unexpected KeyError: 'rng' (a bug; ...)\n"), None)[0] == "traceback"
    assert campaign.score(run, _done(0, ""), None)[0] == "runs"
    assert campaign.score(run, _done(0, ""), "checkpoint at step 2")[0] == "other"
    assert campaign.score(run, None, None)[0] == "other"  # timed out
    note = Case("sizes", "n", [], "note", "batch_size = 9 is more")
    assert campaign.score(note, _done(0, "note: train.batch_size = 9 is more than 5 rows\n"), None)[0] == "noted"
    assert campaign.score(note, _done(0, ""), None)[0] == "silent"  # the value was changed without a word
    assert campaign.score(note, _done(0, "note: something else\n"), None)[0] == "other"
    assert campaign.score(note, _done(0, "note: batch_size = 9 is more\n" * 2), None)[0] == "other"
    assert campaign.score(note, _done(2, "error: x\n"), None)[0] == "other"


@pytest.mark.parametrize(
    "name",
    [
        "(no arguments)",
        "--version",
        "a binary file as the config",
        "hidden = [0]",
        "an empty config file (zero bytes)",
        "a gaussian likelihood on statically binarized data",
    ],
)
def test_cheap_cases_run_as_the_campaign_runs_them(tmp_path, name):
    case = next(c for c in all_cases() if c.name == name)
    (tmp_path / "base-run").mkdir()  # these cases never read the run folder the campaign copies in
    column, detail = campaign.run_case(case, tmp_path / "case", tmp_path / "base-run")
    assert column == ("refused" if case.expect == "refuse" else "runs"), detail
