"""The label-efficiency study: its interval, its supervised baseline, one tiny end-to-end run, and the studies
that refuse M2 with one line."""

import json
import math

import pytest
import torch
from helpers import tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.studies.semi_supervised import confidence_interval, fit_classifier, label_study


def test_confidence_interval_is_students_t():
    """Three draws: half-width = t_{0.975, 2} · s / √3 with t = 4.3027 (tables); one draw has no interval."""
    mean, half = confidence_interval([0.5, 0.7, 0.6])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    assert math.isnan(confidence_interval([0.5])[1])


def test_the_labels_only_baseline_learns_separable_classes():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.nn.functional.one_hot(y, 3).float() * 3 + 0.3 * torch.randn(60, 3, generator=g)
    net = fit_classifier(x, y, 3, [8], steps=200, lr=0.05, seed=0)
    assert (net(x).argmax(-1) == y).float().mean() == 1.0


def test_a_tiny_study_writes_its_table_and_figure(tmp_path):
    cfg = tiny_config(
        data={"labelled": 20},
        model={"name": "m2", "aux_weight": 1.0},
        guide={"name": "m2", "classifier_hidden": [8]},
        elbo={"name": "trace_enum"},
        train={"steps": 3, "pyro_validation": False},
    )
    result = label_study(cfg, [20, 30], draws=2, aux_weight=1.0, baseline_steps=5, out_dir=tmp_path)
    saved = json.loads((tmp_path / "label_study.json").read_text())
    assert saved["summary"].keys() == {"20", "30"} and len(saved["runs"]["30"]) == 2
    assert all(0.0 <= r["labels only"] <= 1.0 for r in result["runs"][20])
    assert (tmp_path / "label_study.png").exists()


def test_compare_refuses_m2(tmp_path):
    from pyro_lvm.studies.compare import compare

    path = tmp_path / "m2.toml"
    path.write_text('[data]\nlabelled = 50\n[model]\nname = "m2"\n[guide]\nname = "m2"\n')
    with pytest.raises(PyroLVMError, match="model 'm2' has one guide"):
        compare(path)
