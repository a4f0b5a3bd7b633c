"""What the page shows of TorchServe's explanations (`POST /explanations/lenet`), read in one place.

The page draws two 28x28 panels beside the answer: the image the model saw after preprocessing
and an attribution map. Both come from the server only; this app computes neither. The answer is
validated with the handler's own contract (`handler.schemas.Explanation`: the prediction, the
input as a base64 PNG, 28x28 signed attributions); anything else reads as "no explanation" and
the page shows both panels as "not available" with the reason.

What the page receives is `for_page(explanation)`: the input PNG (base64) and the 28x28 values,
which the page colours itself (red towards the answer, blue against it).
"""

from __future__ import annotations

from handler.schemas import Explanation, parse_explanation


def read_explanation(body: bytes | str | dict) -> Explanation | None:
    """The explanation in a 200 answer of `/explanations/lenet` for one image, or None when the
    body is not one (the caller then falls back to predictions)."""
    try:
        answer = parse_explanation(body)
    except ValueError:
        return None
    return answer if isinstance(answer, Explanation) else None


def for_page(explanation: Explanation) -> dict:
    """The panels as the page draws them: `{"input_png": base64 PNG, "attribution": 28x28}`."""
    return {"input_png": explanation.input_png, "attribution": explanation.attribution}
