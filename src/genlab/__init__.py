"""genlab: VanillaVAE / beta-VAE and vanilla GAN of the course notes, trained, sampled and evaluated."""

__version__ = "0.1.0"
