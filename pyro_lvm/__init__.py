"""pyro_lvm: latent variable models on Pyro, with swappable guides and amortized vs non-amortized comparison."""

import pyro

__version__ = "0.1.0"

# Every PyroModule of the library keeps its parameters to itself: two experiments (or a KL fit and a VAE) in one
# process share nothing through Pyro's global parameter store.
pyro.settings.set(module_local_params=True)
