import pyro
import pytest
import torch

import pyro_lvm  # noqa: F401 - sets module_local_params


@pytest.fixture(autouse=True)
def _fresh_pyro():
    """Every test: empty param store, fixed seed, Pyro's validation on."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)
