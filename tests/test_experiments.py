"""Every experiment config smoke-runs in a subprocess with a tiny budget."""

import gzip
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
TINY = [
    "train.steps=30",
    "train.progress=false",
    "data.max_train=120",
    "eval.num_samples=20",
    "eval.num_points=20",
    "compare.gap_points=20",
    "compare.qstar_max_steps=300",
    "compare.refine_ks=[0, 2]",
    "compare.elbo_samples=20",
    "train.checkpoint_every=30",
    "baseline.steps=30",
]


def fake_idx_root(tmp_path: Path) -> Path:
    """Tiny Fashion-MNIST-shaped IDX .gz files, so the Fashion-MNIST configs run without the real data."""
    root = tmp_path / "idx"
    root.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in [("train", 150), ("t10k", 30)]:
        for kind, shape in [("images-idx3", (n, 28, 28)), ("labels-idx1", (n,))]:
            arr = rng.integers(0, 256 if kind.startswith("images") else 10, shape).astype(np.uint8)
            header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
            with gzip.open(root / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + arr.tobytes())
    return root


def run(args, cwd):
    out = subprocess.run(
        [sys.executable, "-m", "pyro_lvm.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.parametrize("config", sorted(p.name for p in EXPERIMENTS.glob("*.toml")))
def test_config_smoke_runs(config, tmp_path):
    overrides = list(TINY)
    if "fashion" in config:
        overrides += [f"data.root={fake_idx_root(tmp_path)}", "eval.batch_size=16"]
    if "m2" in config:  # scarce labels within the 120 rows kept (class-balanced: 2 per class)
        overrides += ["data.labelled=20"]
    sets = [f"--set={o}" for o in overrides]
    if any(word in config for word in ("compare", "cremer", "flows")):
        out = run(["compare", str(EXPERIMENTS / config), *sets, f"--set=compare.out_dir={tmp_path / 'cmp'}"], tmp_path)
        summary = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
        guides = tomllib.loads((EXPERIMENTS / config).read_text())["compare"]["guides"]
        assert [m["guide"] for m in summary["methods"]] == guides
        gap = summary["gaps"]["amortization_gap"]
        assert gap["mean"] >= -2 * gap["stderr"]  # q* starts at the encoder's q and only climbs
        for name in ["comparison.csv", "gaps.png", "elbo_vs_time.png", "semi_amortized_share.png"]:
            assert (tmp_path / "cmp" / name).is_file()
        assert "amortization gap" in out.stdout
        if "amortized_flow" in guides:  # Cremer et al.'s table: both decoders, both q* families
            assert {"L_qstar_flow", "flow_recovers"} <= set(summary["gaps"]) and summary["gaps_flow"][
                "family"
            ] == "flow"
            assert (tmp_path / "cmp" / "gaps_flow.png").is_file() and "inference gaps (Cremer" in out.stdout
    else:
        run(["train", str(EXPERIMENTS / config), *sets, f"--set=train.out_dir={tmp_path / 'run'}"], tmp_path)
        run(["evaluate", str(tmp_path / "run")], tmp_path)
    if "quadrants" in config:
        run(["sample", str(tmp_path / "run"), "--rows=3", "--completions=2"], tmp_path)
        assert (tmp_path / "run" / "completions.png").is_file()
    if config == "digits_vae_2d.toml":  # the config made for `diagnose`
        diag = ["--num-points=5", "--num-samples=100", "--nuts-points=2", "--nuts-chains=2", "--nuts-samples=50"]
        out = run(["diagnose", str(tmp_path / "run"), *diag, "--nuts-warmup=50"], tmp_path)
        assert "R-hat" in out.stdout and (tmp_path / "run" / "guide_vs_nuts.png").is_file()


def run_script(script, args, cwd):
    out = subprocess.run(
        [sys.executable, str(EXPERIMENTS / script), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_elbo_identity_script(tmp_path):
    sets = ["train.steps=30", "train.progress=false", "eval.num_points=20", "eval.num_samples=50"]
    out = run_script("elbo_identity.py", [*[f"--set={s}" for s in sets], "--out", "id"], tmp_path)
    result = json.loads((tmp_path / "id" / "identity.json").read_text())
    rows = result["rows"]
    names = ["exact posterior", "amortized", "per_datapoint", "amortized_flow", "prior as guide"]
    assert [r["guide"] for r in rows] == names
    assert max(r["identity_error"] for r in rows if r["guide"] != "amortized_flow") < 1e-6
    assert 0 < result["best_diagonal_kl"] < 1
    assert (tmp_path / "id" / "elbo_identity.png").is_file() and "KL(q‖p(z|x))" in out.stdout


@pytest.mark.parametrize("study", ["quadrants", "labels"])
def test_cvae_study_script(tmp_path, study):
    cfg = "digits_cvae_quadrants.toml" if study == "quadrants" else "digits_cvae_label.toml"
    sets = [f"--set={o}" for o in TINY]
    pick = ["--quadrants", "1", "3", "--variants", "standard_normal", "conditional_fed"]
    args = [study, str(EXPERIMENTS / cfg), *sets, "--out", "st", *(pick if study == "quadrants" else [])]
    out = run_script("cvae_study.py", args, tmp_path)
    rows = json.loads((tmp_path / "st" / f"{study}.json").read_text())
    if study == "quadrants":
        assert [(r["observed_quadrants"], r["variant"]) for r in rows] == [
            (1, "standard_normal"),
            (1, "conditional_fed"),
            (3, "standard_normal"),
            (3, "conditional_fed"),
        ]
        assert rows[0]["nn_baseline_log_px"] == rows[1]["nn_baseline_log_px"]  # one baseline for every prior
        assert (tmp_path / "st" / "q3_conditional_fed" / "completions.png").is_file()
    else:
        assert [r["prior"] for r in rows] == ["standard_normal", "conditional", "mog", "mog_per_class"]
        assert rows[0]["mean_pairwise_prior_kl"] == 0 < rows[3]["mean_pairwise_prior_kl"]
        assert (tmp_path / "st" / "mog_per_class" / "samples_c9.png").is_file()
    first_run = Path(rows[0]["run_dir"])
    if not first_run.is_absolute():
        first_run = tmp_path / first_run
    stamps = [(first_run / f).stat().st_mtime_ns for f in ("checkpoint.pt", "evaluation.json")]
    again = run_script("cvae_study.py", args, tmp_path)  # finished runs and evaluations are reused
    assert again.stdout.splitlines()[:3] == out.stdout.splitlines()[:3]
    assert [(first_run / f).stat().st_mtime_ns for f in ("checkpoint.pt", "evaluation.json")] == stamps


def test_kl_directions_script(tmp_path):
    run_script("kl_directions.py", ["--steps", "300", "--out", "kl"], tmp_path)
    rows = json.loads((tmp_path / "kl" / "kl_directions.json").read_text())
    assert [(r["dim"], r["fit"].split()[0]) for r in rows] == [
        (1, "reverse"),
        (1, "forward"),
        (2, "reverse"),
        (2, "forward"),
    ]
    assert (tmp_path / "kl" / "kl_directions.png").is_file()


def test_conv_vs_mlp_script(tmp_path):
    """Both VAEs train for the same wall-clock budget with parameter counts within 0.1% of each other."""
    sets = [f"data.root={fake_idx_root(tmp_path)}", "data.max_train=120", "eval.num_points=20", "eval.num_samples=20"]
    args = ["--minutes", "0.02", *[f"--set={s}" for s in sets], "--out", "cvm"]
    out = run_script("conv_vs_mlp.py", args, tmp_path)
    summary = json.loads((tmp_path / "cvm" / "comparison.json").read_text())
    conv, mlp = summary["rows"]
    assert (conv["net"], mlp["net"]) == ("conv", "mlp")
    assert abs(conv["parameters"] - mlp["parameters"]) < 1e-3 * conv["parameters"]
    assert 1.2 <= conv["train time (s)"] < 60 and 1.2 <= mlp["train time (s)"] < 60
    assert "conv minus mlp, paired" in out.stdout


def test_semi_supervised_script(tmp_path):
    """The label study end to end on a tiny budget: one count, two draws, its table, JSON and figure."""
    sets = ["data.max_train=120", "train.steps=3", "train.kl_warmup_steps=0"]
    args = ["--counts", "20", "--draws", "2", *[f"--set={s}" for s in sets], "--out", "ls"]
    out = run_script("semi_supervised.py", args, tmp_path)
    summary = json.loads((tmp_path / "ls" / "label_study.json").read_text())
    assert summary["counts"] == [20] and len(summary["runs"]["20"]) == 2
    assert "labels only" in out.stdout and (tmp_path / "ls" / "label_study.png").is_file()
