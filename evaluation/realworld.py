"""`python -m evaluation realworld`: score models on the real-world set, in-process and over HTTP.

For each model (the one to evaluate and, optionally, a baseline to compare with in the same run)
and each half of `samples.realworld` (validation, test), the job reports accuracy overall and
per source, class, style and presentation, the most common confusions, and calibration: ECE
(15 bins) of the raw softmax and of the temperature-scaled one the artifact's metadata asks
for, and how many answers the `uncertain` threshold flags and how often the rest are wrong.
MNIST test is scored the same way when MNIST is on disk.

Two paths give the answers:
- in-process: `handler.preprocessing.preprocess` + the TorchScript model (`evaluation.scoring`);
- HTTP: the archived model behind a private TorchServe. Its digits must agree with in-process.

Writes `realworld.json`, a confusion-matrix PNG and a reliability-diagram PNG per model and half
into the output folder, and prints the tables. Only the validation half may inform choices.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation import metrics, scoring
from handler.artifact import load_torchscript
from handler.calibration import Calibration, apply_temperature
from handler.normalization import CLASS_NAMES, normalize
from samples import realworld
from train import calibrate, plots

logger = logging.getLogger(__name__)

DEFAULT_OUT = realworld.REPO_ROOT / "results" / "realworld"
GROUPS = ("source_kind", "source", "label", "style", "presentation")


@dataclass(frozen=True)
class Options:
    """What to score and where to write the report."""

    model: Path = realworld.REPO_ROOT / "artifacts" / "lenet.pt"
    baseline: Path | None = None
    halves: tuple[str, ...] = realworld.HALVES
    count: int = realworld.DEFAULT_COUNT
    seed: int = realworld.DEFAULT_SEED
    http: bool = True
    mnist: bool = True
    out: Path = DEFAULT_OUT
    models: dict[str, Path] = field(init=False)

    def __post_init__(self) -> None:
        models = {"model": Path(self.model)}
        if self.baseline is not None:
            models = {"baseline": Path(self.baseline), **models}
        object.__setattr__(self, "models", models)


def score(logits: np.ndarray, labels: np.ndarray, items: list[dict], cal: Calibration) -> dict:
    """Accuracy by group, confusions and calibration of one model on one set of images."""
    predicted = logits.argmax(axis=1)
    correct = predicted == labels
    raw = apply_temperature(logits, 1.0).max(axis=1)
    calibrated = cal.probabilities(logits).max(axis=1)
    report = {
        "n": int(len(labels)),
        "accuracy": metrics.accuracy(labels, predicted),
        "by": {
            key: metrics.by_group(labels, predicted, [str(item[key]) for item in items])
            for key in GROUPS
        },
        "top_confusions": metrics.top_confusions(plots.confusion_matrix(labels, predicted)),
        "calibration": calibrate.summary(logits, labels, cal.temperature, cal.uncertain_below)
        | {
            "temperature": cal.temperature,
            "reliability_uncalibrated": calibrate.reliability(raw, correct),
            "reliability_calibrated": calibrate.reliability(calibrated, correct),
        },
    }
    return report


def run(options: Options) -> dict:
    """Score every model on every half (and MNIST test); write the report; return it."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = {half: realworld.load(half, options.count, options.seed) for half in options.halves}
    inputs = {half: realworld.model_inputs(s) for half, s in sets.items()}
    mnist = _mnist_test() if options.mnist else None
    report: dict = {
        "set": {
            "seed": options.seed,
            "fingerprint": next(iter(sets.values())).fingerprint,
            "count": {half: len(s.items) for half, s in sets.items()},
        },
        "models": {},
        "results": {},
    }
    for name, path in options.models.items():
        _, metadata = load_torchscript(path)
        cal = Calibration.from_metadata(metadata)
        report["models"][name] = {
            "path": str(path),
            "version": metadata.get("version"),
            "git_commit": metadata.get("git_commit"),
            "created_at": metadata.get("created_at"),
            "calibration": metadata.get("calibration"),
        }
        results: dict = {}
        in_process: dict[str, np.ndarray] = {}
        for half, dataset in sets.items():
            in_process[half] = logits = scoring.logits_in_process(path, inputs[half])
            results[half] = {"in_process": score(logits, dataset.labels, dataset.items, cal)}
            _plots(out, name, half, dataset.labels, logits, results[half]["in_process"])
        if options.http:
            _score_http(path, sets, cal, in_process, results)
        if mnist is not None:
            images, labels = mnist
            logits = scoring.logits_in_process(path, normalize(images)[:, None])
            items = [{key: "mnist" for key in GROUPS} | {"label": int(y)} for y in labels]
            results["mnist_test"] = {"in_process": score(logits, labels, items, cal)}
        report["results"][name] = results
    (out / "realworld.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _score_http(
    path: Path, sets: dict, cal: Calibration, in_process: dict[str, np.ndarray], results: dict
) -> None:
    """Score all halves through one private TorchServe serving `path`.

    Also records how the served answers compare with the in-process ones: the share of equal
    digits (1.0 expected) and the largest difference of the calibrated probabilities.
    """
    uploads = [data for s in sets.values() for data in s.uploads]
    probabilities = scoring.probabilities_over_http(path, uploads)
    start = 0
    for half, dataset in sets.items():
        probs = probabilities[start : start + len(dataset.uploads)]
        start += len(dataset.uploads)
        logits = scoring.logits_from_probabilities(probs, cal.temperature)
        http = score(logits, dataset.labels, dataset.items, cal)
        local = in_process[half]
        http["agreement_with_in_process"] = {
            "same_digit": float((probs.argmax(axis=1) == local.argmax(axis=1)).mean()),
            "max_probability_difference": float(
                np.abs(probs - cal.probabilities(local)).max()
            ),
        }
        results[half]["http"] = http


def _plots(out: Path, name: str, half: str, labels, logits, result: dict) -> None:
    plots.confusion_matrix_plot(
        labels,
        logits.argmax(axis=1),
        CLASS_NAMES,
        out / f"confusion_{name}_{half}.png",
        title=f"real-world {half}, {name}",
    )
    cal = result["calibration"]
    curves = {
        f"softmax, ECE {100 * cal['ece_uncalibrated']:.2f} %": cal["reliability_uncalibrated"],
    }
    if cal["temperature"] != 1.0:
        label = f"T = {cal['temperature']:.3f}, ECE {100 * cal['ece_calibrated']:.2f} %"
        curves[label] = cal["reliability_calibrated"]
    plots.reliability_diagram(
        curves, f"real-world {half}, {name}: reliability", out / f"reliability_{name}_{half}.png"
    )


def _mnist_test() -> tuple[np.ndarray, np.ndarray] | None:
    """MNIST test from $MNIST_DIR or the download cache, never downloading; None if absent."""
    from train import mnist

    for candidate in (os.environ.get("MNIST_DIR"), mnist.DEFAULT_CACHE_DIR):
        if candidate and Path(candidate).is_dir():
            try:
                images, labels = mnist.load_test_digits(candidate)
            except mnist.MnistError:
                continue
            return images, labels.astype(np.int64)
    logger.warning("MNIST test not on disk (set MNIST_DIR): not scored")
    return None


# --- printing -------------------------------------------------------------------------------


def tables(report: dict) -> str:
    """The report as plain-text tables: accuracy per group, then calibration."""
    columns = [
        (name, half, path)
        for name, results in report["results"].items()
        for half in results
        if half != "mnist_test"
        for path in ("in_process", "http")
        if path in results[half]
    ]
    lines = []
    header = " ".join(f"{f'{n} {h}' + (' http' if p == 'http' else ''):>18}" for n, h, p in columns)
    for key in GROUPS:
        groups = sorted(
            {g for n, h, p in columns for g in report["results"][n][h][p]["by"][key]},
            key=_group_order,
        )
        lines += ["", f"accuracy (%) by {key}", f"{'':24} {'n':>5} {header}"]
        for group in groups:
            cells, count = [], ""
            for n, h, p in columns:
                row = report["results"][n][h][p]["by"][key].get(group)
                cells.append(f"{100 * row['accuracy']:>18.2f}" if row else f"{'':>18}")
                count = count or (str(row["n"]) if row else "")
            lines.append(f"{group:24} {count:>5} " + " ".join(cells))
        overall = [f"{100 * report['results'][n][h][p]['accuracy']:>18.2f}" for n, h, p in columns]
        lines.append(f"{'ALL':24} {'':>5} " + " ".join(overall))
    lines += ["", "n: images of the group in the first column that has it (one half)"]
    lines += ["", "calibration", _calibration_header()]
    for name, results in report["results"].items():
        for half, paths in results.items():
            for path, result in paths.items():
                lines.append(_calibration_row(f"{name} {half} {path}", result))
    return "\n".join(lines)


def _group_order(group: str):
    return (group.startswith("font:"), group)


def _calibration_header() -> str:
    return (
        f"{'':34} {'n':>5} {'acc %':>7} {'T':>6} {'ECE raw':>8} {'ECE cal':>8} "
        f"{'threshold':>9} {'flagged %':>9} {'err conf %':>10}"
    )


def _calibration_row(label: str, result: dict) -> str:
    c = result["calibration"]
    return (
        f"{label:34} {c['n']:>5} {100 * c['accuracy']:>7.2f} {c['temperature']:>6.3f} "
        f"{100 * c['ece_uncalibrated']:>8.2f} {100 * c['ece_calibrated']:>8.2f} "
        f"{c['threshold']:>9.4f} {100 * c['flagged_share']:>9.2f} "
        f"{100 * c['error_among_confident']:>10.2f}"
    )
