"""Fitting the calibration the artifact carries, and measuring calibration (ECE, reliability).

`fit(logits, labels)` returns the `calibration` block of the metadata: the temperature T that
minimises the validation negative log-likelihood of `softmax(logits / T)`, and the `uncertain`
threshold, the lowest confidence such that the answers at or above it are wrong at most
`target_error` of the time on the same validation data. Serving applies both through
`handler.calibration`. Numpy only; the evaluation tools import the measures from here.
"""

from __future__ import annotations

import math

import numpy as np

from handler.calibration import apply_temperature

ECE_BINS = 15
TARGET_ERROR = 0.005  # at most 0.5 % wrong among answers not flagged uncertain
TEMPERATURE_RANGE = (0.05, 20.0)


def negative_log_likelihood(
    logits: np.ndarray,
    labels: np.ndarray,
    temperature: float = 1.0,
    weights: np.ndarray | None = None,
) -> float:
    """(Weighted) mean cross-entropy of `softmax(logits / temperature)` against `labels`."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    losses = log_norm - z[np.arange(len(labels)), labels]
    return float(np.average(losses, weights=weights))


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """The T minimising the (weighted) NLL of `softmax(logits / T)`: golden-section on log T.

    The NLL is convex in 1/T, so the one-dimensional search finds the global minimum.
    """
    lo, hi = (math.log(t) for t in TEMPERATURE_RANGE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)

    def nll(log_t: float) -> float:
        return negative_log_likelihood(logits, labels, math.exp(log_t), weights)

    fa, fb = nll(a), nll(b)
    while hi - lo > 1e-5:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(math.exp((lo + hi) / 2))


def choose_threshold(
    confidence: np.ndarray, correct: np.ndarray, target_error: float = TARGET_ERROR
) -> float:
    """The lowest threshold t such that answers with confidence >= t err at most `target_error`.

    Scans the sorted confidences from the top; the error among the answers at or above each
    candidate is cumulative. Returns 1.0 (flag everything below certainty) when no threshold
    meets the target, and 0.0 when every answer already does.
    """
    order = np.argsort(-confidence, kind="stable")
    conf, wrong = confidence[order], ~correct[order]
    error = np.cumsum(wrong) / np.arange(1, len(conf) + 1)
    # Only cut between distinct confidences: ties are flagged together or not at all.
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero((error <= target_error) & last_of_tie)
    if len(ok) == 0:
        return 1.0
    cut = ok[-1]
    if cut == len(conf) - 1:
        return 0.0
    return float(conf[cut])


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Equal-width confidence bins over [0, 1]: count, mean confidence and accuracy of each."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for i in range(bins):
        members = index == i
        n = int(members.sum())
        rows.append(
            {
                "low": float(edges[i]),
                "high": float(edges[i + 1]),
                "n": n,
                "confidence": float(confidence[members].mean()) if n else None,
                "accuracy": float(correct[members].mean()) if n else None,
            }
        )
    return rows


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over `bins` equal-width bins."""
    total = len(confidence)
    if total == 0:
        return 0.0
    return float(
        sum(
            row["n"] / total * abs(row["accuracy"] - row["confidence"])
            for row in reliability(confidence, correct, bins)
            if row["n"]
        )
    )


def selective(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> dict:
    """Flag answers with confidence below `threshold`; the flagged share and the others' error."""
    confident = confidence >= threshold
    n_conf = int(confident.sum())
    return {
        "threshold": float(threshold),
        "flagged_share": float(1.0 - confident.mean()) if len(confidence) else 0.0,
        "confident": n_conf,
        "error_among_confident": float((~correct[confident]).mean()) if n_conf else 0.0,
    }


def summary(logits: np.ndarray, labels: np.ndarray, temperature: float, threshold: float) -> dict:
    """Accuracy, ECE before/after temperature scaling, and the selective figures, for one set."""
    raw = apply_temperature(logits, 1.0)
    cal = apply_temperature(logits, temperature)
    correct = raw.argmax(axis=1) == labels
    return {
        "n": int(len(labels)),
        "accuracy": float(correct.mean()),
        "ece_uncalibrated": expected_calibration_error(raw.max(axis=1), correct),
        "ece_calibrated": expected_calibration_error(cal.max(axis=1), correct),
        "nll_uncalibrated": negative_log_likelihood(logits, labels),
        "nll_calibrated": negative_log_likelihood(logits, labels, temperature),
        **selective(cal.max(axis=1), correct, threshold),
    }


def fit(
    sets: dict[str, tuple[np.ndarray, np.ndarray]],
    threshold_on: str,
    target_error: float = TARGET_ERROR,
) -> dict:
    """The metadata's `calibration` block, fitted on validation sets `{name: (logits, labels)}`.

    T minimises the NLL with every set weighing the same however many images it has (MNIST's
    5,000 validation digits must not drown the client-like ones). The `uncertain` threshold is
    chosen on `sets[threshold_on]` alone: the set that looks like client traffic.
    """
    logits = np.concatenate([lg for lg, _ in sets.values()])
    labels = np.concatenate([y for _, y in sets.values()])
    weights = np.concatenate([np.full(len(y), 1.0 / len(y)) for _, y in sets.values()])
    temperature = round(fit_temperature(logits, labels, weights), 4)  # as the metadata holds it
    chosen_logits, chosen_labels = sets[threshold_on]
    confidence = apply_temperature(chosen_logits, temperature).max(axis=1)
    correct = chosen_logits.argmax(axis=1) == chosen_labels
    threshold = choose_threshold(confidence, correct, target_error)
    return {
        "temperature": temperature,
        "uncertain_below": threshold,
        "target_error_among_confident": target_error,
        "fitted_on": {name: int(len(y)) for name, (_, y) in sets.items()},
        "threshold_chosen_on": threshold_on,
        "ece_bins": ECE_BINS,
    }
