import pyro
import pytest
import torch

import pyro_lvm


@pytest.fixture(autouse=True)
def _fresh_pyro():
    """Every test: empty param store, fixed seed, Pyro's validation on, inside the library's Pyro settings
    (``pyro_lvm.scope``: tests drive modules by hand, as the library does inside its calls)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    dtype = torch.get_default_dtype()
    with pyro_lvm.scope():
        yield
    torch.set_default_dtype(dtype)
