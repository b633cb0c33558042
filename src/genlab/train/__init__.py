"""Training: one module per model family (its step function and pictures) and the shared loop."""

from genlab.train import gan, vae

# Each family module provides: make_optimizers, prepare, step, validate, pictures, health (a warning
# or None), LOG_KEYS, and optionally CHARTS (how the report groups its curves).
FAMILIES = {"vae": vae, "gan": gan}
