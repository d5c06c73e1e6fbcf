import numpy as np
import pytest
import torch

from rankbias.spectra import rank_metrics, singular_values
from rankbias.vocabulary import SPECTRUM_METRICS


def metrics_of(matrix: np.ndarray, **kwargs) -> dict[str, float]:
    sigma = singular_values(torch.as_tensor(matrix)[None])
    return {name: value.item() for name, value in rank_metrics(sigma, **kwargs).items()}


def test_rank_two_matrix_has_zero_rank_two_residual():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((40, 2)) @ rng.standard_normal((2, 30))
    metrics = metrics_of(matrix)
    assert metrics["residual_2"] < 1e-12
    assert metrics["residual_1"] > 0.05
    assert metrics["rank_galanti"] == 2 and metrics["rank_rel"] == 2
    assert tuple(metrics) == SPECTRUM_METRICS  # the registry's vocabulary is what we compute


def test_identity_metrics():
    metrics = metrics_of(np.eye(5))
    assert metrics["effective_rank"] == pytest.approx(5)
    assert metrics["stable_rank"] == pytest.approx(5)
    assert metrics["rank_galanti"] == 5
    assert metrics["residual_1"] == pytest.approx(np.sqrt(4 / 5))
    assert metrics["residual_2"] == pytest.approx(np.sqrt(3 / 5))
    assert metrics["fro_norm"] == pytest.approx(np.sqrt(5))


def test_diagonal_by_hand():
    metrics = metrics_of(np.diag([4.0, 3.0, 0.0]))
    assert metrics["fro_norm"] == pytest.approx(5.0)
    assert metrics["spectral_norm"] == pytest.approx(4.0)
    assert metrics["stable_rank"] == pytest.approx(25 / 16)
    share = np.array([4, 3]) / 7
    assert metrics["effective_rank"] == pytest.approx(np.exp(-(share * np.log(share)).sum()))
    assert metrics["residual_1"] == pytest.approx(3 / 5)
    assert metrics["rank_galanti"] == 2


def test_tolerances_separate_the_two_rank_conventions():
    # For I_100, sigma_i / ||W||_F = 0.1 but sigma_i / sigma_1 = 1: a tolerance of 0.2 counts no
    # direction by Paper B's code convention and all 100 by its text's.
    metrics = metrics_of(np.eye(100), rank_tol=0.2, rel_tol=0.2)
    assert metrics["rank_galanti"] == 0
    assert metrics["rank_rel"] == 100
    assert metrics_of(np.diag([1.0, 0.002, 0.0005]))["rank_galanti"] == 2


def test_zero_matrix_is_rank_zero_with_undefined_ratios():
    metrics = metrics_of(np.zeros((4, 3)))
    assert metrics["rank_galanti"] == 0 and metrics["rank_rel"] == 0
    for name in ("stable_rank", "effective_rank", "residual_1", "residual_2"):
        assert np.isnan(metrics[name])


def test_non_finite_matrix_gives_nan_everywhere():
    sigma = torch.tensor([[1.0, float("nan")]])
    assert all(np.isnan(v.item()) for v in rank_metrics(sigma).values())
