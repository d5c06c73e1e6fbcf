"""Paper A's quantities on cases with known answers."""

import numpy as np
import pytest
import torch

from rankbias.models import Arch, forward, init_params, member_losses
from rankbias.paper_a import (
    eps_batch,
    first_layer_gradient,
    regularized_gradient_norms,
    theorem_26,
    unit_states,
)
from rankbias.train import decay_weights

DOUBLE = torch.float64


def two_layer(members: int = 2, n: int = 5, m: int = 6, seed: int = 0) -> dict:
    return init_params(
        Arch(n, m, 2, 1), list(range(seed, seed + members)), DOUBLE, torch.device("cpu")
    )


def test_first_layer_gradient_matches_finite_differences():
    params = two_layer()
    x = torch.randn(2, 7, 5, dtype=DOUBLE, generator=torch.Generator().manual_seed(1))
    y = torch.randn(2, 7, 1, dtype=DOUBLE, generator=torch.Generator().manual_seed(2))
    gradient = first_layer_gradient(params, x, y, 2, "mse")
    step = 1e-6
    for member, row, col in [(0, 0, 0), (1, 3, 2), (0, 5, 4)]:
        shifted = {k: v.clone() for k, v in params.items()}
        shifted["W1"][member, row, col] += step
        up = member_losses(forward(shifted, x, 2), y, "mse")[member]
        shifted["W1"][member, row, col] -= 2 * step
        down = member_losses(forward(shifted, x, 2), y, "mse")[member]
        assert gradient[member, row, col].item() == pytest.approx(
            ((up - down) / (2 * step)).item(), rel=1e-6, abs=1e-9
        )


@pytest.mark.parametrize(
    "loss,dtype,tolerance", [("mse", DOUBLE, 1e-10), ("ce", torch.float32, 1e-4)]
)
def test_gram_norms_equal_the_norms_of_the_formed_gradients(loss, dtype, tolerance):
    """The B×B Gram route to ||dL_S'/dV + wd·V||_F, two batches S' at once, gives the norms of
    the explicit gradients, batch by batch."""
    generator = torch.Generator().manual_seed(4)
    params = init_params(Arch(9, 12, 2, 3), [0, 1, 2], dtype, torch.device("cpu"))
    x = torch.randn(3, 16, 9, generator=generator).to(dtype)
    if loss == "mse":
        y = torch.randn(3, 16, 3, generator=generator).to(dtype)
    else:
        y = torch.randint(0, 3, (3, 16), generator=generator)
    batch_wd = torch.tensor([[0.0, 0.2], [0.01, 0.0], [0.5, 0.05]], dtype=dtype)
    volume_sq = params["W1"].double().square().sum(dim=(1, 2))
    gram = regularized_gradient_norms(params, x, y, loss, 8, batch_wd, volume_sq)
    assert gram.shape == (3, 2)
    for batch, rows in enumerate((slice(0, 8), slice(8, 16))):
        gradient = first_layer_gradient(params, x[:, rows], y[:, rows], 2, loss)
        explicit = gradient + batch_wd[:, batch].view(-1, 1, 1) * params["W1"]
        expected = explicit.double().flatten(1).norm(dim=1)
        assert torch.allclose(gram[:, batch], expected, rtol=tolerance, atol=0)


def test_eps_batch_is_zero_at_an_exact_fit_without_weight_decay_and_wd_norm_with_it():
    params = two_layer()
    x = torch.randn(40, 5, dtype=DOUBLE, generator=torch.Generator().manual_seed(3))
    y = forward({k: v[:1] for k, v in params.items()}, x, 2)[0]  # member 0 fits exactly
    zero = torch.zeros(2, dtype=DOUBLE)
    eps = eps_batch(params, x, y, 2, "mse", 8, zero, [0, 1], epochs=2)
    assert eps["eps_batch_max"][0] < 1e-12 and eps["eps_full"][0] < 1e-12
    assert eps["eps_batch_max"][1] > 1e-3  # member 1 does not fit
    decay = torch.tensor([0.1, 0.1], dtype=DOUBLE)
    eps = eps_batch(params, x, y, 2, "mse", 8, decay, [0, 1], epochs=1)
    expected = 0.1 * params["W1"][0].norm().item()
    assert eps["eps_batch_max"][0].item() == pytest.approx(expected, rel=1e-10)
    assert eps["eps_batch_mean"][0].item() == pytest.approx(expected, rel=1e-10)


def test_eps_batch_max_is_at_least_its_mean_and_full_batch_is_smaller():
    params = two_layer(members=3)
    x = torch.randn(64, 5, dtype=DOUBLE, generator=torch.Generator().manual_seed(4))
    y = torch.randn(64, 1, dtype=DOUBLE, generator=torch.Generator().manual_seed(5))
    eps = eps_batch(params, x, y, 2, "mse", 4, torch.full((3,), 1e-3, dtype=DOUBLE), [0, 1, 2], 3)
    assert (eps["eps_batch_max"] >= eps["eps_batch_mean"]).all()
    assert (eps["eps_full"] <= eps["eps_batch_max"]).all()  # the norm is convex


def test_theorem_26_constant_and_vacuity():
    result = theorem_26(
        torch.tensor([0.5, 0.5]), torch.tensor([0.01, 0.0]), 16, torch.tensor([4.0, 4.0])
    )
    assert result["thm26_bound"][0].item() == pytest.approx(2 * 16 * 0.5 / 0.005)
    assert result["thm26_ratio"][0].item() == pytest.approx(3200 / 4.0)
    assert torch.isinf(result["thm26_bound"][1])


def test_unit_states_of_constructed_nets():
    x = torch.randn(50, 3, dtype=DOUBLE, generator=torch.Generator().manual_seed(6))
    weight = torch.zeros(4, 4, 3, dtype=DOUBLE)
    bias = torch.zeros(4, 4, dtype=DOUBLE)
    weight[0] = 0.01  # member 0: tiny weights, large positive bias: every unit always active
    bias[0] = 10.0
    weight[1] = 0.01  # member 1: large negative bias: every unit dead
    bias[1] = -10.0
    weight[2, 0] = 1.0  # member 2: units 1-3 collapsed to zero, unit 0 a plain ReLU of x
    weight[3] = torch.randn(4, 3, dtype=DOUBLE, generator=torch.Generator().manual_seed(7))
    weight[3, 0] = 1e-9 * x[0] / x[0].norm()  # shrunk by weight decay: collapsed, not a kink
    bias[3, 1] = -(weight[3, 1] @ x[4])  # unit 1 sits exactly at its kink at x_4
    states, live = unit_states({"W1": weight, "b1": bias}, x)
    assert states["units_linear"][0] == 1 and states["units_dead"][0] == 0
    assert states["units_dead"][1] == 1 and states["units_linear"][1] == 0
    assert not live[1].any() and live[0].all()
    assert states["units_collapsed"][2] == pytest.approx(0.75)
    assert live[2].tolist() == [True, False, False, False]
    assert states["units_zero_input"][2] == 0  # collapsed units are not "at their kink"
    assert states["units_collapsed"][3] == pytest.approx(0.25)
    assert states["units_zero_input"][3] == pytest.approx(0.25)  # unit 1 only


def test_decay_weights():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 1))
    np.testing.assert_array_equal(decay_weights("constant", x, y), np.ones(30))
    for form in ("input_norm", "target_abs"):
        weights = decay_weights(form, x, y)
        assert weights.mean() == pytest.approx(1.0) and weights.std() > 0.1
    with pytest.raises(ValueError, match="regression"):
        decay_weights("target_abs", x, rng.integers(0, 3, 30))


def test_eps_batch_equals_the_batch_by_batch_definition():
    """Chunked Gram evaluation against the definition: every batch of freshly shuffled epochs
    (seeded as eps_batch seeds them), the last one smaller, with a data-dependent decay."""
    from rankbias.paper_a import EPS_SAMPLES, EPS_SEED_OFFSET

    generator = torch.Generator().manual_seed(5)
    params = two_layer(members=3, n=5, m=6)
    n_train, batch = 2 * EPS_SAMPLES + 13, 16  # two chunks and a last batch of 13 samples
    x = torch.randn(n_train, 5, dtype=DOUBLE, generator=generator)
    y = torch.randn(n_train, 1, dtype=DOUBLE, generator=generator)
    wd = torch.tensor([0.0, 0.01, 0.1], dtype=DOUBLE)
    weights = torch.rand(3, n_train, dtype=DOUBLE, generator=generator) + 0.5
    seeds = [7, 7, 8]
    got = eps_batch(params, x, y, 2, "mse", batch, wd, seeds, 2, weights)
    orders = [torch.Generator().manual_seed(s + EPS_SEED_OFFSET) for s in seeds]
    norms = []
    for _ in range(2):
        order = torch.stack([torch.randperm(n_train, generator=g) for g in orders])
        for start in range(0, n_train, batch):
            index = order[:, start : start + batch]
            gradient = first_layer_gradient(params, x[index], y[index], 2, "mse")
            batch_wd = wd * torch.gather(weights, 1, index).mean(dim=1)
            norms.append((gradient + batch_wd.view(-1, 1, 1) * params["W1"]).flatten(1).norm(dim=1))
    norms = torch.stack(norms, dim=1)
    assert torch.allclose(got["eps_batch_max"], norms.amax(dim=1), rtol=1e-10)
    assert torch.allclose(got["eps_batch_mean"], norms.mean(dim=1), rtol=1e-10)


def near_stationary_targets(params, x, wd, distance, generator) -> torch.Tensor:
    """Targets y for which V = W1 is within `distance`·wd·||V|| of a stationary point of the
    regularized full-batch squared loss: the data gradient G = Σ_i r_i (U ⊙ mask_i)ᵀ x_i / N is
    linear in the residuals r = f(x) − y, so r is solved for G = −wd·V (least squares, N ≥ m·n
    unknowns) and perturbed."""
    params64 = {name: value.double() for name, value in params.items()}
    x64 = x.double()
    outputs = forward(params64, x64, 2)  # [M, N, 1]
    active = (x64 @ params64["W1"].mT + params64["b1"].unsqueeze(1) > 0).double()  # [M, N, m]
    targets = []
    for member in range(len(wd)):
        per_sample = active[member] * params64["W2"][member, 0]  # [N, m]
        design = (per_sample.unsqueeze(2) * x64.unsqueeze(1)).flatten(1).T / len(x)  # [m·n, N]
        goal = -float(wd[member]) * params64["W1"][member].flatten()
        # gelsd: the minimum-norm solution (SVD), unique and continuous in the data; the
        # default gelsy's pivoted QR picked a basic solution of another size in one full-suite
        # run, and the float32 targets then lost the cancellation (ratio 0.68 instead of 1e-4)
        residual = torch.linalg.lstsq(design, goal.unsqueeze(1), driver="gelsd").solution[:, 0]
        nudge = torch.randn(len(x), dtype=DOUBLE, generator=generator)
        nudge *= distance * goal.norm() / (design @ nudge).norm()
        targets.append(outputs[member, :, 0] - residual - nudge)
    return torch.stack(targets)


def test_eps_batch_at_full_batch_equals_eps_full_near_stationarity():
    """B = N: every "mini-batch" is the whole training set, so eps_batch_max = eps_full to 1e-6,
    also near a stationary point, where G and wd·V cancel to 1e-4 of their size (a float32
    expansion ||G||² + 2wd<G,V> + wd²||V||² keeps no digit of that)."""
    generator = torch.Generator().manual_seed(11)
    params = init_params(Arch(8, 6, 2, 1), [0], torch.float32, torch.device("cpu"))
    n_train = 300
    x = torch.randn(n_train, 8, generator=generator)
    wd = torch.tensor([0.05], dtype=torch.float32)
    y = near_stationary_targets(params, x, wd, 1e-4, generator)[0].unsqueeze(1).float()
    got = eps_batch(params, x, y, 2, "mse", n_train, wd, [0], 2)
    ratio = got["eps_full"] / (wd.double() * params["W1"].double().flatten(1).norm(dim=1))
    assert (ratio < 1e-3).all(), ratio
    torch.testing.assert_close(got["eps_batch_max"], got["eps_full"], rtol=1e-6, atol=0)
    torch.testing.assert_close(got["eps_batch_mean"], got["eps_full"], rtol=1e-6, atol=0)
