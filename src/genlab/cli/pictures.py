"""genlab sample, reconstruct, interpolate, traverse: pictures from a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from genlab.cli import positive_int
from genlab.errors import GenlabError


def _output_size(state: dict[str, Any]) -> tuple[int, int] | None:
    size = state.get("original_size")
    return tuple(size) if size else None


def _crop(images: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
    """Outputs at the data's own size (the VAE's padding cropped off)."""
    from genlab.data import crop_to

    size = _output_size(state)
    return crop_to(images, size) if size else images


def _save(args: argparse.Namespace, images: torch.Tensor, nrow: int) -> Path:
    """images as args.out (a grid enlarged args.scale times, or an array), refused first if too large to hold."""
    from genlab.io import save_images
    from genlab.limits import check_output

    check_output(len(images), tuple(images.shape[1:]), Path(args.out).suffix, nrow, args.scale)
    return save_images(args.out, images, nrow=nrow, scale=args.scale)


@torch.no_grad()
def cmd_sample(args: argparse.Namespace) -> int:
    from genlab.io import save_images
    from genlab.limits import check_output, image_shape
    from genlab.models import family
    from genlab.runs import load_run, load_stage2
    from genlab.sampling import check_temperature, class_labels, draw, standing_statistics

    if args.n <= 0:
        raise GenlabError(f"--n must be >= 1, got {args.n}")
    check_temperature(args.temperature)
    config, model, state = load_run(args.run, args.device, args.weights)
    # Before drawing: the samples are drawn in chunks, but the output holds them all at once.
    check_output(args.n, image_shape(family(config.family).kind, config.model), Path(args.out).suffix, scale=args.scale)
    if args.bn == "standing":
        standing_statistics(model, seed=args.seed)
    if args.stage2:
        model = load_stage2(args.run, config, model)
    labels, nrow = class_labels(args.class_, config.family, getattr(config.model, "num_classes", None), args.n)
    device = next(model.parameters()).device
    images = draw(model, args.n, torch.Generator(device).manual_seed(args.seed), labels, chunk=1024, temperature=args.temperature)
    images = _crop(images, state)
    out = save_images(args.out, images, nrow=nrow, scale=args.scale)
    what = {None: "", "all": " of every class (a row each)"}.get(args.class_, f" of class {args.class_}")
    hot = "" if args.temperature == 1 else f" at temperature {args.temperature:g}"
    print(f"genlab: wrote {args.n} samples{what}{hot} {tuple(images.shape[1:])} to {out}")
    return 0


def _vae_run(args: argparse.Namespace):
    """(config, model, state, test images, their labels for a conditional VAE) of a VAE run."""
    from genlab.models import family
    from genlab.runs import load_run, test_split

    config, model, state = load_run(args.run, args.device)
    record = family(config.family)
    if record.kind != "vae":
        raise GenlabError(f"{args.run} is a {config.family} run; this command needs a VAE run")
    test = test_split(config)
    return config, model, state, test, test.labels if record.conditional else None


@torch.no_grad()
def cmd_reconstruct(args: argparse.Namespace) -> int:
    from genlab.latents import beside_reconstructions

    config, model, state, test, labels = _vae_run(args)
    cond = None if labels is None else labels[: args.n]
    pairs = beside_reconstructions(model, test.images[: args.n], config.data.binarize, cond)
    out = _save(args, _crop(pairs, state), nrow=8)
    print(f"genlab: wrote {len(pairs) // 2} test images beside their reconstructions to {out}")
    return 0


@torch.no_grad()
def cmd_interpolate(args: argparse.Namespace) -> int:
    from genlab.latents import interpolate

    config, model, state, test, labels = _vae_run(args)
    if min(len(test), 2 * args.pairs) < 2:
        raise GenlabError("interpolation needs at least two test images")
    cond = None if labels is None else labels[: 2 * args.pairs]
    images, n = interpolate(model, test.images[: 2 * args.pairs], config.data.binarize, args.steps, cond)
    out = _save(args, _crop(images, state), nrow=args.steps)
    print(f"genlab: wrote {n} interpolations of {args.steps} steps to {out}")
    return 0


@torch.no_grad()
def cmd_traverse(args: argparse.Namespace) -> int:
    from genlab.io import save_gif
    from genlab.latents import dim_inactive, there_and_back, traverse
    from genlab.limits import check_output
    from genlab.models import family
    from genlab.runs import load_run, test_split

    if args.steps < 2 or args.range <= 0 or (args.dims is not None and args.dims < 1):
        raise GenlabError("--steps must be >= 2, --range > 0 and --dims >= 1")
    suffix = Path(args.out).suffix.lower()
    if suffix not in (".png", ".gif", ".npy"):
        raise GenlabError(f"cannot write {Path(args.out).name}: the output must end in .png, .gif or .npy")
    config, model, state = load_run(args.run, args.device)
    record = family(config.family)
    classes = getattr(config.model, "num_classes", None)
    if args.class_ is not None and (not record.conditional or not 0 <= args.class_ < classes):
        raise GenlabError("--class needs a conditional run and a class in 0..num_classes-1" if record.conditional
                          else f"--class needs a class-conditional run; this is a {config.family} run: drop --class")  # fmt: skip
    reference = labels = None
    if record.kind == "vae":
        test = test_split(config)
        reference = test.images[:500]
        labels = test.labels[:500] if record.conditional else None
        if not 0 <= args.index < len(reference):
            raise GenlabError(f"--index must be in [0, {len(reference) - 1}], got {args.index}")
    label = args.class_ if args.class_ is not None else (0 if record.conditional and record.kind == "gan" else None)
    t = traverse(model, record.kind, reference, config.data.binarize, args.index, args.dims, args.range, args.steps,
                 args.seed, labels=labels, label=label)  # fmt: skip
    images = _crop(dim_inactive(t), state)
    if suffix == ".gif":
        grid = images.view(len(t.dims), t.steps, *images.shape[1:])
        frames = there_and_back([grid[:, s] for s in range(t.steps)])
        check_output(len(t.dims), tuple(images.shape[1:]), suffix, len(t.dims), args.scale, len(frames), "--dims")
        out = save_gif(args.out, frames, nrow=len(t.dims), scale=args.scale)
    else:
        out = _save(args, images, nrow=t.steps)
    if record.kind == "vae":
        rows = ", ".join(f"z{d} {k:.2f}" + ("" if a else " (inactive)") for d, k, a in zip(t.dims, t.kl, t.active))
        print(f"genlab: rows by KL (nats): {rows}")
    print(f"genlab: wrote a traversal of {len(t.dims)} dimensions over [-{args.range}, {args.range}] to {out}")
    return 0


def add_sampling_flags(p) -> None:
    """--weights, --bn and --temperature: which generator a GAN run samples from, with which BatchNorm
    statistics, and how widely any run's prior is drawn."""
    from genlab.runs import WEIGHTS
    from genlab.sampling import BN_MODES

    p.add_argument("--weights", choices=WEIGHTS, default="auto",
                   help="GAN: the raw generator, its EMA (train.ema), or the EMA where the run kept one (default)")  # fmt: skip
    p.add_argument("--bn", choices=BN_MODES, default="eval",
                   help="GAN: BatchNorm with the run's running statistics, or standing ones over 10,000 samples")  # fmt: skip
    p.add_argument("--temperature", type=float, default=1.0,
                   help="the prior's spread: z = mu + T * sigma * eps (below 1: more typical, less diverse samples)")  # fmt: skip


def add_commands(sub) -> None:
    def run_command(name: str, help: str, func, out_help: str = "FILE.png (grid) or FILE.npy (N,C,H,W floats in [-1, 1])"):
        p = sub.add_parser(name, help=help)
        p.add_argument("run", help="a run folder (or one of its checkpoint folders)")
        p.add_argument("--out", required=True, help=out_help)
        p.add_argument("--device", default="auto")
        p.add_argument("--scale", type=positive_int, help="PNG: enlarge the grid this many times (default: to >= 512 pixels)")
        p.set_defaults(func=func)
        return p

    p = run_command("sample", "draw samples from a trained run", cmd_sample)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--class", dest="class_", metavar="K|all", help="conditional runs: samples of class K, or a row per class")
    p.add_argument("--stage2", action="store_true", help="VAE: sample through the 2-Stage VAE's second stage (genlab stage2)")
    p.add_argument("--seed", type=int, default=0)
    add_sampling_flags(p)
    p = run_command("reconstruct", "VAE: test images beside their reconstructions", cmd_reconstruct)
    p.add_argument("--n", type=int, default=32)
    p = run_command("interpolate", "VAE: decoded points on lines between pairs of test images", cmd_interpolate)
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)

    p = run_command("traverse", "one row per latent dimension (VAE: sorted by KL), decoded along it", cmd_traverse,
                    out_help="FILE.png (grid), FILE.gif (animated) or FILE.npy")  # fmt: skip
    p.add_argument("--dims", type=int, help="how many dimensions (VAE: the highest-KL ones, default 16; GAN: 10)")
    p.add_argument("--range", type=float, default=2.0, help="move each coordinate over [-range, range]")
    p.add_argument("--steps", type=int, default=9)
    p.add_argument("--index", type=int, default=0, help="VAE: which test image's code is the seed")
    p.add_argument("--seed", type=int, default=0, help="GAN: the seed of z")
    p.add_argument("--class", dest="class_", type=int, help="conditional runs: the class of every row (VAE: the seed's own)")
