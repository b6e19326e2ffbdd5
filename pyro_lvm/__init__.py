"""pyro_lvm: latent variable models on Pyro, with swappable guides and amortized vs non-amortized comparison."""

__version__ = "0.1.0"
