"""genlab train, genlab sweep."""

from __future__ import annotations

import argparse
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError, GenlabError

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
    """--set section.key=value items as {"section.key": value}, the value read as TOML."""
    from genlab.configfile import parse_value

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise ConfigError(f"--set {item!r}: write it as section.key=value, e.g. --set model.latent_dim=32")
        out[key.strip()] = parse_value(value.strip())
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from genlab.configfile import load_config
    from genlab.models import FAMILIES
    from genlab.runlock import run_lock
    from genlab.train.guards import check_new_run_folder
    from genlab.train.loop import train
    from genlab.train.resume import resumed_config

    if args.family is not None and args.family not in FAMILIES:
        raise GenlabError(f"genlab train: no model family {args.family!r}; choose from {', '.join(FAMILIES)}")
    overrides = {key: getattr(args, dest) for dest, key in TRAIN_FLAGS.items() if getattr(args, dest) is not None}
    overrides.update(parse_set(args.set))
    if args.resume:
        run_dir = Path(args.resume)
        if args.out and Path(args.out).resolve() != run_dir.resolve():
            raise GenlabError(f"--out {args.out} is not the resumed run {run_dir}; a resumed run stays in its folder: drop --out")
        config = resumed_config(run_dir, args.family, args.config, overrides)
    elif args.family is None:
        raise GenlabError("genlab train: name a model family (e.g. `genlab train vae`), or continue a run with --resume RUN")
    else:
        config = load_config(args.family, args.config, overrides)
        run_dir = Path(args.out or f"runs/{args.family}-{time.strftime('%Y%m%d-%H%M%S')}")
        check_new_run_folder(run_dir)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 writes (and locks) the run folder
    verb = f"--resume {run_dir}" if args.resume else f"--out {run_dir}"
    with run_lock(run_dir, f"genlab train {config.family} {verb}") if main_rank else nullcontext():
        if not args.resume and (run_dir / "checkpoints").exists():
            raise GenlabError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
        started = time.monotonic()
        result = train(config, run_dir, resume=bool(args.resume), quiet=args.quiet)
        wall = time.monotonic() - started
        if not main_rank:  # rank 0 speaks for the run
            return 130 if result.reason == "interrupted" else 0
        if config.train.report:
            from genlab.report import write_run_report

            write_run_report(run_dir)
    figures = ", ".join(f"{k}={v:.4g}" for k, v in result.last.items() if k != "images_per_s")
    figures = figures or f"nothing logged yet (train.log_every={config.train.log_every})"
    print(f"genlab: {config.family} stopped ({result.reason}) at step {result.step}, "
          f"epoch {result.epoch} after {wall:.0f}s; {figures}")  # fmt: skip
    print(f"genlab: run folder {run_dir}  samples {run_dir / 'samples'}")
    return 130 if result.reason == "interrupted" else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from genlab.report import write_run_report
    from genlab.runlock import run_lock
    from genlab.sweep import check_sweep_folder, parse_values, run_sweep

    key, values = parse_values(args.values)
    if args.seeds < 1:
        raise GenlabError(f"--seeds must be >= 1, got {args.seeds}")
    overrides = parse_set(args.set)
    if args.data:
        overrides["data.dataset"] = args.data
    out = Path(args.out or f"runs/sweep-{key}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_sweep_folder(out)
    with run_lock(out, f"genlab sweep {args.family} --values {args.values} --out {out}"):
        summary = run_sweep(
            args.family, key, values, list(range(args.seeds)), out, args.config, overrides, args.time_budget, write_run_report
        )
    for row in summary["by_value"]:
        names = [n for n in ("neg_elbo", "kl", "mig", "factor_vae_score") if n in row]
        figures = ", ".join(f"{n} median {row[n + '_median']:.3f} ({row['n_seeds']} seeds)" for n in names)
        print(f"{key}={row['value']}: {figures}")
    print(f"genlab: wrote {out / 'sweep.json'}, {out / 'sweep.md'} and {out / 'sweep.png'}")
    return 0


def add_commands(sub) -> None:
    from genlab.models import FAMILIES

    p = sub.add_parser("train", help="train a model family on a data set")
    # No argparse choices: with the family optional, a misspelt flag's value would be read as the family and
    # the error would name the value instead of the flag; cmd_train checks the name after parsing.
    p.add_argument("family", nargs="?", help=f"{', '.join(FAMILIES)} (a resumed run knows its own)")
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

    vaes = [name for name, record in FAMILIES.items() if record.kind == "vae" and not record.conditional]
    p = sub.add_parser("sweep", help="train one config key over several values and seeds; quality vs disentanglement")
    p.add_argument("family", choices=vaes)
    p.add_argument("--values", required=True, metavar="SECTION.KEY=V1,V2,...", help="e.g. loss.beta=1,2,4,8,16")
    p.add_argument("--config", help="TOML or YAML config every run starts from")
    p.add_argument("--data", help="data set (shapes, dsprites, fashion-mnist, ...); factor metrics need shapes or dsprites")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="training time of each run")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 for every value (default 3: medians, not one draw)")
    p.add_argument("--out", help="sweep folder (default runs/sweep-KEY-DATE); an interrupted sweep continues in it")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="any config key, for every run")
    p.set_defaults(func=cmd_sweep)
