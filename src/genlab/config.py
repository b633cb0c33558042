"""Run configuration: TOML/YAML sections [model], [loss], [train], [data] onto frozen dataclasses.

Every key is checked before any work starts: unknown keys get a "did you mean", wrong types and
impossible values name the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError
from genlab.models import KINDS, MODELS, kind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class VAELossConfig:
    """Listing 5's weights, plus beta-VAE (Higgins et al. 2017) and capacity annealing (Burgess et al. 2018)."""

    kld_weight: float = 0.00025  # PyTorch-VAE's vae.yaml; also fixes the Gaussian decoder variance (losses.py)
    beta: float = 1.0
    # beta in the normalised convention (pixel-mean reconstruction, latent-mean KL): beta = beta_norm / (latent_dim * kld_weight)
    beta_norm: float | None = None
    # "beta": recon + beta*w*KL; "capacity": recon + gamma*w*|KL - C(step)|;
    # "tcvae": recon + w*(alpha*MI + beta*TC + gamma_dwkl*dimension-wise KL), Chen et al. 2018
    loss_type: str = "beta"
    gamma: float = 1000.0
    max_capacity: float = 25.0
    capacity_max_iter: int = 100_000
    alpha: float = 1.0
    gamma_dwkl: float = 1.0
    dataset_size: int = 0  # tcvae's minibatch-weighted sampling needs N; 0: the training set's size, filled in at the start

    def validate(self) -> None:
        _positive("loss.kld_weight", self.kld_weight, allow_zero=True)
        _positive("loss.beta", self.beta, allow_zero=True)
        if self.beta_norm is not None:
            _positive("loss.beta_norm", self.beta_norm, allow_zero=True)
        _positive("loss.alpha", self.alpha, allow_zero=True)
        _positive("loss.gamma_dwkl", self.gamma_dwkl, allow_zero=True)
        _positive("loss.dataset_size", self.dataset_size, allow_zero=True)
        _choice("loss.loss_type", self.loss_type, ("beta", "capacity", "tcvae"))
        _positive("loss.gamma", self.gamma, allow_zero=True)
        _positive("loss.max_capacity", self.max_capacity, allow_zero=True)
        _positive("loss.capacity_max_iter", self.capacity_max_iter)


@dataclass(frozen=True)
class GANLossConfig:
    """The notes' BCE; on logits by default (same model, finite where the Sigmoid saturates)."""

    logits: bool = True
    adversarial: str = "bce"  # "bce": the notes' (non-saturating) loss; "hinge": SNGAN's

    def validate(self) -> None:
        _choice("loss.adversarial", self.adversarial, ("bce", "hinge"))
        if self.adversarial == "hinge" and not self.logits:
            raise ConfigError('loss.adversarial = "hinge" scores D\'s logits; set loss.logits = true')


@dataclass(frozen=True)
class WGANLossConfig:
    """WGAN-GP (Gulrajani et al. 2017): lambda = 10, five critic updates per generator update."""

    gp_weight: float = 10.0
    n_critic: int = 5

    def validate(self) -> None:
        _positive("loss.gp_weight", self.gp_weight, allow_zero=True)
        if not isinstance(self.n_critic, int) or self.n_critic < 1:
            raise ConfigError(
                f"loss.n_critic must be an integer >= 1 (critic steps per generator step; WGAN-GP uses 5), got {self.n_critic}"
            )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    max_steps: int | None = None  # counts the whole run, resumes included
    time_budget: float | None = None  # seconds of this invocation; stops cleanly, checkpointed
    batch_size: int = 64
    lr: float = 0.005
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_decay: float = 1.0  # ExponentialLR gamma, applied once an epoch (PyTorch-VAE uses 0.95)
    seed: int = 0
    device: str = "auto"
    log_every: int = 50  # steps between host syncs for logging
    sample_every: int = 1  # epochs between sample grids
    val_batches: int = 20  # test batches for the per-epoch validation losses
    num_samples: int = 64
    nan_policy: str = "stop"  # "stop": halt keeping the last good checkpoint; "skip": drop the step
    precision: str = "fp32"  # "bf16": bfloat16 autocast; "fp16": float16 autocast with loss scaling
    channels_last: bool = True  # NHWC memory format for the convolutions (measured 1.24x on the CPU VAE step)
    compile: bool = False  # torch.compile the networks (first steps pay the compilation)
    # Compile BatchNorm2d + LeakyReLU pairs into one kernel per direction (VAE). "auto": on CPU with
    # a C++ compiler, in fp32, the pairs of 8 MiB and up (the 64x64 VAE step: 6-9% faster, after a
    # one-off compile of ~10-15 s); true: every pair, on any device; false: never.
    fuse_norm_act: bool | str = "auto"
    eval_every: int = 0  # epochs between sample-quality evaluations (0: never); cheap settings below
    eval_n: int = 2000
    report: bool = True  # write report.html (genlab report) into the run folder at the end

    def validate(self) -> None:
        _positive("train.epochs", self.epochs)
        if self.max_steps is not None:
            _positive("train.max_steps", self.max_steps)
        if self.time_budget is not None:
            _positive("train.time_budget", self.time_budget)
        _positive("train.batch_size", self.batch_size)
        _positive("train.lr", self.lr)
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {list(self.betas)}")
        _positive("train.weight_decay", self.weight_decay, allow_zero=True)
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"train.lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.seed < 0:
            raise ConfigError(f"train.seed must be >= 0, got {self.seed}")
        for key in ("log_every", "sample_every", "num_samples"):
            _positive(f"train.{key}", getattr(self, key))
        _positive("train.val_batches", self.val_batches, allow_zero=True)
        _positive("train.eval_every", self.eval_every, allow_zero=True)
        _choice("train.precision", self.precision, ("fp32", "bf16", "fp16"))
        if isinstance(self.fuse_norm_act, str) and self.fuse_norm_act != "auto":
            raise ConfigError(f'train.fuse_norm_act must be true, false or "auto", got {self.fuse_norm_act!r}')
        _positive("train.eval_n", self.eval_n)
        _choice("train.nan_policy", self.nan_policy, ("stop", "skip"))
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion-mnist"  # fashion-mnist, mnist, shapes, dsprites, or a folder of images / IDX files
    root: str | None = None  # where built-in IDX files are looked for and downloaded to
    download: bool = True
    fit: str = "pad"  # "pad" (centre, black) or "resize" to the model's image size
    center_crop: int | None = None  # image folders: PyTorch-VAE's CelebA uses 148
    val_fraction: float = 0.05  # image folders: share held out as the test split
    workers: int = 2
    max_memory_mb: float = 4096  # image folders larger than this stream from disk
    skip_bad_files: bool = False
    binarize: bool = False  # Bernoulli decoders: pixels > 127 become 1
    image_size: int | None = None  # factor data sets (shapes, dsprites): 64 (default) or 32

    def validate(self) -> None:
        if not self.dataset:
            raise ConfigError("data.dataset must name a built-in data set or a folder")
        _choice("data.fit", self.fit, ("pad", "resize"))
        if self.center_crop is not None:
            _positive("data.center_crop", self.center_crop)
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        _positive("data.workers", self.workers, allow_zero=True)
        _positive("data.max_memory_mb", self.max_memory_mb)
        if self.image_size is not None and self.image_size not in (32, 64):
            raise ConfigError(f"data.image_size must be 32 or 64 (factor data sets), got {self.image_size}")


LOSSES = {family: VAELossConfig if k == "vae" else GANLossConfig for family, k in KINDS.items()} | {"wgan-gp": WGANLossConfig}
# Family defaults where the notes' reference implementations differ (PyTorch-VAE vs PyTorch-GAN).
# The model's image shape, unless set, follows the data (data_shape_defaults).
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "vae": {"model": {}, "train": {"lr": 0.005, "betas": (0.9, 0.999)}},
    "gan": {"model": {}, "train": {"lr": 0.0002, "betas": (0.5, 0.999)}},
    "dcgan": {"model": {}, "train": {"lr": 0.0002, "betas": (0.5, 0.999)}},  # Radford et al. 2015
    "sngan": {"model": {}, "loss": {"adversarial": "hinge"}, "train": {"lr": 0.0002, "betas": (0.5, 0.999)}},  # Miyato's C
    "wgan-gp": {"model": {}, "train": {"lr": 0.0001, "betas": (0.0, 0.9)}},  # Gulrajani et al. 2017
    "cgan": {"model": {}, "loss": {"adversarial": "hinge"}, "train": {"lr": 0.0002, "betas": (0.5, 0.999)}},
    "cvae": {"model": {}, "train": {"lr": 0.005, "betas": (0.9, 0.999)}},  # the notes' VAE's
}


def data_shape_defaults(family: str, model: dict[str, Any], data: DataConfig) -> dict[str, Any]:
    """The model keys that describe its images, taken from the data where the config leaves them unset.

    Channels follow the data (an RGB folder gives 3, grey 1). IDX data keep their size (28), the VAE
    padding it up to what its encoder can halve (32 for five blocks); image folders default to the
    notes' 64x64.
    """
    from genlab.data import FOLDER_IMAGE_SIZE, native_shape

    keys = ("in_channels", "image_size") if kind(family) == "vae" else ("img_shape",)
    if all(k in model for k in keys):
        return {}
    channels, native = native_shape(data)
    if kind(family) == "gan":
        size = native or FOLDER_IMAGE_SIZE
        return {"img_shape": (channels, size, size)}
    out: dict[str, Any] = {}
    if "in_channels" not in model:
        out["in_channels"] = channels
    if "image_size" not in model:
        if native is None:
            out["image_size"] = FOLDER_IMAGE_SIZE
        else:
            dims = model.get("hidden_dims")
            factor = 2 ** len(dims if isinstance(dims, (list, tuple)) else MODELS["vae"][0].hidden_dims)
            out["image_size"] = -(-native // factor) * factor
    return out


@dataclass(frozen=True)
class RunConfig:
    family: str
    model: Any
    loss: Any
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **{k: asdict(getattr(self, k)) for k in ("model", "loss", "train", "data")}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def validate(self) -> None:
        for part in (self.model, self.loss, self.train, self.data):
            part.validate()
        if self.train.fuse_norm_act is True and self.family != "vae":
            raise ConfigError("train.fuse_norm_act fuses the VAE's BatchNorm2d + LeakyReLU; the GAN has none: set it false")
        if self.family == "vae" and self.model.decoder == "sigma" and self.loss.loss_type != "beta":
            raise ConfigError(
                f'model.decoder = "sigma" trains the ELBO in nats with loss.beta on the KL; loss.loss_type = '
                f'"{self.loss.loss_type}" weighs in the notes\' per-pixel units: set loss.loss_type = "beta"'
            )


def _resolve_beta_norm(loss: VAELossConfig, latent_dim: int) -> VAELossConfig:
    """loss.beta from loss.beta_norm: w * beta * KL_sum = beta_norm * KL_sum / latent_dim."""
    if loss.kld_weight == 0:
        raise ConfigError("loss.beta_norm needs loss.kld_weight > 0 (beta = beta_norm / (latent_dim * kld_weight))")
    beta = loss.beta_norm / (latent_dim * loss.kld_weight)
    if loss.beta != 1.0 and not math.isclose(loss.beta, beta, rel_tol=1e-9):
        raise ConfigError(f"set loss.beta or loss.beta_norm, not both (beta_norm {loss.beta_norm} means beta {beta:.6g})")
    return dataclasses.replace(loss, beta=beta)


def beta_conventions(loss: VAELossConfig, latent_dim: int, pixels: int) -> dict[str, float]:
    """The run's KL weight in the three conventions in use (the notes', the literature's per-image sum, normalised).

    The notes: MSE_mean + kld_weight * beta * KL_sum. Per-image sums (Higgins et al.; disentanglement_lib):
    D * (that) = SSE + (D * kld_weight * beta) * KL_sum. Normalised (disent): MSE_mean + beta_norm * KL_sum / latent_dim.
    """
    weight = loss.kld_weight * loss.beta
    return {"beta": loss.beta, "beta_sum": weight * pixels, "beta_norm": weight * latent_dim}


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """value as the dataclass field type hint, or a ConfigError naming the key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(key, value, inner[0])
        for one in inner:  # the first type that takes the value
            try:
                return _coerce(key, value, one)
            except ConfigError:
                pass
        raise ConfigError(f"{key} must be {' or '.join(a.__name__ for a in inner)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(key, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {list(value)}")
        return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover
        return value
    raise ConfigError(f"{key} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    """A dataclass from a dict, refusing unknown keys (with a suggestion) and wrong types."""
    if not isinstance(values, dict):
        raise ConfigError(f"[{section}] must be a table of key = value, got {values!r}")
    names = [f.name for f in fields(cls)]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {section}.{close[0]}?" if close else f"; allowed: {', '.join(names)}"
            raise ConfigError(f"unknown key {section}.{key}{hint}")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    return cls(**kwargs)


def read_file(path: str | Path) -> dict[str, Any]:
    """A TOML or YAML config file as a dict of sections."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as e:  # both parsers' errors carry line and column
        raise ConfigError(f"{path}: cannot parse ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected sections [model], [loss], [train], [data]")
    return data


def parse_value(text: str) -> Any:
    """A command-line override value, read as TOML (numbers, booleans, lists), else as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def load_config(family: str, file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults <- config file <- overrides ({"train.lr": 1e-3, ...}), checked and frozen."""
    if family not in MODELS:
        raise ConfigError(f"unknown model family {family!r}; choose one of {', '.join(MODELS)}")
    raw = merge(DEFAULTS[family], read_file(file) if file else {})
    if "family" in raw:
        if raw.pop("family") != family:
            raise ConfigError(f"{file} is a config for another model family; pass it to that family's command")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
    if isinstance(raw.get("model", {}), dict):
        data = build_section(DataConfig, raw.get("data", {}), "data")
        raw["model"] = {**data_shape_defaults(family, raw.get("model", {}), data), **raw.get("model", {})}
    return load_config_from_sections(family, raw)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from its to_dict() form (a run folder's config.json)."""
    data = dict(data)
    family = data.pop("family", None)
    if family not in MODELS:
        raise ConfigError(f"config names unknown model family {family!r}")
    return load_config_from_sections(family, data)


def load_config_from_sections(family: str, sections: dict[str, Any]) -> RunConfig:
    classes = {"model": MODELS[family][0], "loss": LOSSES[family], "train": TrainConfig, "data": DataConfig}
    for name in sections:
        if name not in classes:
            close = difflib.get_close_matches(name, classes, n=1)
            raise ConfigError(f"unknown section [{name}]" + (f"; did you mean [{close[0]}]?" if close else ""))
    parts = {name: build_section(cls, sections.get(name, {}), name) for name, cls in classes.items()}
    if family == "vae" and parts["loss"].beta_norm is not None:
        parts["loss"] = _resolve_beta_norm(parts["loss"], parts["model"].latent_dim)
    config = RunConfig(family, **parts)
    config.validate()
    return config
