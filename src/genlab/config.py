"""Run configuration as typed, frozen dataclasses: [model] (in each model's file), [loss], [train], [data].

Each section checks its own values (`validate`); reading files, coercing types and the checks that
need the model family's record are in configfile.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from genlab.errors import ConfigError


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
    # β-TCVAE: "mws" minibatch-weighted or "mss" minibatch stratified sampling (Chen et al. 2018, App. C);
    # "decomposed": alpha*MI + beta*TC + gamma_dwkl*dwKL, all three estimated (Chen et al.'s modified ELBO);
    # "analytic": the closed-form KL + (beta - 1) * TC (disentanglement_lib's beta_tc_vae), alpha = gamma_dwkl = 1.
    estimator: str = "mws"
    tc_form: str = "decomposed"
    tc_warmup: int = 0  # steps over which the TC weight (tcvae's beta, FactorVAE's gamma_tc) grows from 0; 0: none
    recon_sum: bool = False  # Bernoulli NLL summed per image (then kld_weight = 1 makes beta the literature's)
    # The σ-VAE's likelihood counts the data's own pixels only: the padding (28 -> 32 leaves 2 pixels a side)
    # is constant and would add spurious likelihood and shrink sigma. -1: from the data, filled in at the start.
    margin: int = -1
    # A run saved before margin existed counted every pixel: it resumes as it trained.
    LEGACY: ClassVar[dict[str, Any]] = {"margin": 0}
    # Settings that one loss_type reads and the others ignore: changed under another, they would do nothing.
    ONLY_FOR: ClassVar[dict[str, str]] = {
        "gamma": "capacity", "max_capacity": "capacity", "capacity_max_iter": "capacity",
        "alpha": "tcvae", "gamma_dwkl": "tcvae", "estimator": "tcvae", "tc_form": "tcvae", "tc_warmup": "tcvae",
        "dataset_size": "tcvae",
    }  # fmt: skip
    SWITCH_LOSS_TYPE: ClassVar[bool] = True

    def ignored_settings(self) -> None:
        """Refuse a changed setting that this loss_type ignores (checked for new runs only: a run saved with
        one trained without it, and must still resume)."""
        defaults = {f.name: f.default for f in fields(self)}
        for key, loss_type in self.ONLY_FOR.items():
            if self.loss_type != loss_type and getattr(self, key) != defaults[key]:
                raise ConfigError(
                    f'loss.{key} is read by loss.loss_type = "{loss_type}" only and would do nothing under '
                    f'"{self.loss_type}": drop it' + (f' or set loss.loss_type = "{loss_type}"' if self.SWITCH_LOSS_TYPE else "")
                )

    def validate(self) -> None:
        _positive("loss.kld_weight", self.kld_weight, allow_zero=True)
        if self.margin < -1:
            raise ConfigError(f"loss.margin must be -1 (from the data) or >= 0 pixels, got {self.margin}")
        _positive("loss.beta", self.beta, allow_zero=True)
        if self.beta_norm is not None:
            _positive("loss.beta_norm", self.beta_norm, allow_zero=True)
        _positive("loss.alpha", self.alpha, allow_zero=True)
        _positive("loss.gamma_dwkl", self.gamma_dwkl, allow_zero=True)
        _positive("loss.dataset_size", self.dataset_size, allow_zero=True)
        _choice("loss.loss_type", self.loss_type, ("beta", "capacity", "tcvae"))
        _choice("loss.estimator", self.estimator, ("mws", "mss"))
        _choice("loss.tc_form", self.tc_form, ("decomposed", "analytic"))
        _positive("loss.tc_warmup", self.tc_warmup, allow_zero=True)
        if self.tc_form == "analytic" and (self.alpha != 1 or self.gamma_dwkl != 1):
            raise ConfigError('loss.tc_form = "analytic" is KL + (beta - 1) * TC: it weighs MI and dwKL by 1; '
                              'set loss.alpha = loss.gamma_dwkl = 1 or loss.tc_form = "decomposed"')  # fmt: skip
        _positive("loss.gamma", self.gamma, allow_zero=True)
        _positive("loss.max_capacity", self.max_capacity, allow_zero=True)
        _positive("loss.capacity_max_iter", self.capacity_max_iter)


@dataclass(frozen=True)
class FactorVAELossConfig(VAELossConfig):
    """FactorVAE (Kim & Mnih 2018): the VAE's loss + gamma_tc * the discriminator's TC estimate, in kld_weight
    units; the discriminator's own Adam (disentanglement_lib: 1e-4, betas (0.5, 0.9)). loss.tc_warmup grows
    gamma_tc from 0 over that many steps (0, the paper's: none)."""

    gamma_tc: float = 35.0
    d_lr: float = 0.0001
    d_betas: tuple[float, float] = (0.5, 0.9)
    ONLY_FOR: ClassVar[dict[str, str]] = {k: v for k, v in VAELossConfig.ONLY_FOR.items() if k != "tc_warmup"}  # warms gamma_tc
    SWITCH_LOSS_TYPE: ClassVar[bool] = False  # FactorVAE's own TC term needs loss_type "beta"

    def validate(self) -> None:
        super().validate()
        _positive("loss.gamma_tc", self.gamma_tc, allow_zero=True)
        _positive("loss.d_lr", self.d_lr)
        if not all(0 <= b < 1 for b in self.d_betas):
            raise ConfigError(f"loss.d_betas must be two numbers in [0, 1), got {list(self.d_betas)}")
        if self.loss_type != "beta":
            raise ConfigError(f'FactorVAE adds its own TC term: loss.loss_type must be "beta", not {self.loss_type!r}')


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
class SNGANLossConfig(GANLossConfig):
    """SNGAN: n_dis D steps per G step, each on its own real batch (Miyato et al.'s settings: 1 in B and C,
    5 in A and D-F); a training step is one D step, so an epoch is D's pass over the data."""

    n_dis: int = 1

    def validate(self) -> None:
        super().validate()
        _steps_per_g_step("loss.n_dis", self.n_dis, "D steps per G step; Miyato et al. use 1 or 5")


@dataclass(frozen=True)
class WGANLossConfig:
    """WGAN-GP (Gulrajani et al. 2017): lambda = 10, five critic updates per generator update."""

    gp_weight: float = 10.0
    n_critic: int = 5

    def validate(self) -> None:
        _positive("loss.gp_weight", self.gp_weight, allow_zero=True)
        _steps_per_g_step("loss.n_critic", self.n_critic, "critic steps per generator step; WGAN-GP uses 5")


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
    # Flush subnormal floats to zero on the CPU while training. Trained networks produce values under
    # 1.2e-38, which x86 cores compute with microcode; the shapes beta-TCVAE slowed from ~4,600 to
    # ~3,100 images/s after ~400 steps without the flush and held ~4,000 with it (2-core Xeon, AMX).
    flush_denormal: bool = True
    # Compile BatchNorm2d + LeakyReLU pairs into one kernel per direction (VAE). "auto": on CPU with
    # a C++ compiler, in fp32, the pairs of 8 MiB and up (the 64x64 VAE step: 6-9% faster, after a
    # one-off compile of ~10-15 s); true: every pair, on any device; false: never.
    fuse_norm_act: bool | str = "auto"
    eval_every: int = 0  # epochs between sample-quality evaluations (0: never); cheap settings below
    eval_n: int = 2000
    report: bool = True  # write report.html (genlab report) into the run folder at the end
    # GANs: an exponential moving average of G's weights, kept beside G (decay per step; 0: none). Sampling
    # and eval choose with --weights (Karras et al. 2018; Yazici et al. 2019 measured it on these GANs).
    ema: float = 0.0
    # CPU-seconds of training (this process, all threads) at which a copy of the weights is kept in
    # RUN/snapshots/cpu-NNNNNs: quality against cost, read off one run.
    snapshots: tuple[float, ...] = ()
    # VAEs on factor data: quick factor metrics (MIG on fewer points, KL per dimension) every this many steps.
    factor_metrics_every: int = 0

    def validate(self) -> None:
        _positive("train.epochs", self.epochs)
        if not 0 <= self.ema < 1:
            raise ConfigError(f"train.ema is the EMA's decay per step, in [0, 1) (0.999 is usual); got {self.ema}")
        if any(s <= 0 for s in self.snapshots):
            raise ConfigError(f"train.snapshots are CPU-seconds > 0, got {list(self.snapshots)}")
        _positive("train.factor_metrics_every", self.factor_metrics_every, allow_zero=True)
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


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _steps_per_g_step(key: str, value: int, what: str) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be an integer >= 1 ({what}), got {value}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
