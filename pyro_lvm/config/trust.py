"""Opening a run folder imports the plugin modules its saved config names only when the user says so.

A run folder received from someone else can name a module that sits beside it (``plugins = ["helper"]`` and
``helper.py`` in the folder it was unpacked into); importing that module runs its code, the same risk as unpickling
a checkpoint, which loading with ``weights_only=True`` already refuses. Every way of opening a run (``evaluate``,
``sample``, ``diagnose``, ``train --resume``, the studies reusing a run) goes through ``import_run_plugins``.

A module that a run's saved config names is imported when

1. the user named it for this call: ``--plugin MODULE`` on the command line (the CLI imports those first), in
   Python ``allow=[...]`` here or ``plugins=[...]`` of ``config.load``;
2. it is imported already (in ``sys.modules``): importing it again runs nothing;
3. Python would load it from a folder that is none of: the current folder, the run folder (or a folder inside it),
   the folder that holds the run folder. So an installed package, the standard library or a folder of the user's
   own ``PYTHONPATH`` elsewhere qualifies; a module file that arrived with the run (unpacked beside it, or into the
   folder the command runs in, which the CLI puts on ``sys.path``) does not. Where a module would load from is read
   from the import spec of its top-level package (``importlib.util.find_spec``, which looks without executing);
4. or the user trusts the run: ``--trust-plugins``, ``trust=True`` in Python.

Otherwise one line names the modules, where they are, and how to allow them, and nothing is imported. A module that
cannot be found anywhere is left to ``load_plugins``, which says so (no code of it can run).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.registry import load_plugins


def _folders(spec: Any) -> list[Path]:
    """The ``sys.path`` folders a top-level module's spec loads from (none for built-in and frozen modules)."""
    if spec.submodule_search_locations is not None:  # a package (or a namespace package's portions)
        return [Path(p).parent for p in spec.submodule_search_locations]
    if spec.has_location and spec.origin:
        return [Path(spec.origin).parent]
    return []


def untrusted_location(module: str, run_dir: Path) -> str | None:
    """Where ``module`` would be imported from when that place is the current folder, the run folder (or inside
    it) or the folder holding the run folder; None for a module imported already, not found, or found elsewhere."""
    top = module.split(".")[0]
    if module in sys.modules:
        return None
    try:
        spec = importlib.util.find_spec(top)  # top-level only: finding "a.b" would import package "a"
    except (ImportError, ValueError):
        return top  # cannot be located without importing: not known to be safe
    if spec is None:
        return None  # not found anywhere; load_plugins reports it, and nothing of it runs
    run = run_dir.resolve()
    unsafe = {Path.cwd().resolve(), run.parent, run}
    for folder in _folders(spec):
        folder = folder.resolve()
        if folder in unsafe or run in folder.parents:
            return str(spec.origin if spec.has_location and spec.origin else folder)
    return None


def import_run_plugins(modules: Any, run_dir: str | Path, allow: Iterable[str] = (), trust: bool = False) -> list[str]:
    """Import the plugin modules a run folder's saved config names, under the rule of this module's docstring;
    refuse in one line, before importing any, where a module is not allowed. Returns the modules imported."""
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise PyroLVMError(f"config key 'plugins' must be a list of module names, got {modules!r}")
    for module in modules:  # a malformed name is refused by load_plugins before it imports anything
        if not all(part.isidentifier() for part in module.split(".")):
            load_plugins([module])
    allowed = set(allow)
    if not trust:
        found = {m: untrusted_location(m, Path(run_dir)) for m in modules if m not in allowed}
        refused = {m: where for m, where in found.items() if where is not None}
        if refused:
            names = ", ".join(f"{m} ({where})" for m, where in refused.items())
            flags = " ".join(f"--plugin {m}" for m in refused)
            raise PyroLVMError(
                f"run folder {str(run_dir)!r} names plugin module(s) {names} that opening it would import, running "
                f"their code; if you trust them, pass {flags} (or --trust-plugins; in Python, import them first "
                "or pass trust_plugins=True)"
            )
    load_plugins(modules)
    return modules
