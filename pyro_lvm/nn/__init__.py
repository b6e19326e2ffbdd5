"""Plain torch networks (no Pyro): the registered ``mlp`` and the Gaussian head that guides and priors use."""

from pyro_lvm.nn.nets import GaussianHead, mlp, mlp_network

__all__ = ["GaussianHead", "mlp", "mlp_network"]
