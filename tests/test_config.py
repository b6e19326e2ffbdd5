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
        ({"optim": {"lr": float("inf")}}, ["'optim.lr'", "finite number"]),
        ({"train": {"steps": "20"}}, ["'train.steps'", "integer", "'20'"]),
        ({"model": {"hidden": [0]}}, ["'model.hidden.0'", "greater than 0"]),
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
    (tmp_path / "ok.toml").write_text("[train]\n")
    with pytest.raises(PyroLVMError, match="section.key=value"):
        config.load(tmp_path / "ok.toml", ["train.steps"])
    with pytest.raises(PyroLVMError, match="must name section.key"):
        config.load(tmp_path / "ok.toml", ["steps=3"])


def test_component_options_are_checked_across_sections():
    with pytest.raises(PyroLVMError, match="unknown network 'nonexistent'; registered: conv, mlp"):
        config.from_dict({"guide": {"net": "nonexistent"}})
    with pytest.raises(PyroLVMError, match="'compare.guide_options.amortized.refine_steps'"):
        config.from_dict({"compare": {"guide_options": {"amortized": {"refine_steps": 3}}}})
    with pytest.raises(PyroLVMError, match="'vamp' is not in compare.guides"):
        config.from_dict({"compare": {"guide_options": {"vamp": {}}}})
    cfg = config.from_dict({"compare": {"guide_options": {"semi_amortized": {"refine_steps": 20}}}})
    assert cfg.compare.guide_options == {"semi_amortized": {"refine_steps": 20}}
    with pytest.raises(PyroLVMError, match=r"\[guide\] takes the options of a registered guide"):
        cfg.guide = cfg.prior  # another section's options, assigned in Python
    with pytest.raises(PyroLVMError, match="plugin '' is not a module name"):
        config.from_dict({"plugins": [""]})


def test_an_option_given_with_set_is_never_dropped(tmp_path):
    (tmp_path / "c.toml").write_text("[train]\n")
    with pytest.raises(PyroLVMError, match="--set guide.refine_steps was given, but guide 'per_datapoint'"):
        config.load(
            tmp_path / "c.toml", ["guide.name=semi_amortized", "guide.refine_steps=3", "guide.name=per_datapoint"]
        )


def test_jit_on_needs_a_compiled_form():
    with pytest.raises(PyroLVMError, match="'renyi' has none"):
        config.from_dict({"elbo": {"name": "renyi", "jit": "on"}})
    assert config.from_dict({"elbo": {"name": "trace", "jit": "on"}}).elbo.jit == "on"


def test_compare_gives_each_guide_its_own_options(tmp_path):
    from pyro_lvm.studies.compare import guide_config
    from pyro_lvm.studies.gaps import refinement_lr

    cfg = config.from_dict(
        {
            "guide": {"name": "amortized", "hidden": [7]},
            "compare": {"guide_options": {"semi_amortized": {"refine_steps": 2, "refine_lr": 0.05}}},
        }
    )
    per = guide_config(cfg, "per_datapoint", tmp_path / "p")
    semi = guide_config(cfg, "semi_amortized", tmp_path / "s")
    assert config.to_dict(per)["guide"] == {"name": "per_datapoint", "init_scale": 1.0}
    assert semi.guide.hidden == [7] and semi.guide.refine_steps == 2 and semi.train.out_dir == str(tmp_path / "s")
    assert refinement_lr(cfg) == 0.05  # the test-time refinement steps like the trained semi-amortized guide
    assert refinement_lr(config.with_overrides(cfg, ["compare.refine_lr=0.2"])) == 0.2
    assert refinement_lr(config.from_dict({})) == 0.1
