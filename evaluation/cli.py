"""`python -m evaluation`: evaluation commands (today: `realworld`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from evaluation import realworld as job
from samples import realworld


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults shown in --help."""
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    rw = commands.add_parser(
        "realworld",
        help="score the real-world set (fonts, strokes; scans, photos, drawings) in-process and "
        "over HTTP",
        description=job.__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    rw.add_argument("--model", type=Path, default=job.Options.model, help="TorchScript artifact")
    rw.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a second artifact scored in the same run, side by side (e.g. the previous model)",
    )
    rw.add_argument(
        "--half",
        dest="halves",
        action="append",
        choices=realworld.HALVES,
        default=None,
        help="half to score, repeatable (default: both)",
    )
    rw.add_argument(
        "--subset",
        type=int,
        default=None,
        help="score only the first N images of each half (a balanced prefix; for CI)",
    )
    rw.add_argument("--seed", type=int, default=realworld.DEFAULT_SEED, help="the set's seed")
    rw.add_argument("--no-http", dest="http", action="store_false", help="in-process only")
    rw.add_argument(
        "--no-mnist", dest="mnist", action="store_false", help="skip MNIST test calibration"
    )
    rw.add_argument("--out", type=Path, default=job.DEFAULT_OUT, help="report folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the tables and returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("evaluation").setLevel(logging.INFO)
    logging.getLogger("samples").setLevel(logging.INFO)
    if args.subset is not None and args.subset <= 0:
        print("error: --subset must be positive", file=sys.stderr)
        return 2
    for path in filter(None, (args.model, args.baseline)):
        if not path.is_file():
            print(f"error: {path} not found; train first (`make train`)", file=sys.stderr)
            return 2
    options = job.Options(
        model=args.model,
        baseline=args.baseline,
        halves=tuple(args.halves or realworld.HALVES),
        count=args.subset or realworld.DEFAULT_COUNT,
        seed=args.seed,
        http=args.http,
        mnist=args.mnist,
        out=args.out,
    )
    report = job.run(options)
    print(job.tables(report))
    print(f"\nreport: {options.out / 'realworld.json'} (+ confusion_*.png, reliability_*.png)")
    return 0
