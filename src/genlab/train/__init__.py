"""Training: one module per model family (its step function and pictures) and the shared loop."""

from genlab.models import KINDS
from genlab.train import cgan, cvae, gan, vae, wgan

# Each family module provides: make_optimizers, prepare, step, validate, pictures, health (a warning
# or None), LOG_KEYS, and optionally CHARTS (how the report groups its curves).
FAMILIES = {family: vae if k == "vae" else gan for family, k in KINDS.items()} | {"wgan-gp": wgan, "cgan": cgan, "cvae": cvae}
