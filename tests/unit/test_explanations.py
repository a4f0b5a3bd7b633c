"""Explanations without a server: `Predictor.explain` itself. The handler's explain path and the
explanation budget are test_explanations_handler.py.

What holds: each good image gets the prediction, the 28x28 PNG the model saw and a 28x28
attribution map; the PNG decodes to exactly the model input the prediction and the attribution
were computed on; attributions are finite, deterministic, independent of the images beside them,
zero where the input is blank (integrated gradients from a blank image) and sum to about the
logit's rise; a GPU explains as the CPU does.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from handler.normalization import normalize
from handler.predictor import BLANK_INPUT, EXPLAIN_STEPS, Predictor
from handler.schemas import Explanation, ImageError
from samples.digits import encode_png
from tests.explanation_checks import Recording, assert_same


@pytest.fixture(scope="module")
def loaded(model_path) -> Predictor:
    return Predictor.load(model_path, device="cpu", explanations=True)


def decoded(explanation: Explanation) -> np.ndarray:
    image = Image.open(io.BytesIO(explanation.input_bytes()))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))
    return np.asarray(image)


# --- Predictor.explain ---------------------------------------------------------------------------
def test_each_image_gets_its_explanation_in_input_order(loaded, pngs):
    answers = loaded.explain([pngs[0], b"junk", pngs[1]])
    assert [type(a) for a in answers] == [Explanation, ImageError, Explanation]
    assert "cannot decode 4 bytes" in answers[1].error.message
    for answer in answers[::2]:
        assert len(answer.attribution) == 28 and {len(row) for row in answer.attribution} == {28}
        assert np.isfinite(answer.attribution).all()
        assert f"{EXPLAIN_STEPS} Gauss-Legendre steps" in answer.method
    assert loaded.explain([]) == []


@pytest.mark.parametrize("which", ["mnist-png", "photo-jpeg"])
def test_the_png_is_exactly_the_input_the_prediction_and_attribution_used(loaded, pngs, photo,
                                                                         which):  # fmt: skip
    data = pngs[0] if which == "mnist-png" else photo
    recording = Recording(loaded.module)
    predictor = Predictor(recording, loaded.metadata)
    (answer,) = predictor.explain([data])
    model_input = normalize(decoded(answer))[np.newaxis, np.newaxis]
    # The first forward pass is the prediction's; every later one is an integration step, whose
    # last point (alpha close to 1) is the input itself, give or take the quadrature node.
    assert np.array_equal(recording.inputs[0].numpy(), model_input)
    with torch.inference_mode():
        logits = loaded.module(torch.from_numpy(model_input))
    temperature = loaded.metadata.get("calibration", {}).get("temperature", 1.0)
    expected = torch.softmax(logits.double() / temperature, dim=1)[0].numpy()
    np.testing.assert_allclose(answer.prediction.probabilities, expected, rtol=0, atol=1e-12)
    steps = torch.cat(recording.inputs[1:])
    assert len(steps) == EXPLAIN_STEPS
    scale = (steps - BLANK_INPUT) / (torch.from_numpy(model_input) - BLANK_INPUT + 1e-12)
    assert float(scale.amax()) < 1.0 and float(scale.amin()) > -1e-6


def test_an_mnist_png_is_shown_as_itself_and_predicted_as_by_predict(loaded, pngs, mnist_test):
    images, _ = mnist_test
    (answer,) = loaded.explain([pngs[0]])
    assert np.array_equal(decoded(answer), images[0])
    (prediction,) = loaded.predict([pngs[0]])
    np.testing.assert_allclose(answer.prediction.probabilities, prediction.probabilities,
                               atol=1e-6)  # fmt: skip


def test_a_resampled_input_is_rounded_to_8_bits_and_predicted_alike(loaded, photo):
    (answer,) = loaded.explain([photo])
    (prediction,) = loaded.predict([photo])
    assert answer.prediction.digit == prediction.digit
    np.testing.assert_allclose(answer.prediction.probabilities, prediction.probabilities,
                               atol=5e-3)  # fmt: skip


def test_attributions_are_deterministic_and_independent_of_their_neighbours(loaded, pngs, photo):
    together = loaded.explain([pngs[1], photo, pngs[2]])
    again = loaded.explain([pngs[1], photo, pngs[2]])
    assert together == again
    for answer, data in zip(together, [pngs[1], photo, pngs[2]], strict=True):
        assert_same(answer, loaded.explain([data])[0])


def test_blank_pixels_get_no_attribution_and_the_map_sums_to_the_logit_rise(trained_model, pngs,
                                                                           photo):  # fmt: skip
    """Integrated gradients from a blank image: a pixel equal to the baseline gets exactly 0,
    and the map sums to the target logit's rise from a blank image (up to the quadrature)."""
    predictor = Predictor.load(trained_model, device="cpu")
    for answer in predictor.explain([*pngs, photo]):
        pixels = decoded(answer)
        attribution = np.asarray(answer.attribution)
        assert (attribution[pixels == 0] == 0).all()
        assert np.abs(attribution[pixels > 0]).max() > 0
        x = torch.from_numpy(normalize(pixels)[np.newaxis, np.newaxis])
        with torch.inference_mode():
            logits = predictor.module(torch.cat([x, torch.full_like(x, BLANK_INPUT)]))
        rise = float(logits[0, answer.prediction.digit] - logits[1, answer.prediction.digit])
        assert abs(attribution.sum() - rise) <= 0.05 * abs(rise) + 0.05, (attribution.sum(), rise)


def test_an_image_without_ink_is_explained_with_an_empty_map(loaded):
    blank = encode_png(np.zeros((28, 28), np.uint8))
    (answer,) = loaded.explain([blank])
    assert (decoded(answer) == 0).all()
    assert not np.any(answer.attribution)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_explanations_on_a_gpu_match_the_cpu(model_path, loaded, pngs, photo):
    on_gpu = Predictor.load(model_path, device="cuda:0", explanations=True)
    for answer, data in zip(on_gpu.explain([*pngs, photo]), [*pngs, photo], strict=True):
        expected = loaded.explain([data])[0]
        assert answer.input_png == expected.input_png
        assert answer.prediction.digit == expected.prediction.digit
        peak = np.abs(expected.attribution).max()
        np.testing.assert_allclose(answer.attribution, expected.attribution, atol=1e-2 * peak)
