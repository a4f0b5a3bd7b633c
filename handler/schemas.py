"""The HTTP response contract of `POST /predictions/lenet` and `POST /explanations/lenet`, once.

The handler validates every response against these models before returning it; the batch job,
the load tests, the web page's app and the test suite parse answers with them.
`python -m handler.schemas` writes the published JSON Schema (`handler/response.schema.json`).

Shapes of `/predictions/lenet`:
- one image  -> `Prediction`:        {"digit": 7, "confidence": 0.998, "probabilities": [...10]}
- several    -> `MultiPrediction`:   {"predictions": [Prediction | ImageError, ...]} in input order.
  A bad image in a multi-image request does not fail its neighbours: its slot holds an
  `ImageError` and the request still answers 200.
- a request that yields no usable image -> `ErrorResponse` with HTTP 400.

`/explanations/lenet` takes the same inputs and answers the same way, with `Explanation` in place
of `Prediction` and `MultiExplanation` (`{"explanations": [...]}`) in place of `MultiPrediction`:
    {"prediction": {...}, "input_png": "<base64 PNG, 28x28>", "attribution": [[...28] x 28],
     "method": "integrated gradients, ..."}
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

NUM_CLASSES = 10
MAP_SIZE = 28  # the model input's side (handler.normalization.IMAGE_SIZE, which needs numpy)
# Attributions are sent with this many significant digits: a map the eye or a threshold reads,
# at ~9 characters a value instead of ~20 (an answer of 8 explanations stays under 80 KB).
ATTRIBUTION_DIGITS = 4
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCHEMA_PATH = Path(__file__).with_name("response.schema.json")
# Response headers on every answer of POST /predictions/lenet: which model produced it.
MODEL_NAME_HEADER = "X-Model-Name"
MODEL_VERSION_HEADER = "X-Model-Version"


class Prediction(BaseModel):
    """The answer for one image."""

    model_config = ConfigDict(extra="forbid")

    digit: Annotated[int, Field(ge=0, le=9, description="The predicted digit.")]
    confidence: Annotated[
        float, Field(ge=0.0, le=1.0, description="Probability of the predicted digit.")
    ]
    probabilities: Annotated[
        list[Annotated[float, Field(ge=0.0, le=1.0)]],
        Field(
            min_length=NUM_CLASSES,
            max_length=NUM_CLASSES,
            description="Calibrated probability of each digit 0-9 (temperature-scaled softmax, "
            "the temperature fitted on validation data at training time); sums to 1.",
        ),
    ]
    uncertain: Annotated[
        bool,
        Field(description="True when `confidence` is below the model's threshold, chosen on "
              "validation data so that at most a stated share of the answers at or above it "
              "are wrong (the artifact's `calibration.target_error_among_confident`, e.g. "
              "0.5 %): an answer to check by hand."),
    ] = False

    @classmethod
    def from_probabilities(cls, probabilities, uncertain_below: float = 0.0) -> Prediction:
        """Build the answer from one row of (calibrated) probabilities (any float sequence);
        `uncertain` is set when the confidence is strictly below `uncertain_below`.

        The predictor calls this for the handler and the batch job alike, so they answer
        identically.
        """
        probs = [float(p) for p in probabilities]
        digit = max(range(len(probs)), key=probs.__getitem__)
        return cls(digit=digit, confidence=probs[digit], probabilities=probs,
                   uncertain=probs[digit] < uncertain_below)  # fmt: skip

    @field_validator("probabilities")
    @classmethod
    def _sums_to_one(cls, value: list[float]) -> list[float]:
        total = math.fsum(value)
        if abs(total - 1.0) > 1e-3:
            raise ValueError(f"probabilities sum to {total:.6f}, not 1")
        return value


class ErrorBody(BaseModel):
    """What went wrong, in the shape TorchServe itself uses for errors."""

    model_config = ConfigDict(extra="forbid")

    code: Annotated[int, Field(ge=400, le=599, description="HTTP status code.")]
    type: Annotated[str, Field(description="Error class, e.g. 'InvalidImage'.")]
    message: Annotated[str, Field(description="What was wrong and with which image.")]


class ErrorResponse(ErrorBody):
    """Body of a 4xx answer for a request that yielded no usable image."""


class ImageError(BaseModel):
    """The slot of one bad image inside a multi-image answer."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorBody


class MultiPrediction(BaseModel):
    """The answer for a request carrying several images, in input order."""

    model_config = ConfigDict(extra="forbid")

    predictions: list[Prediction | ImageError]


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
MapRow = Annotated[list[FiniteFloat], Field(min_length=MAP_SIZE, max_length=MAP_SIZE)]


class Explanation(BaseModel):
    """The explanation of one image: the answer, what the model saw, which pixels drove it."""

    model_config = ConfigDict(extra="forbid")

    prediction: Prediction
    input_png: Annotated[str, Field(description=(
        "The 28x28 8-bit grayscale image the model saw after preprocessing (white ink on "
        "black), as base64 PNG. The prediction and the attribution are computed on exactly "
        "this image."))]  # fmt: skip
    attribution: Annotated[list[MapRow], Field(
        min_length=MAP_SIZE, max_length=MAP_SIZE,
        description=(
            "28x28 signed attribution of the predicted digit to each pixel of input_png (row "
            "by row, top first), in units of that digit's logit: positive pixels pushed "
            "towards the answer, negative ones against it. Integrated gradients from a blank "
            "image, so the values sum to about the logit's rise from a blank image. "
            f"{ATTRIBUTION_DIGITS} significant digits."))]  # fmt: skip
    method: Annotated[str, Field(description="How the attribution was computed.")]

    @classmethod
    def build(cls, probabilities, input_png: bytes, attribution, method: str,
              uncertain_below: float = 0.0) -> Explanation:  # fmt: skip
        """The answer from one row of (calibrated) probabilities, the PNG bytes the model saw
        and a 28x28 attribution map (any nested float sequence or array)."""
        rows = [[float(f"{v:.{ATTRIBUTION_DIGITS}g}") for v in row] for row in attribution]
        return cls(prediction=Prediction.from_probabilities(probabilities, uncertain_below),
                   input_png=base64.b64encode(input_png).decode("ascii"),
                   attribution=rows, method=method)  # fmt: skip

    @field_validator("input_png")
    @classmethod
    def _is_png_of_the_map_size(cls, value: str) -> str:
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("input_png is not base64") from None
        # A PNG starts with its signature and the IHDR chunk: width and height at bytes 16-24.
        size = (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
        if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR" or size != (MAP_SIZE, MAP_SIZE):
            raise ValueError(f"input_png is not a {MAP_SIZE}x{MAP_SIZE} PNG")
        return value

    def input_bytes(self) -> bytes:
        """The PNG of `input_png`."""
        return base64.b64decode(self.input_png)


class MultiExplanation(BaseModel):
    """The explanations for a request carrying several images, in input order."""

    model_config = ConfigDict(extra="forbid")

    explanations: list[Explanation | ImageError]


Response = Prediction | MultiPrediction | ErrorResponse
RESPONSE_ADAPTER: TypeAdapter[Response] = TypeAdapter(Response)
ExplanationResponse = Explanation | MultiExplanation | ErrorResponse
EXPLANATION_ADAPTER: TypeAdapter[ExplanationResponse] = TypeAdapter(ExplanationResponse)


def parse_response(payload: dict | str | bytes) -> Response:
    """Parse and validate a `/predictions` response body (dict or JSON text) into its model."""
    if isinstance(payload, (str, bytes)):
        return RESPONSE_ADAPTER.validate_json(payload)
    return RESPONSE_ADAPTER.validate_python(payload)


def parse_explanation(payload: dict | str | bytes) -> ExplanationResponse:
    """Parse and validate a `/explanations` response body (dict or JSON text) into its model."""
    if isinstance(payload, (str, bytes)):
        return EXPLANATION_ADAPTER.validate_json(payload)
    return EXPLANATION_ADAPTER.validate_python(payload)


def json_schema() -> dict:
    """The JSON Schema of every response body either endpoint can return."""
    schema = TypeAdapter(Response | ExplanationResponse).json_schema()
    schema["title"] = "POST /predictions/lenet and POST /explanations/lenet responses"
    schema["description"] = (
        "/predictions/lenet answers Prediction, MultiPrediction or ErrorResponse; "
        "/explanations/lenet answers Explanation, MultiExplanation or ErrorResponse."
    )
    return schema


def main(argv: list[str] | None = None) -> int:
    """Write (default) or `--check` the published JSON Schema file."""
    argv = sys.argv[1:] if argv is None else argv
    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if "--check" in argv:
        if not SCHEMA_PATH.exists() or SCHEMA_PATH.read_text() != text:
            print(f"{SCHEMA_PATH} is stale: run `python -m handler.schemas`", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
