"""LeNet-5 architecture facts the artifacts and the handler rely on (`train.model`)."""

from __future__ import annotations

import pytest
import torch

from train.cli import main
from train.model import VARIANTS, LeNet5, count_parameters, summary


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count_matches_the_paper(variant):
    assert count_parameters(LeNet5(variant)) == 61_706


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batch", [1, 7])
def test_maps_images_to_ten_logits(variant, batch):
    model = LeNet5(variant).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 1, 28, 28))
    assert out.shape == (batch, 10)
    assert torch.isfinite(out).all()


def test_variants_differ_in_activation_and_pooling():
    x = torch.randn(2, 1, 28, 28)
    torch.manual_seed(0)
    modern = LeNet5("modern").eval()
    torch.manual_seed(0)
    classic = LeNet5("classic").eval()
    with torch.no_grad():
        assert not torch.allclose(modern(x), classic(x))


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="Unknown LeNet-5 variant 'resnet'"):
        LeNet5("resnet")


def test_summary_lists_layer_shapes_and_total():
    table = summary(LeNet5())
    assert "(6, 28, 28)" in table and "(16, 5, 5)" in table and "(10,)" in table
    assert table.splitlines()[-1].split()[-1] == "61,706"


def test_cli_summary_prints_table_and_exits(capsys):
    assert main(["--summary", "--variant", "classic"]) == 0
    out = capsys.readouterr().out
    assert "ScaledTanh" in out and "AvgPool2d" in out and "61,706" in out
