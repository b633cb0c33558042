"""Evaluation: sample quality in a domain classifier's feature space, VAE likelihoods, GAN health."""
