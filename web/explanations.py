"""What the page shows of TorchServe's explanations (`POST /explanations/lenet`), read in one place.

The page draws two 28x28 panels beside the answer: the image the model saw after preprocessing
and an attribution map. Both come from the server only; this app computes neither. Until the
handler answers explanations, `read_explanation` finds nothing and the page shows both panels as
"not available" with the server's reason.

The explanation body this module reads (issue 16's contract; when the handler's pydantic model
lands in `handler.schemas`, validate with it here and nowhere else):

    {"prediction": {"digit": 7, "confidence": 0.99, "probabilities": [... 10]},
     "input_png": "<base64 PNG, 28x28 grayscale: what the model saw>",
     "attribution": [[float] * 28] * 28      # signed attributions, or
     "attribution_png": "<base64 PNG, 28x28>"}  # an already rendered map

What the page receives is `Explanation.for_page()`: the input PNG, and the attribution either as
a PNG or as the 28x28 values (the page colours positive and negative values itself).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from handler.normalization import IMAGE_SIZE
from handler.schemas import Prediction


@dataclass(frozen=True)
class Explanation:
    """One image's explanation: the prediction and the two panels."""

    prediction: Prediction
    input_png: str
    attribution_png: str | None = None
    attribution: list[list[float]] | None = None

    def for_page(self) -> dict:
        """The panels as the page draws them (base64 strings, or the values)."""
        return {
            "input_png": self.input_png,
            "attribution_png": self.attribution_png,
            "attribution": self.attribution,
        }


def read_explanation(body: object) -> Explanation | None:
    """The explanation in a 200 answer of `/explanations/lenet`, or None when it has none.

    None means "the server does not explain (yet)": the caller falls back to predictions.
    """
    if not isinstance(body, dict) or not isinstance(body.get("prediction"), dict):
        return None
    try:
        prediction = Prediction.model_validate(body["prediction"])
    except ValueError:
        return None
    input_png = body.get("input_png")
    attribution_png = body.get("attribution_png")
    attribution = body.get("attribution")
    if not _is_base64(input_png):
        return None
    if attribution_png is not None and not _is_base64(attribution_png):
        return None
    if attribution is not None and not _is_map(attribution):
        return None
    if attribution is None and attribution_png is None:
        return None
    return Explanation(prediction, input_png, attribution_png, attribution)


def _is_base64(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_map(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == IMAGE_SIZE
        and all(isinstance(row, list) and len(row) == IMAGE_SIZE for row in value)
        and all(isinstance(v, int | float) for row in value for v in row)
    )
