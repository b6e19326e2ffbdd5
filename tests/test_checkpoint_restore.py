"""The checkpoint and its restore, value for value: what ``RunState.state_dict`` writes is the experiment's state
at that moment, ``RunState.restore`` puts back exactly what the file holds (parameters, optimiser state tensor by
tensor, the random stream, the step, history and summary), and ``runs/checkpoint.py``'s checks name what they
refuse. The references are read with ``torch.load`` and walked here, not with the module's own helpers."""

from pathlib import PurePosixPath

import pytest
import torch
from helpers import tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs import checkpoint
from pyro_lvm.runs.files import CHECKPOINT
from pyro_lvm.runs.identity import identity
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train
from pyro_lvm.training.state import RunState


def _assert_same(a, b, where="") -> None:
    """Same structure (dict keys, list lengths, types) and equal values; tensors equal bit for bit, same dtype."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.to_dense() if a.is_sparse else a, b.to_dense() if b.is_sparse else b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), (where, list(a), list(b))
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}.{i}")
    else:
        assert a == b, (where, a, b)


def _cfg(steps: int):
    return tiny_config(data={"max_train": 100}, train={"steps": steps, "checkpoint_every": 10, "eval_every": 10})


@pytest.fixture
def run_dir(tmp_path):
    """A 10-step run, its checkpoint at step 10."""
    train(Experiment.from_config(_cfg(10)), tmp_path)
    return tmp_path


def test_restore_puts_back_what_the_checkpoint_holds_tensor_by_tensor(run_dir):
    saved = torch.load(run_dir / CHECKPOINT, weights_only=True)
    assert saved["step"] == 10 and saved["history"] and saved["optim"]
    exp = Experiment.from_config(_cfg(20))
    torch.manual_seed(999)  # the caller's stream is elsewhere
    torch.randn(7)
    state = RunState.restore(exp, run_dir, resuming=True)
    _assert_same(saved["model"], exp.model.state_dict(), "model")
    _assert_same(saved["guide"], exp.guide.state_dict(), "guide")
    _assert_same(saved["optim"], exp.optim.state_dict(), "optim")  # moments and step counters, tensor by tensor
    assert torch.equal(torch.get_rng_state(), saved["rng"])
    assert (state.step, state.saved_step, state.resumed, state.seed) == (10, 10, True, None)
    _assert_same(saved["history"], state.history, "history")
    _assert_same(saved["summary"], state.summary, "summary")
    assert state.elapsed == saved["history"][-1]["time_s"] > 0


def test_a_look_at_the_run_leaves_the_callers_stream_and_is_no_resume(run_dir):
    saved = torch.load(run_dir / CHECKPOINT, weights_only=True)
    torch.manual_seed(31)
    torch.randn(3)
    expected = torch.get_rng_state()
    exp = Experiment.from_config(_cfg(5))  # fewer steps than the checkpoint: fine for a look, refused for a resume
    expected_draws = torch.randn(16, generator=torch.Generator().set_state(expected))
    state = RunState.restore(exp, run_dir, rng=False)
    assert torch.equal(torch.randn(16), expected_draws)
    assert (state.step, state.saved_step, state.resumed) == (10, 10, False)
    _assert_same(saved["model"], exp.model.state_dict(), "model")
    state = RunState.restore(Experiment.from_config(_cfg(5)), run_dir)  # rng defaults to restoring
    assert torch.equal(torch.get_rng_state(), saved["rng"]) and not state.resumed
    with pytest.raises(PyroLVMError) as info:
        RunState.restore(Experiment.from_config(_cfg(9)), run_dir, resuming=True)
    assert str(info.value) == (
        f"the checkpoint in {str(run_dir)!r} is at step 10, beyond train.steps = 9; "
        "resume with --set train.steps=N for some N >= 10"
    )
    assert RunState.restore(Experiment.from_config(_cfg(10)), run_dir, resuming=True).step == 10  # done: not beyond


def test_a_checkpoint_without_cuda_streams_restores_the_cpu_stream(run_dir):
    """``cuda_rng`` is not a required key (a checkpoint written where CUDA was never used may lack it)."""
    saved = torch.load(run_dir / CHECKPOINT, weights_only=True)
    assert saved["cuda_rng"] == []
    del saved["cuda_rng"], saved["summary"]  # neither is a required key
    torch.save(saved, run_dir / CHECKPOINT)
    torch.manual_seed(4)
    state = RunState.restore(Experiment.from_config(_cfg(20)), run_dir, resuming=True)
    assert state.step == 10 and torch.equal(torch.get_rng_state(), saved["rng"]) and state.summary == {}


def test_restore_loads_the_state_as_local_cuts_it(run_dir):
    """``local`` (a rank's cut of a sharded checkpoint) sees the checkpoint's state, and what it returns is loaded."""
    saved = torch.load(run_dir / CHECKPOINT, weights_only=True)
    seen = []

    def local(state):
        seen.append(state["step"])
        return {**state, "model": {k: v + 1 for k, v in state["model"].items()}, "step": 7}

    exp = Experiment.from_config(_cfg(20))
    state = RunState.restore(exp, run_dir, resuming=True, local=local)
    assert seen == [10] and (state.step, state.saved_step) == (7, 7)
    _assert_same({k: v + 1 for k, v in saved["model"].items()}, exp.model.state_dict(), "model")
    _assert_same(saved["guide"], exp.guide.state_dict(), "guide")


def test_restore_refuses_another_run_and_a_misfit_in_one_line_naming_the_folder(run_dir):
    other = Experiment.from_config(tiny_config(data={"max_train": 50}, train={"steps": 20}))
    with pytest.raises(PyroLVMError) as info:
        RunState.restore(other, run_dir)
    assert str(info.value).startswith(f"data.max_train is 50 here but the checkpoint in {str(run_dir)!r} was")
    other.configured = False  # built from parts: no config identity to check, and the parameters fit
    assert RunState.restore(other, run_dir).step == 10
    narrow = Experiment.from_config(tiny_config(data={"max_train": 100}, model={"hidden": [8]}))
    narrow.configured = False  # the identity would refuse it first; the state dicts refuse it here
    saved = torch.load(run_dir / CHECKPOINT, weights_only=True)
    with pytest.raises(RuntimeError) as direct:
        narrow.model.load_state_dict(saved["model"])
    first = str(direct.value).splitlines()[0]
    assert first == "Error(s) in loading state_dict for VAE:"
    with pytest.raises(PyroLVMError) as info:
        RunState.restore(narrow, run_dir)
    assert str(info.value) == (
        f"checkpoint in {str(run_dir)!r} does not fit this config ({first}); "
        "resume with the config saved in that run folder"
    )


def test_a_non_finite_optimiser_state_is_refused_on_resume_only(run_dir):
    saved = torch.load(run_dir / CHECKPOINT, weights_only=True)
    saved["optim"]["dense"]["state"][2]["exp_avg_sq"][3, 1] = float("inf")
    torch.save(saved, run_dir / CHECKPOINT)
    with pytest.raises(PyroLVMError) as info:
        RunState.restore(Experiment.from_config(_cfg(20)), run_dir, resuming=True)
    assert str(info.value) == (
        f"the checkpoint in {str(run_dir)!r} holds a non-finite optimiser state (dense.state.2.exp_avg_sq); it "
        "cannot be resumed (its parameters can still be evaluated)"
    )
    exp = Experiment.from_config(_cfg(20))
    assert RunState.restore(exp, run_dir).step == 10  # evaluating it is fine
    _assert_same(saved["model"], exp.model.state_dict())


def test_state_dict_is_the_experiments_state_at_that_moment():
    exp = Experiment.from_config(_cfg(20))
    history, summary = [{"step": 3, "time_s": 1.5}], {"baseline": 2.0}
    run = RunState(step=3, history=history, summary=summary)
    torch.manual_seed(8)
    rng = torch.get_rng_state()
    state = run.state_dict(exp)
    assert list(state) == ["identity", "step", "model", "guide", "optim", "rng", "cuda_rng", "history", "summary"]
    assert state["identity"] == identity(exp.cfg) and state["identity"]
    assert state["step"] == 3 and state["history"] == history and state["summary"] == summary
    _assert_same(exp.model.state_dict(), state["model"])
    _assert_same(exp.guide.state_dict(), state["guide"])
    _assert_same(exp.optim.state_dict(), state["optim"])
    assert torch.equal(state["rng"], rng) and state["cuda_rng"] == []  # no CUDA generator on a CPU
    exp.configured = False  # an experiment built from parts: no config identity
    assert run.state_dict(exp)["identity"] == {}


def test_tensors_names_every_tensor_of_a_nested_state():
    a, b, c, d = (torch.full((1,), float(i)) for i in range(4))
    tree = {"w": a, "inner": {"l": [b, (c, 7)], "n": None}, "s": "text", "d": d}
    named = list(checkpoint.tensors(tree))
    assert [name for name, _ in named] == ["w", "inner.l.0", "inner.l.1.0", "d"]
    assert all(t is u for (_, t), u in zip(named, (a, b, c, d), strict=True))
    assert [name for name, _ in checkpoint.tensors({"x": [a]}, "optim")] == ["optim.x.0"]
    assert list(checkpoint.tensors(7)) == [] and list(checkpoint.tensors(a, "p")) == [("p", a)]


def test_first_nonfinite_names_the_first_bad_floating_tensor():
    ok = torch.ones(3)
    sparse_inf = torch.sparse_coo_tensor([[0, 2]], [1.0, float("inf")], (4,), check_invariants=True)
    named = [("ints", torch.tensor([1, 2])), ("none", None), ("ok", ok), ("sp", sparse_inf), ("nan", ok * float("nan"))]
    assert checkpoint.first_nonfinite(named) == "sp"
    assert checkpoint.first_nonfinite(named[:3] + named[4:]) == "nan"
    assert checkpoint.first_nonfinite([("x", torch.tensor([0.0, -float("inf")], dtype=torch.float64))]) == "x"
    finite_sparse = torch.sparse_coo_tensor(
        [[0, 0]], [1.0, 2.0], (4,), check_invariants=True
    )  # duplicates, summed when coalesced
    assert checkpoint.first_nonfinite([("ok", ok), ("sp", finite_sparse), ("ints", torch.tensor([3]))]) is None
    assert checkpoint.first_nonfinite([]) is None


def test_save_writes_the_format_and_load_returns_what_was_saved(tmp_path):
    state = {"step": 4, "model": {"w": torch.arange(3.0)}, "guide": {}, "optim": {"state": {}}, "rng": torch.ones(2)}
    state["history"] = [{"step": 4, "loss": 1.0}]
    checkpoint.save(state, tmp_path / "c.pt")
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["format"] == checkpoint.FORMAT == "pyro_lvm/1"
    _assert_same({"format": "pyro_lvm/1", **state}, raw)
    _assert_same(raw, checkpoint.load(tmp_path / "c.pt"))
    assert checkpoint.load(str(tmp_path / "c.pt"))["step"] == 4  # a path as a string


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"format": "pyro_lvm/0"}, "is not a pyro_lvm/1 checkpoint; train again"),
        ({"step": True}, "has step True, not a count"),
        ({"step": 2.0}, "has step 2.0, not a count"),
        ({"history": [{"loss": 1.0}]}, "damaged history"),
        ({"history": ({"step": 1},)}, "damaged history"),
        ({"history": [[("step", 1)]]}, "damaged history"),
        ({"model": [1]}, "no state dicts for model, guide and optim"),
        ({"guide": None}, "no state dicts"),
        ({"guide": {"w": torch.tensor([float("inf")])}}, r"holds non-finite values \(guide\.w\); it cannot be resumed"),
        ({"optim": {"m": torch.tensor([float("nan")])}}, None),  # the optimiser is checked on resume only
        ({"step": 0}, None),
    ],
)
def test_load_refuses_a_damaged_field_by_name(tmp_path, change, words):
    state = {"format": checkpoint.FORMAT, "step": 4, "model": {"w": torch.ones(2)}, "guide": {}, "optim": {}}
    state |= {"rng": torch.ones(2), "history": [{"step": 4}]}
    torch.save(state | change, tmp_path / "c.pt")
    if words is None:
        assert checkpoint.load(tmp_path / "c.pt")["step"] == (state | change)["step"]
        return
    with pytest.raises(PyroLVMError, match=words):
        checkpoint.load(tmp_path / "c.pt")


def test_load_names_a_missing_file_a_corrupt_one_and_missing_keys(tmp_path):
    with pytest.raises(PyroLVMError, match=r"no checkpoint at .*c\.pt'; train first"):
        checkpoint.load(tmp_path / "c.pt")
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PyroLVMError) as info:
        checkpoint.load(tmp_path / "c.pt")
    assert str(info.value) == (
        f"checkpoint {str(tmp_path / 'c.pt')!r} is corrupt or not a pyro_lvm checkpoint (UnpicklingError); "
        "delete it and train again, or resume from another run folder"
    )
    torch.save({"format": checkpoint.FORMAT, "code": PurePosixPath("a")}, tmp_path / "c.pt")  # pickled objects
    with pytest.raises(PyroLVMError, match=r"is corrupt or not a pyro_lvm checkpoint \(UnpicklingError\)"):
        checkpoint.load(tmp_path / "c.pt")  # weights_only: no code is unpickled
    torch.save([1, 2], tmp_path / "c.pt")
    with pytest.raises(PyroLVMError, match="is not a pyro_lvm/1 checkpoint"):
        checkpoint.load(tmp_path / "c.pt")
    torch.save({"format": checkpoint.FORMAT, "step": 1, "model": {}}, tmp_path / "c.pt")
    with pytest.raises(PyroLVMError, match="lacks guide, optim, rng, history; it is damaged"):
        checkpoint.load(tmp_path / "c.pt")


@pytest.mark.parametrize(
    ("error", "reason"),
    [(OSError(28, "No space left on device"), "No space left on device"), (OSError("full"), "full")],
)
def test_save_failing_names_the_file_and_the_reason(tmp_path, monkeypatch, error, reason):
    def failing(path, mode):
        raise error

    monkeypatch.setattr(checkpoint, "atomic_file", failing)
    with pytest.raises(PyroLVMError) as info:
        checkpoint.save({"step": 1}, tmp_path / "c.pt")
    assert str(info.value) == (
        f"could not write the checkpoint {str(tmp_path / 'c.pt')!r} ({reason}); the previous one is intact: "
        "free space or permissions, then resume"
    )


def test_the_cuda_streams_go_to_their_devices(run_dir, monkeypatch):
    """On a CPU machine with CUDA stood in for: ``state_dict`` saves one stream per device in use, and ``restore``
    sets each saved stream on its device, skipping those beyond this machine's device count."""
    import pyro_lvm.training.state as state_module

    streams = [torch.full((4,), i, dtype=torch.uint8) for i in range(3)]
    monkeypatch.setattr(state_module, "cuda_devices", lambda: [0, 1, 2])
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: streams[device])
    exp = Experiment.from_config(_cfg(20))
    _assert_same(streams, RunState().state_dict(exp)["cuda_rng"])
    saved = torch.load(run_dir / CHECKPOINT, weights_only=True)
    saved["cuda_rng"] = streams
    torch.save(saved, run_dir / CHECKPOINT)
    calls = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((state.clone(), device)))
    RunState.restore(exp, run_dir, resuming=True)
    assert [device for _, device in calls] == [0, 1]
    _assert_same(streams[:2], [state for state, _ in calls])
    calls.clear()
    RunState.restore(exp, run_dir, rng=False)
    assert calls == []


def test_a_fresh_runs_stream_is_seeded_once():
    """start_stream seeds torch with the run's seed the first time only: a second call (a fit continued in the same
    process) leaves the stream where the first run's draws left it."""
    state = RunState(seed=11)
    state.start_stream()
    first = torch.rand(3)
    state.start_stream()
    second = torch.rand(3)
    torch.manual_seed(11)
    expected = torch.rand(6)
    assert torch.equal(torch.cat([first, second]), expected)
