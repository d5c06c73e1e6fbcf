"""Each bound on a network small enough to compute by hand, and the exactness of its rewrites."""

import math

import numpy as np
import pytest
import torch

from rankbias.bounds import augmented_weights, fold_batch_norm, model_bounds
from rankbias.models import Arch, forward, init_params


def diagonal_net() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """V = diag(2, 1), b = 0, U = diag(3, 1) (no output bias); inputs e1 (class 0), e2 (class 1)."""
    params = {
        "W1": torch.tensor([[[2.0, 0.0], [0.0, 1.0]]], dtype=torch.float64),
        "b1": torch.zeros(1, 2, dtype=torch.float64),
        "W2": torch.tensor([[[3.0, 0.0], [0.0, 1.0]]], dtype=torch.float64),
    }
    return params, torch.eye(2, dtype=torch.float64), torch.tensor([0, 1])


def test_bounds_of_a_diagonal_two_layer_net_equal_their_formulas():
    params, x, y = diagonal_net()
    bounds = model_bounds(params, 2, x, y, "ce", rank_first=torch.tensor([2.0]))
    n_train, width = 2, 2  # p = m·n = 4 and 2·(m + n) = r·(m + n) = 8 with n = 2
    log_term = math.log(width) * math.log(n_train) / n_train
    assert bounds["bound_paramcount_full"].item() == pytest.approx(math.sqrt(4 * log_term))
    assert bounds["bound_paramcount_rank2"].item() == pytest.approx(math.sqrt(8 * log_term))
    assert bounds["bound_paramcount_rankr"].item() == pytest.approx(math.sqrt(8 * log_term))
    # W~1 = [[2,0,0],[0,1,0],[0,0,1]] (||.||_F = sqrt 6, ||.||_2 = 2, row norms 2+1+1 = 4),
    # W~2 = [[3,0,0],[0,1,0]] (||.||_F = sqrt 10, ||.||_2 = 3, row norms 3+1 = 4); x~ = [e_i, 1].
    x_max, x_fro = math.sqrt(2), 2.0
    grs = x_max * (math.sqrt(2 * math.log(2) * 2) + 1) * math.sqrt(6) * math.sqrt(10) / math.sqrt(2)
    assert bounds["bound_grs"].item() == pytest.approx(grs)
    # outputs: f(e1) = (6, 0), f(e2) = (0, 1): margins 6 and 1; 10th percentile 1 + 0.1·5 = 1.5
    assert bounds["margin_gamma"].item() == pytest.approx(1.5)
    spectral = 2 * 3 * ((4 / 2) ** (2 / 3) + (4 / 3) ** (2 / 3)) ** 1.5 * x_fro / (1.5 * n_train)
    assert bounds["bound_spectral"].item() == pytest.approx(spectral)


def test_spectral_bound_is_infinite_when_the_margin_quantile_is_not_positive():
    params, x, _ = diagonal_net()
    bounds = model_bounds(params, 2, x, torch.tensor([1, 0]), "ce", torch.tensor([2.0]))
    assert bounds["margin_gamma"].item() < 0 and math.isinf(bounds["bound_spectral"].item())
    regression = model_bounds(params, 2, x, torch.zeros(2, 2), "mse", torch.tensor([2.0]))
    assert math.isnan(regression["bound_spectral"].item())


@pytest.mark.parametrize("batch_norm", [False, True])
def test_bias_free_augmented_and_folded_nets_compute_the_same_function(batch_norm):
    arch = Arch(5, 6, 3, 4, output_bias=True, batch_norm=batch_norm)
    params = init_params(arch, [0, 1], torch.float64, torch.device("cpu"))
    if batch_norm:  # trained-looking running statistics and affine parameters
        generator = torch.Generator().manual_seed(0)
        for layer in (1, 2):
            for name in ("bn_weight", "bn_bias", "bn_mean"):
                params[f"{name}{layer}"] = torch.randn(2, 6, generator=generator).double()
            params[f"bn_var{layer}"] = torch.rand(2, 6, generator=generator).double() + 0.1
    x = torch.randn(7, 5, dtype=torch.float64)
    expected = forward(params, x, 3)  # evaluation mode: running statistics
    plain = fold_batch_norm(params, 3)
    assert not any(name.startswith("bn_") for name in plain)
    np.testing.assert_allclose(forward(plain, x, 3), expected, atol=1e-12)
    hidden = torch.cat([x, torch.ones(7, 1, dtype=torch.float64)], dim=1)
    for layer, weight in enumerate(augmented_weights(plain, 3), start=1):
        hidden = torch.matmul(hidden, weight.mT)
        hidden = torch.relu(hidden) if layer < 3 else hidden
    np.testing.assert_allclose(hidden, expected, atol=1e-12)
