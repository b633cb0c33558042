"""genlab eval, stage2, calibrate, classifier, bench: figures of runs, of the metrics' scale, and of speed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genlab.cli import positive_int
from genlab.cli.pictures import add_sampling_flags
from genlab.errors import GenlabError


def cmd_eval(args: argparse.Namespace) -> int:
    from genlab.data.factors import FACTOR_SETS, open_factor_stream
    from genlab.eval.evaluate import evaluate, stderr_progress
    from genlab.eval.table import format_table
    from genlab.io import atomic_write_bytes
    from genlab.models import family
    from genlab.runs import load_run, load_stage2, model_shape, splits
    from genlab.sampling import check_temperature

    for name in ("n", "k", "nll_n"):
        if getattr(args, name) <= 0:
            raise GenlabError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.chen_samples < 0:
        raise GenlabError(f"--chen-samples must be >= 0 (0 skips Chen et al.'s MIG), got {args.chen_samples}")
    check_temperature(args.temperature)
    config, model, state = load_run(args.run, args.device, args.weights)
    if args.bn == "standing":
        from genlab.sampling import standing_statistics

        standing_statistics(model, seed=args.seed)
    record = family(config.family)
    if config.data.dataset in FACTOR_SETS:
        # Read once, in chunks, never all at once: the whole set at 64x64 is 3 GB of uint8.
        d = config.data
        factor_data = open_factor_stream(d.dataset, d.root, d.download, d.image_size)
        test = factor_data.validation(*model_shape(config))
    else:
        train, test = splits(config)
        factor_data = train if getattr(train, "factors", None) is not None else None
    if record.kind == "vae" and not record.conditional and factor_data is None:
        print(f"genlab: {config.data.dataset} has no known factors: disentanglement metrics are the unsupervised part only")
    sampler = load_stage2(args.run, config, model) if args.stage2 else None
    result = evaluate(config, model, state, test, args.n, args.seed, args.nll_n, args.k, args.inception, factor_data,
                      args.sampled, sampler=sampler, log=stderr_progress, chen_samples=args.chen_samples,
                      temperature=args.temperature)  # fmt: skip
    result["run"] = str(args.run)
    result["weights"], result["batchnorm"] = state["weights"], args.bn
    print(format_table(result))
    text = (json.dumps(result, indent=2) + "\n").encode()
    run = Path(args.run)
    if (run / "config.json").exists():  # a run folder: keep the result with the run, for its report
        hot = "" if args.temperature == 1 else f"-T{args.temperature:g}"
        name = f"eval-step{result['run_step']}-n{args.n}-seed{args.seed}{'-stage2' if args.stage2 else ''}{hot}.json"
        kept = atomic_write_bytes(run / "evals" / name, text)
        print(f"genlab: wrote {kept}")
    if args.json:
        atomic_write_bytes(args.json, text)
        print(f"genlab: wrote {args.json}")
    return 0


def cmd_stage2(args: argparse.Namespace) -> int:
    from genlab.train.stage2 import fit_stage2

    if args.epochs < 1:
        raise GenlabError(f"--epochs must be >= 1, got {args.epochs}")
    from genlab.eval.evaluate import stderr_progress

    info = fit_stage2(args.run, epochs=args.epochs, seed=args.seed, log=stderr_progress)
    last = info["last"]
    print(f"genlab: second stage fitted on {info['codes']:,} codes in {info['seconds']:.0f} s: -ELBO {last['loss']:.2f} nats, "
          f"gamma {last['gamma']:.3g}; sample with: genlab sample {args.run} --stage2")  # fmt: skip
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from genlab.config import DataConfig
    from genlab.data import load_dataset
    from genlab.eval.evaluate import calibrate, stderr_progress
    from genlab.io import atomic_write_bytes

    train, test = load_dataset(DataConfig(dataset=args.data, root=args.root), 1, 28)
    result = calibrate(train, test, args.n, args.seed, log=stderr_progress)
    if "skipped" in result:
        raise GenlabError(result["skipped"])
    print(f"{'sample set':<24} {'FD':>9} {'precision':>9} {'recall':>7} {'density':>8} {'coverage':>8} {'IS-style':>9}")
    for name, r in result["rows"].items():
        print(f"{name:<24} {r['fd']:9.3f} {r['precision']:9.3f} {r['recall']:7.3f} {r['density']:8.3f} "
              f"{r['coverage']:8.3f} {r['is_mean']:9.3f}")  # fmt: skip
    print(f"(against the {result['reference']})")
    if "test_accuracy" in result:
        print(
            f"conditional accuracy of real images with their labels: train subset "
            f"{result['rows']['train subset (floor)'].get('conditional_accuracy', float('nan')):.4f}, "
            f"test images {result['test_accuracy']:.4f} (what a generator of the data would score)"
        )
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode())
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    from genlab.config import DataConfig
    from genlab.data import load_dataset
    from genlab.eval.classifier import train_classifier
    from genlab.eval.evaluate import stderr_progress

    train, test = load_dataset(DataConfig(dataset=args.data, root=args.root), 1, 28)
    if train.labels is None or test.labels is None:
        raise GenlabError(f"{args.data}: the classifier needs labelled IDX data (train and t10k label files)")
    meta = train_classifier(
        train.images, train.labels, test.images, test.labels, args.out, args.data, args.epochs, seed=args.seed,
        log=stderr_progress,
    )  # fmt: skip
    print(f"genlab: classifier test accuracy {meta['test_accuracy']}, sha256 {meta['sha256']}, written to {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from genlab.bench import format_bench, run_bench
    from genlab.io import atomic_write_bytes
    from genlab.runs import resolve_device

    fuse = {"auto": "auto", "true": True, "false": False}[args.fuse_norm_act]
    results = []
    for name in args.families or ["vae", "gan"]:
        device = resolve_device(args.device)
        result = run_bench(
            name, device, args.batch_size, args.steps, args.repeats, args.channels_last, args.compile, fuse, args.eval_batch,
            args.memory_processes,
        )  # fmt: skip
        print(format_bench(result))
        results.append(result)
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(results, indent=2) + "\n").encode())
        print(f"genlab: wrote {args.json}")
    return 0


def add_commands(sub) -> None:
    from genlab.models import FAMILIES

    p = sub.add_parser("eval", help="metrics of a trained run: FD, precision/recall, IS-style score, NLL, D health")
    p.add_argument("run")
    p.add_argument("--n", type=int, default=10_000, help="samples (and test images) for the sample-quality metrics")
    p.add_argument("--k", type=int, default=1000, help="VAE: importance samples per image for -log p(x)")
    p.add_argument("--nll-n", type=int, default=1000, help="VAE: test images for the likelihoods")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.add_argument("--inception", action="store_true", help="also the standard Inception FID (needs pytorch-fid)")
    p.add_argument("--sampled", action="store_true", help="VAE: factor metrics on sampled z, not the posterior mean")
    add_sampling_flags(p)
    p.add_argument("--chen-samples", type=int, default=10_000,
                   help="factor data: samples per entropy in Chen et al.'s MIG (theirs: 10000; 0 skips it)")  # fmt: skip
    p.add_argument("--stage2", action="store_true", help="VAE: samples through the 2-Stage VAE's second stage (genlab stage2)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("stage2", help="fit the 2-Stage VAE's second stage (Dai & Wipf 2019) on a trained VAE run")
    p.add_argument("run")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_stage2)

    p = sub.add_parser("calibrate", help="the metrics' scale: real data, noise and a pixel Gaussian vs the test set")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--root")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("classifier", help="train the feature classifier that the sample-quality metrics use")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--root", help="folder with the IDX files")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="safetensors file to write")
    p.set_defaults(func=cmd_classifier)

    p = sub.add_parser("bench", help="images/s of genlab's paths vs the textbook loop of the same model")
    p.add_argument("families", nargs="*", choices=list(FAMILIES), metavar="{" + ",".join(FAMILIES) + "}")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--steps", type=positive_int, default=20, help="steps per timed repeat")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed repeats; the median is reported")
    p.add_argument("--eval-batch", type=positive_int, default=256, help="batch of the sampling and encode + decode workloads")
    p.add_argument("--memory-processes", type=positive_int, default=3,
                   help="fresh processes per path for the peak memory of the notes' models (the median is reported)")  # fmt: skip
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="VAE: NHWC on genlab's side (training default)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile genlab's side (compiled in the warm-up)")
    p.add_argument("--fuse-norm-act", choices=("auto", "true", "false"), default="auto",
                   help="VAE: train.fuse_norm_act for genlab's train step (compiled BatchNorm + LeakyReLU); "
                   "when it fuses, an unfused row is added")  # fmt: skip
    p.add_argument("--json")
    p.set_defaults(func=cmd_bench)
