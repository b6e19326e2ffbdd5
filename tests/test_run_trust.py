"""Opening a run folder runs none of its plugin code unasked (``pyro_lvm/config/trust.py``): a module that its
saved config names and that sits in the current folder or beside the run is imported only with ``--plugin`` or
``--trust-plugins`` (``plugins=`` / ``trust_plugins=True`` in Python); an installed module, or one already
imported, needs neither."""

from __future__ import annotations

import shutil
import sys
import uuid

import pytest
from helpers import tiny_toml

from pyro_lvm import config
from pyro_lvm.cli import main
from pyro_lvm.config.trust import import_run_plugins
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.studies.run import open_run

EVAL = ["--set", "eval.num_samples=4", "--set", "eval.num_points=4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder trained by the CLI (no plugins)."""
    root = tmp_path_factory.mktemp("trust")
    (root / "c.toml").write_text(tiny_toml(2))
    path = list(sys.path)
    try:
        assert main(["train", str(root / "c.toml"), "--set", f"train.out_dir={root / 'run'}"]) == 0
    finally:
        sys.path[:] = path
    return root / "run"


@pytest.fixture
def planted(trained, tmp_path, monkeypatch):
    """(folder, module name): a copy of the run in ``folder``/run whose config names a plugin module that sits in
    ``folder`` (the current folder) and writes ``folder``/MARKER when imported. The module is forgotten after."""
    name = f"helper_{uuid.uuid4().hex[:8]}"
    shutil.copytree(trained, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    saved = tmp_path / "run" / "config.toml"
    saved.write_text(saved.read_text().replace("plugins = []", f'plugins = ["{name}"]'))
    (tmp_path / f"{name}.py").write_text(f"open({str(tmp_path / 'MARKER')!r}, 'w').write('imported')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path, name
    sys.modules.pop(name, None)


COMMANDS = [
    ["evaluate", "run", *EVAL],
    ["sample", "run", "--num", "4"],
    ["diagnose", "run", "--nuts-points", "0", "--num-points", "2", "--num-samples", "30"],
    ["train", "--resume", "run", "--set", "train.steps=3"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: a[0] + (" --resume" if "--resume" in a else ""))
def test_a_plugin_beside_the_run_is_not_imported_unasked(planted, capsys, argv):
    folder, name = planted
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert not (folder / "MARKER").exists() and name not in sys.modules
    assert len(lines) == 1 and lines[0].startswith("error: run folder 'run' names plugin module(s) " + name), lines
    assert f"--plugin {name}" in lines[0] and "--trust-plugins" in lines[0] and str(folder / name) in lines[0]
    assert main([*argv, "--plugin", name]) == 0  # named for this command: imported
    assert (folder / "MARKER").read_text() == "imported"


def test_trust_plugins_imports_them(planted, capsys):
    folder, name = planted
    assert main(["evaluate", "run", *EVAL, "--trust-plugins"]) == 0
    assert (folder / "MARKER").exists()


def test_python_follows_the_same_rule(planted):
    folder, name = planted
    sys.path.insert(0, "")  # as in a notebook or the REPL: the current folder first
    saved = folder / "run" / "config.toml"
    with pytest.raises(PyroLVMError, match=f"names plugin module\\(s\\) {name} .*trust_plugins=True"):
        config.load(saved, saved=True)
    with pytest.raises(PyroLVMError, match=name):
        open_run(folder / "run")
    assert not (folder / "MARKER").exists()
    assert config.load(saved, saved=True, plugins=[name]).plugins == [name]  # allowed by name
    assert (folder / "MARKER").exists()
    (folder / "MARKER").unlink()
    exp, _ = open_run(folder / "run")  # imported now: importing again runs nothing, so it needs no permission
    assert exp.cfg.plugins == [name] and not (folder / "MARKER").exists()
    sys.modules.pop(name)
    open_run(folder / "run", trust_plugins=True)
    assert (folder / "MARKER").exists()


def test_only_the_current_folder_and_the_run_s_surroundings_are_suspect(tmp_path, monkeypatch):
    """A module on sys.path elsewhere (an installed package, the user's PYTHONPATH) is imported; one in the folder
    holding the run, or inside the run folder, is not, even when that folder is on sys.path."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    work, lib, received = tmp_path / "work", tmp_path / "lib", tmp_path / "received"
    for folder in (work, lib, received / "run" / "inner"):
        folder.mkdir(parents=True)
    monkeypatch.chdir(work)
    names = {place: f"{place}_{uuid.uuid4().hex[:8]}" for place in ("lib", "beside", "inside", "package")}
    (lib / f"{names['lib']}.py").write_text("")
    (received / f"{names['beside']}.py").write_text("")
    (received / "run" / "inner" / f"{names['inside']}.py").write_text("")
    (received / names["package"]).mkdir()
    (received / names["package"] / "__init__.py").write_text("")
    sys.path[:0] = [str(lib), str(received), str(received / "run" / "inner")]
    try:
        assert import_run_plugins([names["lib"]], received / "run") == [names["lib"]]
        assert names["lib"] in sys.modules
        for place in ("beside", "inside", "package"):
            with pytest.raises(PyroLVMError, match=f"{names[place]} \\(.*--plugin {names[place]}"):
                import_run_plugins([names[place]], received / "run")
            assert names[place] not in sys.modules
        with pytest.raises(PyroLVMError, match="plugin module 'no_such_plugin_x' not found"):
            import_run_plugins(["no_such_plugin_x"], received / "run")  # nothing of it can run: said as before
        with pytest.raises(PyroLVMError, match="must be a list of module names"):
            import_run_plugins("evil", received / "run")
        import_run_plugins(["json"], received / "run")  # the standard library
    finally:
        for name in names.values():
            sys.modules.pop(name, None)
