"""The semi-supervised model M2: the enumerated objective against a hand-written sum over y, its scaling, the
compiled path, scarce-label batches, label-summed estimates against a different proposal, and bad input."""

import math

import pyro.distributions as dist
import pytest
import torch
from helpers import tiny_config

from pyro_lvm.data.labelled import UNLABELLED, SemiSupervisedBatches, labelled_mask
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.labels import enumerated_estimates, evaluate_labels
from pyro_lvm.models.m2 import one_hot
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train

M2 = {"model": {"name": "m2", "aux_weight": 0.5}, "guide": {"name": "m2", "classifier_hidden": [16]}}


def m2_experiment(elbo="trace_enum", labelled=40, dtype="float64", jit="off", **train_opts):
    cfg = tiny_config(
        data={"labelled": labelled},
        elbo={"name": elbo, **({"jit": jit} if elbo != "renyi" else {})},
        train={"dtype": dtype, **train_opts},
        prior={"name": "conditional", "hidden": [8]},
        **M2,
    )
    return Experiment.from_config(cfg)


def hand_written_loss(exp, x, y, seed: int, num_data: bool = True) -> torch.Tensor:
    """−(N_l/B_l) Σ_l [log p(x,y,z) − log q(z|x,y) + α log q(y|x)] − (N_u/B_u) Σ_u Σ_k q(k|x)[ELBO(x,k) − log q(k|x)],
    one z per labelled row and per (class, unlabelled row), drawn in the order the objective draws them."""
    model, guide, K = exp.model, exp.guide, exp.model.num_classes
    known = y >= 0
    n_l = int(exp.data.labelled.sum())
    n_u = len(exp.data.train) - n_l

    def elbo_terms(xb, c):  # c (..., B, K) -> log p(x, y, z) − log q(z | x, y), (..., B)
        loc, scale = guide.encode(xb, c)
        z = dist.Normal(loc, scale).rsample()  # the only draw of each call
        log_q = dist.Normal(loc, scale).log_prob(z).sum(-1)
        prior = model.prior_dist(c)
        probs = model.likelihood(model.decoder(torch.cat([z, c.expand(*z.shape[:-1], K)], -1)))
        return -math.log(K) + prior.log_prob(z) + probs.log_prob(xb) - log_q

    torch.manual_seed(seed)
    x_l, y_l, x_u = x[known], y[known], x[~known]
    c_l = one_hot(y_l, K, x.dtype)
    labelled = elbo_terms(x_l, c_l) + model.aux_weight * torch.log_softmax(guide.classify(x_l), -1).gather(
        1, y_l[:, None]
    ).squeeze(1)
    if len(x_u):
        classes = one_hot(torch.arange(K), K, x.dtype)[:, None, :]  # (K, 1, K)
        per_class = elbo_terms(x_u, classes)  # (K, B_u)
        log_q_y = torch.log_softmax(guide.classify(x_u), -1).T  # (K, B_u)
        unlabelled = (log_q_y.exp() * (per_class - log_q_y)).sum(0)  # (B_u,)
    else:
        unlabelled = x.new_zeros(0)
    s_l = n_l / max(len(x_l), 1) if num_data else 1.0
    s_u = n_u / max(len(x_u), 1) if num_data else 1.0
    return -(s_l * labelled.sum() + s_u * unlabelled.sum())


@pytest.mark.parametrize("num_data", [True, False])
def test_enumerated_objective_equals_the_hand_written_sum_over_labels(num_data):
    """float64, 1e-8: the TraceEnum objective on a mixed batch is the hand-written sum over the K values of y of the
    per-class ELBOs weighted by q(y|x), plus q's entropy, with the labelled rows' own (unenumerated) bound and α."""
    exp = m2_experiment()
    batches = SemiSupervisedBatches(exp.data.train, exp.data.labelled, 16, 0, False)
    batch = batches.batch(3)
    x, c = exp.condition(batch.x, batch.y)
    n = len(exp.data.train) if num_data else None
    torch.manual_seed(5)
    ours = exp.elbo.differentiable_loss(exp.model, exp.guide, x, c, idx=batch.idx, num_data=n)
    theirs = hand_written_loss(exp, batch.x, batch.y, 5, num_data)
    assert (batch.y == UNLABELLED).sum() == 16 and (batch.y >= 0).sum() == 16
    assert torch.allclose(ours, theirs, rtol=1e-8, atol=1e-8), (float(ours), float(theirs))


def test_labelled_rows_enumerate_nothing():
    """A batch of labelled rows only: the objective is the labelled bound alone, and the guide's trace has no y."""
    exp = m2_experiment()
    rows = torch.nonzero(exp.data.labelled).flatten()[:8]
    x, y = exp.data.train.x[rows], exp.data.train.y[rows]
    torch.manual_seed(2)
    ours = exp.elbo.differentiable_loss(exp.model, exp.guide, *exp.condition(x, y), idx=rows, num_data=None)
    assert torch.allclose(ours, hand_written_loss(exp, x, y, 2, num_data=False), rtol=1e-8, atol=1e-8)
    from pyro import poutine

    trace = poutine.trace(exp.guide).get_trace(x, exp.condition(x, y)[1])
    assert "y" not in trace.nodes and "z" in trace.nodes


def test_compiled_enumeration_equals_the_plain_one():
    """elbo.jit = 'on' (JitTraceEnum_ELBO, two compiled functions: labelled and unlabelled) trains to the plain
    ELBO's parameters."""
    runs = {}
    for jit in ("on", "off"):
        exp = m2_experiment(jit=jit, steps=15, pyro_validation=False)
        train(exp)
        runs[jit] = exp
    assert "compiled" in runs["on"].elbo.path
    plain = dict(runs["off"].guide.named_parameters()) | dict(runs["off"].model.named_parameters())
    for name, p in [*runs["on"].guide.named_parameters(), *runs["on"].model.named_parameters()]:
        assert torch.allclose(p, plain[name], rtol=1e-10, atol=1e-12), name


def test_sampled_label_objective_trains():
    """Without enumeration (Trace_ELBO) y is sampled from q(y|x) (score-function gradient): the step still trains."""
    exp = m2_experiment(elbo="trace", steps=5)
    history = train(exp)
    assert math.isfinite(history[-1]["train_elbo"])


def test_labelled_mask_is_class_balanced_and_seeded():
    y = torch.arange(100) % 4
    mask = labelled_mask(y, 10, 4, seed=3)
    assert [int((mask & (y == k)).sum()) for k in range(4)] == [3, 3, 2, 2]
    assert torch.equal(mask, labelled_mask(y, 10, 4, seed=3))
    assert not torch.equal(mask, labelled_mask(y, 10, 4, seed=4))


def test_semi_supervised_batches_cover_each_part():
    """Each step: min(B, N_l) labelled rows with their labels first, then unlabelled rows with the label hidden;
    an epoch passes over every unlabelled row once; no labelled row is ever shown unlabelled."""
    y = torch.arange(60) % 3
    split = type("S", (), {})
    from pyro_lvm.data import Split

    split = Split(torch.rand(60, 4), y)
    mask = labelled_mask(y, 9, 3, seed=0)
    batches = SemiSupervisedBatches(split, mask, 20, seed=1, dynamic=False)
    seen = []
    for step in range(batches.steps_per_epoch):
        b = batches.batch(step)
        assert (b.y[:9] == y[b.idx[:9]]).all() and mask[b.idx[:9]].all()
        assert (b.y[9:] == UNLABELLED).all() and not mask[b.idx[9:]].any()
        assert torch.equal(b.x, split.x[b.idx])
        seen.append(b.idx[9:])
    assert sorted(torch.cat(seen).tolist()) == torch.nonzero(~mask).flatten().tolist()
    assert torch.equal(batches.batch(5).idx, SemiSupervisedBatches(split, mask, 20, 1, False).batch(5).idx)


def test_label_summed_estimates_agree_with_a_sampled_label_proposal():
    """log p̂(x) with y summed out (K_z = 400 per class) against importance sampling with y ~ q(y|x),
    z ~ q(z|x,y) (4,000 joint draws): equal within 4 Monte-Carlo standard errors per datapoint; ELBO ≤ log p̂."""
    exp = m2_experiment(steps=60, pyro_validation=False)
    train(exp)
    model, guide, K = exp.model, exp.guide, exp.model.num_classes
    x = exp.data.test.x[:6]
    torch.manual_seed(0)
    ours = enumerated_estimates(model, guide, x, num_samples=400, chunk_size=400)
    with torch.no_grad():
        S = 4000
        logits = guide.classify(x)
        y = dist.Categorical(logits=logits).sample((S,))  # (S, B)
        c = one_hot(y, K, x.dtype)
        loc, scale = guide.encode(x, c)
        z = dist.Normal(loc, scale).sample()
        log_q = torch.log_softmax(logits, -1).gather(1, y.T).T + dist.Normal(loc, scale).log_prob(z).sum(-1)
        probs = model.likelihood(model.decoder(torch.cat([z, c], -1)))
        log_p = -math.log(K) + model.prior_dist(c).log_prob(z) + probs.log_prob(x)
        lw = log_p - log_q  # (S, B)
        w = (lw - lw.max(0).values).exp()
        theirs = torch.logsumexp(lw, 0) - math.log(S)
        rel_se = w.std(0) / w.mean(0) / math.sqrt(S)  # delta method: SE of log mean w
    assert ((ours["log_px"] - theirs).abs() <= 4 * rel_se + 0.02).all(), (ours["log_px"], theirs, rel_se)
    assert (ours["elbo"] <= ours["log_px"] + 1e-9).all()
    assert torch.allclose(ours["q_y"].sum(-1), torch.ones(6, dtype=x.dtype))


def test_accuracy_and_confusion_count_every_test_row():
    exp = m2_experiment(steps=10)
    train(exp)
    res = evaluate_labels(exp.model, exp.guide, exp.data.test, 2, 2, 100, num_points=20)
    assert int(res["confusion"].sum()) == len(exp.data.test)
    assert res["accuracy"] == pytest.approx(float(res["confusion"].trace()) / len(exp.data.test))
    assert res["log_px"].values.numel() == 20


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"data": {"labelled": 20}}, "only the semi-supervised model"),
        ({"elbo": {"name": "trace_enum"}}, "has none to enumerate"),
        ({"model": {"name": "m2"}}, "set both to 'm2'"),
        ({**M2, "data": {"labelled": 5000}}, "training set has 200 rows"),
        ({**M2, "data": {"labelled": 4}}, "fewer than the 10 classes"),
        ({**M2, "elbo": {"name": "renyi"}}, "needs every guide site reparameterized"),
        ({**M2, "elbo": {"name": "mean_field"}}, "needs every guide site reparameterized"),
    ],
)
def test_bad_semi_supervised_configs_say_one_line(sections, message):
    with pytest.raises(PyroLVMError, match=message) as err:
        Experiment.from_config(tiny_config(**sections))
    assert "\n" not in str(err.value)


def test_a_dataset_without_labels_is_refused():
    with pytest.raises(PyroLVMError, match="this dataset has no labels"):
        labelled_mask(torch.zeros(50, dtype=torch.long), 10, 1, seed=0)


def test_resume_is_exact_with_scarce_labels(tmp_path):
    """Labelled and unlabelled batch orders depend only on (seed, step): 10 steps + resume to 20 equals 20 steps."""
    straight = m2_experiment(steps=20, pyro_validation=False, checkpoint_every=10)
    train(straight, tmp_path / "a")
    train(m2_experiment(steps=10, pyro_validation=False, checkpoint_every=10), tmp_path / "b")
    resumed = m2_experiment(steps=20, pyro_validation=False, checkpoint_every=10)
    train(resumed, tmp_path / "b", resume=True)
    for (name, a), (_, b) in zip(straight.guide.named_parameters(), resumed.guide.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_cli_trains_evaluates_and_samples_m2(tmp_path):
    """The example config, shortened: evaluate prints accuracy and the label-summed estimates and writes the
    figures; sample draws a chosen class; a bad label count is one line with exit code 2."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    config = Path(__file__).parents[1] / "experiments" / "digits_m2.toml"
    run = tmp_path / "run"

    def cli(*args):
        cmd = [sys.executable, "-m", "pyro_lvm.cli", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    sets = [
        "--set",
        "train.steps=30",
        "--set",
        "data.max_train=300",
        "--set",
        "eval.num_samples=5",
        "--set",
        "eval.num_points=40",
    ]
    done = cli("train", str(config), "--set", f"train.out_dir={run}", *sets)
    assert done.returncode == 0, done.stderr
    done = cli("evaluate", str(run))
    assert done.returncode == 0, done.stderr
    assert "label accuracy on the test split" in done.stdout and "y summed out" in done.stdout
    result = json.loads((run / "evaluation.json").read_text())
    assert result["num_labelled"] == 100 and sum(map(sum, result["confusion"])) == 359
    assert (run / "confusion.png").exists() and (run / "label_posterior.png").exists()
    assert cli("sample", str(run), "--condition", "3").returncode == 0 and (run / "samples_c3.png").exists()
    bad = cli("train", str(config), "--set", f"train.out_dir={tmp_path / 'bad'}", "--set", "data.labelled=5")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_m2_is_refused_in_chunks():
    """Chunked steps (micro-batches, ranks) cut the plain batch order, which M2's two batches are not: one line."""
    with pytest.raises(PyroLVMError, match="m2 trains in one process"):
        train(m2_experiment(steps=2, micro_batches=2))


def test_scarce_labels_hold_for_a_dataset_handed_over():
    """data.labelled applies to data passed to from_config too (not only to a dataset the config loads), and a
    dataset that already hides labels trains M2; both hide the same number of labels."""
    import pyro_lvm

    d = pyro_lvm.from_tensors(torch.rand(300, 16).round(), torch.arange(300) % 4, binarize="none")
    exp = Experiment.from_config(tiny_config(data={"labelled": 20}, elbo={"name": "trace_enum"}, **M2), data=d)
    assert int(exp.data.labelled.sum()) == 20
    batch = exp.data.labelled  # the objective sees 20 labelled rows and the rest unlabelled
    assert exp.elbo.num_labelled == 20 and exp.elbo.num_unlabelled == len(exp.data.train) - 20 and batch is not None
    hidden = pyro_lvm.from_tensors(torch.rand(300, 16).round(), torch.arange(300) % 4, binarize="none", labelled=12)
    exp = Experiment.from_config(tiny_config(elbo={"name": "trace_enum"}, train={"steps": 2}, **M2), data=hidden)
    assert exp.condition.partial and math.isfinite(train(exp)[-1]["train_elbo"])
    with pytest.raises(PyroLVMError, match="would never see"):
        Experiment.from_config(tiny_config(), data=hidden)


def test_no_condition_means_every_row_is_unlabelled():
    exp = m2_experiment()
    x = exp.data.train.x[:6]
    torch.manual_seed(1)
    none = exp.elbo.differentiable_loss(exp.model, exp.guide, x, None)
    torch.manual_seed(1)
    zeros = exp.elbo.differentiable_loss(exp.model, exp.guide, x, torch.zeros(6, 10, dtype=x.dtype))
    assert torch.equal(none, zeros)
