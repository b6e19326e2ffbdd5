import pytest

from pyro_lvm import config
from pyro_lvm.errors import PyroLVMError


def test_round_trip(tmp_path):
    cfg = config.from_dict({"guide": {"name": "per_datapoint"}, "train": {"steps": 7}})
    config.save(cfg, tmp_path / "c.toml")
    assert config.load(tmp_path / "c.toml") == cfg


def test_overrides_are_typed_and_applied(tmp_path):
    (tmp_path / "c.toml").write_text("[train]\nsteps = 5\n")
    cfg = config.load(
        tmp_path / "c.toml",
        [
            "train.steps=100",
            "guide.name=semi_amortized",
            "model.hidden=[8, 4]",
            "optim.lr=1e-2",
            "train.progress=false",
        ],
    )
    assert cfg.train.steps == 100 and cfg.guide.name == "semi_amortized"
    assert cfg.model.hidden == [8, 4] and cfg.optim.lr == 0.01 and cfg.train.progress is False


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"train": {"stepz": 1}}, ["'train.stepz'", "valid keys in [train]", "steps"]),
        ({"trian": {}}, ["'trian'", "top level", "train"]),
        ({"train": {"steps": "many"}}, ["'train.steps'", "integer", "'many'"]),
        ({"train": {"progress": "perhaps"}}, ["'train.progress'", "true or false"]),
        ({"model": {"hidden": 3}}, ["'model.hidden'", "a list"]),
        ({"train": {"steps": -1}}, ["'train.steps'", "greater than 0"]),
        ({"data": {"binarize": "sometimes"}}, ["'data.binarize'", "static"]),
        ({"prior": {"name": "laplace"}}, ["'prior.name'", "unknown prior 'laplace'", "standard_normal"]),
        ({"guide": {"name": "magic"}}, ["unknown guide 'magic'", "amortized", "per_datapoint"]),
        ({"elbo": {"name": "x"}}, ["unknown elbo 'x'", "trace", "renyi"]),
        ({"data": {"name": "cifar"}}, ["unknown dataset 'cifar'", "digits", "fashion_mnist"]),
        ({"model": {"name": "cvae"}}, ["needs model.condition"]),
    ],
)
def test_validation_errors_name_the_key(raw, words):
    with pytest.raises(PyroLVMError) as info:
        config.from_dict(raw)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(PyroLVMError, match="not found"):
        config.load(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[train\nsteps = ")
    with pytest.raises(PyroLVMError, match="not valid TOML"):
        config.load(tmp_path / "bad.toml")
    (tmp_path / "ok.toml").write_text("")
    with pytest.raises(PyroLVMError, match="section.key=value"):
        config.load(tmp_path / "ok.toml", ["train.steps"])
    with pytest.raises(PyroLVMError, match="must name section.key"):
        config.load(tmp_path / "ok.toml", ["steps=3"])
