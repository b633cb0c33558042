"""genlab command line: train, sample, reconstruct, interpolate, eval, calibrate, classifier, bench."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from genlab.errors import ConfigError, GenlabError
from genlab.models import MODELS, is_conditional, kind

# train.* keys that --resume may change: limits and where to run, not what is computed.
RESUMABLE = {"train.epochs", "train.max_steps", "train.time_budget", "train.device", "train.log_every", "train.sample_every"}
TRAIN_FLAGS = {  # flag dest -> config key
    "data": "data.dataset",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "time_budget": "train.time_budget",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "seed": "train.seed",
    "device": "train.device",
}


def parse_set(items: list[str]) -> dict[str, Any]:
    from genlab.config import parse_value

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise ConfigError(f"--set {item!r}: write it as section.key=value, e.g. --set model.latent_dim=32")
        out[key.strip()] = parse_value(value.strip())
    return out


def resume_changes(
    family: str, saved: dict[str, Any], config_file: str | None, overrides: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """What a resume command gives (config file and flags) against the saved run: the keys that would
    change what is computed, as "key: saved in the run, new given", and the RESUMABLE keys' values.

    Values are compared after the config's own type checks, so `--batch-size 64` equals a saved 64.
    """
    from genlab.config import load_config, read_file

    given = dict.fromkeys(overrides)
    if config_file:
        for section, values in read_file(config_file).items():
            if isinstance(values, dict):
                given.update(dict.fromkeys(f"{section}.{k}" for k in values))
    resolved = load_config(family, config_file, overrides).to_dict()
    changed, allowed = [], {}
    for key in given:
        section, _, name = key.partition(".")
        old, new = saved[section][name], resolved[section][name]
        if key in RESUMABLE:
            allowed[key] = new
        elif _plain(old) != _plain(new):
            changed.append(f"{key}: {_show(old)} in the run, {_show(new)} given")
    return changed, allowed


def _plain(value: Any) -> Any:
    return list(map(_plain, value)) if isinstance(value, (list, tuple)) else value


def _show(value: Any) -> str:
    return json.dumps(_plain(value))


def cmd_train(args: argparse.Namespace) -> int:
    from genlab.config import from_dict, load_config
    from genlab.train.loop import train

    overrides = {key: getattr(args, dest) for dest, key in TRAIN_FLAGS.items() if getattr(args, dest) is not None}
    overrides.update(parse_set(args.set))
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").is_file():
            raise GenlabError(f"--resume {run_dir}: no config.json there; pass the folder of a genlab training run")
        saved = from_dict(json.loads((run_dir / "config.json").read_text())).to_dict()
        if saved["family"] != args.family:
            raise GenlabError(f"{run_dir} is a {saved['family']} run; resume it with `genlab train {saved['family']} --resume`")
        if args.out and Path(args.out).resolve() != run_dir.resolve():
            raise GenlabError(f"--out {args.out} is not the resumed run {run_dir}; a resumed run stays in its folder: drop --out")
        changed, allowed = resume_changes(args.family, saved, args.config, overrides)
        if changed:
            raise GenlabError(
                f"cannot change {'; '.join(changed)} when resuming; only {', '.join(sorted(RESUMABLE))} may differ"
            )
        # Stop conditions belong to an invocation: the resumed run gets only the ones given now.
        saved["train"].update(max_steps=None, time_budget=None)
        sections = {k: v for k, v in saved.items() if k != "family"}
        config = load_config(args.family, None, {f"{s}.{k}": v for s, d in sections.items() for k, v in d.items()} | allowed)
    else:
        config = load_config(args.family, args.config, overrides)
        run_dir = Path(args.out or f"runs/{args.family}-{time.strftime('%Y%m%d-%H%M%S')}")
        if (run_dir / "checkpoints").exists():
            raise GenlabError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    started = time.monotonic()
    result = train(config, run_dir, resume=bool(args.resume), quiet=args.quiet)
    wall = time.monotonic() - started
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return 130 if result.reason == "interrupted" else 0
    figures = ", ".join(f"{k}={v:.4g}" for k, v in result.last.items() if k != "images_per_s")
    figures = figures or f"nothing logged yet (train.log_every={config.train.log_every})"
    print(
        f"genlab: {config.family} stopped ({result.reason}) at step {result.step}, "
        f"epoch {result.epoch} after {wall:.0f}s; {figures}"
    )
    print(f"genlab: run folder {run_dir}  samples {run_dir / 'samples'}")
    return 130 if result.reason == "interrupted" else 0


def _output_size(state: dict[str, Any]) -> tuple[int, int] | None:
    size = state.get("original_size")
    return tuple(size) if size else None


@torch.no_grad()
def cmd_sample(args: argparse.Namespace) -> int:
    from genlab.data import crop_to
    from genlab.io import save_images

    if args.n <= 0:
        raise GenlabError(f"--n must be >= 1, got {args.n}")
    from genlab.runs import load_run

    config, model, state = load_run(args.run, args.device)
    if args.stage2:
        from genlab.two_stage import load_stage2

        model = load_stage2(args.run, model)
    labels, nrow = sample_labels(args.class_, config, args.n)
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(args.seed)
    chunks = []
    for i in range(0, args.n, 1024):
        kw = {} if labels is None else {"labels": labels[i : i + 1024].to(device)}
        chunks.append(model.sample(min(1024, args.n - i), generator=gen, **kw))
    images = torch.cat(chunks)
    size = _output_size(state)
    images = crop_to(images, size) if size else images
    out = save_images(args.out, images, nrow=nrow, scale=args.scale)
    what = {None: "", "all": " of every class (a row each)"}.get(args.class_, f" of class {args.class_}")
    print(f"genlab: wrote {args.n} samples{what} {tuple(images.shape[1:])} to {out}")
    return 0


def sample_labels(wanted: str | None, config, n: int) -> tuple[torch.Tensor | None, int | None]:
    """(the class of each of n samples, the grid's row length) for --class K or --class all."""
    if wanted is None:
        return None, None
    if not is_conditional(config.family):
        raise GenlabError(f"--class needs a class-conditional run (cgan, cvae); this is a {config.family} run: drop --class")
    classes = config.model.num_classes
    if wanted == "all":
        per_class = max(1, n // classes)
        if n % classes:
            raise GenlabError(f"--class all draws a row per class: make --n a multiple of {classes} (e.g. {classes * per_class})")
        return torch.arange(classes).repeat_interleave(per_class), per_class
    if not wanted.isdigit() or int(wanted) >= classes:
        raise GenlabError(f"--class must be a class in 0..{classes - 1} or 'all', got {wanted}")
    return torch.full((n,), int(wanted)), None


def _test_images(config, n: int, device: torch.device) -> torch.Tensor:
    from genlab.runs import test_split

    return test_split(config).images[:n].to(device)


def _vae_run(args: argparse.Namespace):
    from genlab.runs import load_run

    config, model, state = load_run(args.run, args.device)
    if kind(config.family) != "vae":
        raise GenlabError(f"{args.run} is a {config.family} run; this command needs a VAE run")
    if is_conditional(config.family):
        raise GenlabError(f"{args.run} is a conditional VAE; this command does not take labels yet (sample --class works)")
    return config, model, state


@torch.no_grad()
def cmd_reconstruct(args: argparse.Namespace) -> int:
    from genlab.data import crop_to
    from genlab.io import save_images
    from genlab.train.vae import beside_reconstructions

    config, model, state = _vae_run(args)
    device = next(model.parameters()).device
    pairs = beside_reconstructions(model, _test_images(config, args.n, device), config.data.binarize)
    size = _output_size(state)
    out = save_images(args.out, crop_to(pairs, size) if size else pairs, nrow=8, scale=args.scale)
    print(f"genlab: wrote {len(pairs) // 2} test images beside their reconstructions to {out}")
    return 0


@torch.no_grad()
def cmd_interpolate(args: argparse.Namespace) -> int:
    from genlab.data import crop_to
    from genlab.io import save_images
    from genlab.train.vae import prepare

    config, model, state = _vae_run(args)
    device = next(model.parameters()).device
    x = prepare(model, _test_images(config, 2 * args.pairs, device), config.data.binarize)
    if len(x) < 2:
        raise GenlabError("interpolation needs at least two test images")
    mu, _ = model.encode(x)
    a, b = mu[0::2], mu[1::2]
    n = min(len(a), len(b))
    w = torch.linspace(0, 1, args.steps, device=device).view(1, -1, 1)
    z = (1 - w) * a[:n, None] + w * b[:n, None]  # (pairs, steps, latent): straight lines between posterior means
    images = model.to_image(model.decode(z.flatten(0, 1)))
    size = _output_size(state)
    out = save_images(args.out, crop_to(images, size) if size else images, nrow=args.steps, scale=args.scale)
    print(f"genlab: wrote {n} interpolations of {args.steps} steps to {out}")
    return 0


@torch.no_grad()
def cmd_traverse(args: argparse.Namespace) -> int:
    from genlab.data import crop_to
    from genlab.io import save_gif, save_images
    from genlab.runs import load_run
    from genlab.traversal import dim_inactive, traverse

    if args.steps < 2 or args.range <= 0 or (args.dims is not None and args.dims < 1):
        raise GenlabError("--steps must be >= 2, --range > 0 and --dims >= 1")
    suffix = Path(args.out).suffix.lower()
    if suffix not in (".png", ".gif", ".npy"):
        raise GenlabError(f"cannot write {Path(args.out).name}: the output must end in .png, .gif or .npy")
    config, model, state = load_run(args.run, args.device)
    if is_conditional(config.family):
        raise GenlabError(f"{args.run} is a conditional run; traverse does not take labels yet (sample --class works)")
    reference = _test_images(config, 500, torch.device("cpu")) if kind(config.family) == "vae" else None
    if reference is not None and not 0 <= args.index < len(reference):
        raise GenlabError(f"--index must be in [0, {len(reference) - 1}], got {args.index}")
    family = kind(config.family)
    t = traverse(model, family, reference, config.data.binarize, args.index, args.dims, args.range, args.steps, args.seed)
    size = _output_size(state)
    images = dim_inactive(t)
    images = crop_to(images, size) if size else images
    if suffix == ".gif":
        grid = images.view(len(t.dims), t.steps, *images.shape[1:])
        frames = [grid[:, s] for s in (*range(t.steps), *range(t.steps - 2, 0, -1))]  # there and back
        out = save_gif(args.out, frames, nrow=len(t.dims), scale=args.scale)
    else:
        out = save_images(args.out, images, nrow=t.steps, scale=args.scale)
    if kind(config.family) == "vae":
        rows = ", ".join(f"z{d} {k:.2f}" + ("" if a else " (inactive)") for d, k, a in zip(t.dims, t.kl, t.active))
        print(f"genlab: rows by KL (nats): {rows}")
    print(f"genlab: wrote a traversal of {len(t.dims)} dimensions over [-{args.range}, {args.range}] to {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from genlab.eval.evaluate import evaluate, format_table
    from genlab.io import atomic_write_bytes
    from genlab.runs import load_run, splits

    for name in ("n", "k", "nll_n"):
        if getattr(args, name) <= 0:
            raise GenlabError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    config, model, state = load_run(args.run, args.device)
    train, test = splits(config)
    factor_data = train if getattr(train, "factors", None) is not None else None
    if kind(config.family) == "vae" and not is_conditional(config.family) and factor_data is None:
        print(f"genlab: {config.data.dataset} has no known factors: disentanglement metrics are the unsupervised part only")
    args_ = (args.n, args.seed, args.nll_n, args.k, args.inception, factor_data, args.sampled)
    sampler = None
    if args.stage2:
        from genlab.two_stage import load_stage2

        sampler = load_stage2(args.run, model)
    result = evaluate(config, model, state, test, *args_, sampler=sampler)
    result["run"] = str(args.run)
    print(format_table(result))
    text = (json.dumps(result, indent=2) + "\n").encode()
    run = Path(args.run)
    if (run / "config.json").exists():  # a run folder: keep the result with the run, for its report
        name = f"eval-step{result['run_step']}-n{args.n}-seed{args.seed}{'-stage2' if args.stage2 else ''}.json"
        kept = atomic_write_bytes(run / "evals" / name, text)
        print(f"genlab: wrote {kept}")
    if args.json:
        atomic_write_bytes(args.json, text)
        print(f"genlab: wrote {args.json}")
    return 0


def cmd_stage2(args: argparse.Namespace) -> int:
    from genlab.two_stage import fit_stage2

    if args.epochs < 1:
        raise GenlabError(f"--epochs must be >= 1, got {args.epochs}")
    info = fit_stage2(args.run, epochs=args.epochs, seed=args.seed)
    last = info["last"]
    print(
        f"genlab: second stage fitted on {info['codes']:,} codes in {info['seconds']:.0f} s: -ELBO {last['loss']:.2f} nats, "
        f"gamma {last['gamma']:.3g}; sample with: genlab sample {args.run} --stage2"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from genlab.report import write_report

    out = Path(args.out or Path(args.runs[0]) / "report.html")
    write_report(args.runs, out)
    print(f"genlab: wrote {out} ({out.stat().st_size / 1e6:.1f} MB); open it in a browser, offline")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from genlab.explore import bench, load_explorer, make_server
    from genlab.machine import cpu_summary

    explorer = load_explorer(args.run, args.device)
    try:
        server = make_server(explorer, args.run, args.host, args.port)
    except OSError as e:
        raise GenlabError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); pick another --port") from None
    if args.bench:
        r = bench(server, explorer, args.bench)
        shape = "x".join(map(str, explorer.original_size))
        print(f"genlab: decode over HTTP, {shape} images, {r['n']} requests: p50 {r['p50_ms']:.1f} ms, "
              f"p95 {r['p95_ms']:.1f} ms, max {r['max_ms']:.1f} ms on {cpu_summary()}")  # fmt: skip
        return 0
    host, port = server.server_address[:2]
    print(f"genlab: exploring {args.run} at http://{host}:{port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from genlab.sweep import parse_values, run_sweep

    key, values = parse_values(args.values)
    if args.seeds < 1:
        raise GenlabError(f"--seeds must be >= 1, got {args.seeds}")
    overrides = parse_set(args.set)
    if args.data:
        overrides["data.dataset"] = args.data
    out = Path(args.out or f"runs/sweep-{key}-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = run_sweep(args.family, key, values, list(range(args.seeds)), out, args.config, overrides, args.time_budget)
    for row in summary["by_value"]:
        names = [n for n in ("neg_elbo", "recon", "mig", "factor_vae_score") if n in row]
        figures = ", ".join(f"{n} {row[n]:.3f} ± {row[n + '_std']:.3f}" for n in names)
        print(f"{key}={row['value']}: {figures}")
    print(f"genlab: wrote {out / 'sweep.json'} and {out / 'sweep.png'}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from genlab.config import DataConfig
    from genlab.data import load_dataset
    from genlab.eval.evaluate import calibrate
    from genlab.io import atomic_write_bytes

    train, test = load_dataset(DataConfig(dataset=args.data, root=args.root), 1, 28)
    result = calibrate(train, test, args.n, args.seed)
    if "skipped" in result:
        raise GenlabError(result["skipped"])
    print(f"{'sample set':<24} {'FD':>9} {'precision':>9} {'recall':>7} {'density':>8} {'coverage':>8} {'IS-style':>9}")
    for name, r in result["rows"].items():
        print(
            f"{name:<24} {r['fd']:9.3f} {r['precision']:9.3f} {r['recall']:7.3f} {r['density']:8.3f} "
            f"{r['coverage']:8.3f} {r['is_mean']:9.3f}"
        )
    print(f"(against the {result['reference']})")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from genlab.bench import format_bench, run_bench
    from genlab.io import atomic_write_bytes
    from genlab.runs import resolve_device

    results = []
    for family in args.families or ["vae", "gan"]:
        device = resolve_device(args.device)
        result = run_bench(
            family,
            device,
            args.batch_size,
            args.steps,
            args.repeats,
            args.channels_last,
            args.compile,
            {"auto": "auto", "true": True, "false": False}[args.fuse_norm_act],
        )
        print(format_bench(result))
        results.append(result)
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(results, indent=2) + "\n").encode())
        print(f"genlab: wrote {args.json}")
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    from genlab.config import DataConfig
    from genlab.data import load_dataset
    from genlab.eval.classifier import train_classifier

    data = DataConfig(dataset=args.data, root=args.root)
    train, test = load_dataset(data, 1, 28)
    if train.labels is None or test.labels is None:
        raise GenlabError(f"{args.data}: the classifier needs labelled IDX data (train and t10k label files)")
    meta = train_classifier(
        train.images, train.labels, test.images, test.labels, args.out, args.data, args.epochs, seed=args.seed
    )
    print(f"genlab: classifier test accuracy {meta['test_accuracy']}, sha256 {meta['sha256']}, written to {args.out}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def version_line() -> str:
    """genlab's version, torch's, and the device a run would use: what a bug report needs."""
    import platform

    from genlab import __version__
    from genlab.machine import cpu_summary

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s))"
    else:
        device = f"cpu ({cpu_summary()})"
    return f"genlab {__version__}, torch {torch.__version__}, python {platform.python_version()}, device {device}"


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print genlab's, torch's and python's versions and the device")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genlab", description="VAE / beta-VAE and vanilla GAN of the course notes.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model family on a data set")
    p.add_argument("family", choices=list(MODELS))
    p.add_argument("--config", help="TOML or YAML file with [model] [loss] [train] [data] sections")
    p.add_argument("--data", help="built-in data set (fashion-mnist, mnist) or a folder of images or IDX files")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="stop at this step of the whole run (resumes included)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop cleanly, checkpointed, after this long")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--out", help="run folder (default runs/FAMILY-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN", help="continue this run folder where it stopped")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="any config key")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    def run_command(name: str, help: str, func, out_help: str = "FILE.png (grid) or FILE.npy (N,C,H,W floats in [-1, 1])"):
        p = sub.add_parser(name, help=help)
        p.add_argument("run", help="a run folder (or one of its checkpoint folders)")
        p.add_argument("--out", required=True, help=out_help)
        p.add_argument("--device", default="auto")
        p.add_argument(
            "--scale", type=_positive_int, help="PNG: enlarge the grid this many times (default: to at least 512 pixels)"
        )
        p.set_defaults(func=func)
        return p

    p = run_command("sample", "draw samples from a trained run", cmd_sample)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--class", dest="class_", metavar="K|all", help="conditional runs: samples of class K, or a row per class")
    p.add_argument("--stage2", action="store_true", help="VAE: sample through the 2-Stage VAE's second stage (genlab stage2)")
    p.add_argument("--seed", type=int, default=0)
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

    p = sub.add_parser("eval", help="metrics of a trained run: FD, precision/recall, IS-style score, NLL, D health")
    p.add_argument("run")
    p.add_argument("--n", type=int, default=10_000, help="samples (and test images) for the sample-quality metrics")
    p.add_argument("--k", type=int, default=1000, help="VAE: importance samples per image for -log p(x)")
    p.add_argument("--nll-n", type=int, default=1000, help="VAE: test images for the likelihoods")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.add_argument("--inception", action="store_true", help="also the standard Inception FID (needs pytorch-fid)")
    p.add_argument("--sampled", action="store_true", help="VAE: factor metrics on sampled z, not the posterior mean")
    p.add_argument("--stage2", action="store_true", help="VAE: samples through the 2-Stage VAE's second stage (genlab stage2)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("stage2", help="fit the 2-Stage VAE's second stage (Dai & Wipf 2019) on a trained VAE run")
    p.add_argument("run")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_stage2)

    p = sub.add_parser("report", help="one self-contained HTML page of one or more runs (opens offline)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or sweep folders); several are compared")
    p.add_argument("--out", help="HTML file to write (default RUN/report.html of the first run)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("explore", help="a latent explorer in the browser, served from this machine")
    p.add_argument("run")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bench", type=int, metavar="N", help="time N decodes over HTTP instead of serving, then exit")
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("sweep", help="train one config key over several values and seeds; quality vs disentanglement")
    p.add_argument("family", choices=["vae"])
    p.add_argument("--values", required=True, metavar="SECTION.KEY=V1,V2,...", help="e.g. loss.beta=1,2,4,8,16")
    p.add_argument("--config", help="TOML or YAML config every run starts from")
    p.add_argument("--data", help="data set (shapes, dsprites, fashion-mnist, ...); factor metrics need shapes or dsprites")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="training time of each run")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 for every value")
    p.add_argument("--out", help="sweep folder (default runs/sweep-KEY-DATE); an interrupted sweep continues in it")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="any config key, for every run")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("calibrate", help="the metrics' scale: real data, noise and a pixel Gaussian vs the test set")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--root")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("bench", help="images/s of genlab's paths vs a plain PyTorch loop of the same model")
    p.add_argument("families", nargs="*", choices=list(MODELS), metavar="{" + ",".join(MODELS) + "}")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="VAE: NHWC on genlab's side (training default)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile genlab's side (compiled in the warm-up)")
    p.add_argument(
        "--fuse-norm-act",
        choices=("auto", "true", "false"),
        default="auto",
        help="VAE: train.fuse_norm_act for genlab's train step (compiled BatchNorm + LeakyReLU); "
        "when it fuses, an unfused row is added",
    )
    p.add_argument("--json")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("classifier", help="train the feature classifier that the sample-quality metrics use")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--root", help="folder with the IDX files")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="safetensors file to write")
    p.set_defaults(func=cmd_classifier)
    return parser


def main(argv: list[str] | None = None) -> int:
    from genlab.allocator import tune_cpu_allocator

    args = build_parser().parse_args(argv)
    tune_cpu_allocator()
    try:
        return args.func(args)
    except GenlabError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system said no (permissions, full disk, a file where a folder should be)
        where = f"{e.filename}: " if e.filename else ""
        print(f"genlab: error: {where}{e.strerror or e}; check the path and free space", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
