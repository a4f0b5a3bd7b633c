"""`python -m loadtests run|bench|tune|soak|pool`: load tests, benchmark, tuning, soak, pool.

Load settings a command does not set come from `loadtests/locust.conf`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import types
import typing
from dataclasses import fields
from pathlib import Path

from loadtests import bench, pool, runner, soak, tune


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per job; the options of a dataclass come from its fields (`option`)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__,
                                     formatter_class=fmt)  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, *owners) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=fmt)
        p.add_argument("--model", type=Path, help="Model the image pool is checked with "
                       "(default: loadtests.pool.default_model()).")  # fmt: skip
        p.add_argument("--source", choices=pool.SOURCES, default="mix", help="What the image "
                       "pool holds: samples.mix's realistic mix, or MNIST PNGs only.")  # fmt: skip
        if name != "pool":
            p.add_argument("--out", type=Path, help="Result folder (default: a new one in "
                           "loadtests/results/).")  # fmt: skip
        for owner in owners:
            hints = typing.get_type_hints(owner)
            for f in fields(owner):
                if "help" not in f.metadata:
                    continue
                kind = hints[f.name]  # `X | None` offers an X
                kind = typing.get_args(kind)[0] if isinstance(kind, types.UnionType) else kind
                kw = ({"action": "store_true"} if kind is bool
                      else {"action": "append"} if kind == list[str]
                      else {"type": ints if kind == list[int] else kind})  # fmt: skip
                default = f.default_factory() if callable(f.default_factory) else f.default
                p.add_argument(*f.metadata["flags"] or [f"--{f.name.replace('_', '-')}"],
                               dest=f.name, default=default, help=f.metadata["help"], **kw)
        return p

    p = command("run", "Headless Locust run with the SLO gate.", runner.LoadSpec)
    p.add_argument("--pool", type=Path, help="Image pool file (default: the model's cached one).")
    p.add_argument("--warmup-requests", type=int, default=200, help="Checked warm-up requests.")
    for name, help, owner in (
        ("bench", "In-process ceiling vs stock vs tuned TorchServe.", bench.Targets),
        ("tune", "Sweep batch size, delay, workers, threads.", tune.Space),
    ):
        p = command(name, help, owner)
        p.add_argument("--processes", type=int, help="Locust worker processes (default: auto).")
        p.add_argument("--users", type=int, default=64, help="Closed-loop users per run.")
        p.add_argument("--run-time", default="15s", help="Measured duration of each run.")
    p = sub.choices["bench"]
    p.add_argument("--ceiling-seconds", type=float, default=5.0, help="In-process run length.")
    p.add_argument("--ceiling-threads", type=int, default=1, help="Torch threads in-process.")
    command("soak", "Constant load: failures, RSS growth, restarts, latency drift.",
            soak.SoakOptions)  # fmt: skip
    p = command("pool", "Build (or reuse) the image pool; prints its path.")
    p.add_argument("--size", type=int, default=pool.DEFAULT_POOL_SIZE, help="Digits in the pool.")
    p.add_argument("--rebuild", action="store_true", help="Rebuild even if cached.")
    return parser


def ints(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]."""
    return [int(x) for x in text.split(",") if x.strip()]


def picked(cls, args):
    """An instance of dataclass `cls` from the parsed options of its fields' names."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m loadtests`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    # SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the `finally` blocks stop the
    # TorchServe and Locust processes this command started instead of orphaning them.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    if args.command == "pool":
        print(pool.ensure_pool(args.model, size=args.size, rebuild=args.rebuild,
                               source=args.source))  # fmt: skip
        return 0
    out = args.out or runner.timestamped_dir("step" if getattr(args, "step", False)
                                             else args.command)  # fmt: skip
    if args.command in ("bench", "tune"):  # closed-loop users against a local server
        processes = runner.auto_processes(False) if args.processes is None else args.processes
        closed_loop = runner.LoadSpec(users=args.users, spawn_rate=float(args.users),
                                      run_time=args.run_time, processes=processes)
    if args.command == "run":
        result = runner.load_test(picked(runner.LoadSpec, args), out, args.model,
                                  args.pool or pool.ensure_pool(args.model, source=args.source),
                                  args.warmup_requests)  # fmt: skip
        print(runner.format_result(result))
        code = result.exit_code
    elif args.command == "bench":
        report = bench.benchmark(out, picked(bench.Targets, args), closed_loop,
                                 args.ceiling_seconds, args.ceiling_threads, args.model,
                                 args.source)  # fmt: skip
        print(json.dumps(report), bench.markdown(report), sep="\n\n")
        code = 0 if all(x["met"] for x in report["targets"]) else 1
    elif args.command == "tune":
        table, winner = tune.tune(out, picked(tune.Space, args), closed_loop,
                                  pool.ensure_pool(args.model, source=args.source),
                                  "`python -m loadtests " + " ".join(sys.argv[1:]) + "`")
        print(table)
        code = 0 if winner else 1
    else:
        report = soak.soak(out, picked(soak.SoakOptions, args), args.model, args.source)
        print(json.dumps({k: v for k, v in report.items() if k != "rss_samples"}, indent=1))
        code = 0 if report["passed"] else 1
    print(f"results: {out}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
