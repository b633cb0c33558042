"""genlab report, genlab explore: the run as a web page, offline or served from this machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genlab.errors import GenlabError


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
    if not server.local_only:
        exposed = f"--host {args.host} lets anyone who can reach this machine decode with {args.run}'s model"
        print(f"genlab: warning: {exposed} and download its test images, with no password; "
              "leave --host out to keep them on this machine", file=sys.stderr)  # fmt: skip
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


def add_commands(sub) -> None:
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
