"""genlab's command line: each command parses its flags, calls the library, and prints one line of result.

Commands by file: train.py (train, sweep), pictures.py (sample, reconstruct, interpolate, traverse),
evaluate.py (eval, stage2, calibrate, classifier, bench), web.py (report, explore).
"""

from __future__ import annotations

import argparse
import sys

from genlab.errors import GenlabError

COMMANDS = ("train", "pictures", "evaluate", "web")  # the modules of genlab.cli, in the order of --help


def version_line() -> str:
    """genlab's version, torch's, and the device a run would use: what a bug report needs."""
    import platform

    import torch

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


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from importlib import import_module

    from genlab.models import FAMILIES

    names = ", ".join(FAMILIES)
    parser = argparse.ArgumentParser(prog="genlab", description=f"Train, sample and evaluate image generative models: {names}.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        import_module(f"genlab.cli.{module}").add_commands(sub)
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
