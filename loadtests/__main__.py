"""`python -m loadtests run|bench|tune|pool|soak`: load tests, benchmarks, tuning, soak."""

from __future__ import annotations

import argparse
import logging
import signal
import sys


def build_parser() -> argparse.ArgumentParser:
    """The CLI with one subcommand per job."""
    from loadtests import bench, pool, runner, soak, tune

    parser = argparse.ArgumentParser(
        prog="python -m loadtests",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    run = sub.add_parser("run", help="Headless Locust run with the SLO gate.", formatter_class=fmt)
    runner.add_arguments(run)
    run.set_defaults(func=runner.command)
    b = sub.add_parser("bench", help="In-process ceiling vs stock vs tuned TorchServe.",
                       formatter_class=fmt)  # fmt: skip
    bench.add_arguments(b)
    b.set_defaults(func=bench.command)
    t = sub.add_parser("tune", help="Sweep batch size, delay, workers, threads.",
                       formatter_class=fmt)  # fmt: skip
    tune.add_arguments(t)
    t.set_defaults(func=tune.command)
    p = sub.add_parser("pool", help="Build (or rebuild) the image pool.", formatter_class=fmt)
    p.add_argument("--model", default=None, help="Model file (default: artifacts/lenet.pt).")
    p.add_argument("--size", type=int, default=pool.DEFAULT_POOL_SIZE, help="Digits in the pool.")
    p.add_argument("--rebuild", action="store_true", help="Rebuild even if cached.")
    p.set_defaults(func=lambda a: print(pool.ensure_pool(a.model, size=a.size, rebuild=a.rebuild)))
    s = sub.add_parser("soak", help="Constant half-capacity load: errors, RSS growth, drift.",
                       formatter_class=fmt)  # fmt: skip
    soak.add_arguments(s)
    s.set_defaults(func=soak.command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m loadtests`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the `finally` blocks stop the
    # TorchServe and the Locust processes this command started instead of orphaning them.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return int(args.func(args) or 0)


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    raise SystemExit(main())
