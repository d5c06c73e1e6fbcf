"""Weight decay is applied exactly at every lr·wd (rankbias.decay), and the learned part and the
decay controls it records are what science.md defines."""

import math

import numpy as np
import pytest
import torch
from test_train import MEMBERS, spec_for, toy_arrays

from rankbias.decay import FOLD_BELOW, ExactDecay, fold_interval
from rankbias.train import train_ensemble


def zero_gradient_arrays(n_train: int) -> dict:
    """x = 0: the data gradient of V = W1 (deltaᵀ x) is exactly zero, only decay moves V."""
    return {
        "x_train": np.zeros((n_train, 2)),
        "y_train": np.zeros((n_train, 1)),
        "x_test": np.zeros((4, 2)),
        "y_test": np.zeros((4, 1)),
    }


def decay_steps(rate: float) -> int:
    """Steps for a decay 1 − (1 − rate)^T of at least 1e-3 (and at least 100 steps)."""
    return max(100, math.ceil(-math.log1p(-1e-3) / -math.log1p(-rate)) + 1)


@pytest.mark.parametrize("rate", [1e-6, 1e-4, 1e-2])
def test_decay_without_gradient_is_exact_at_every_lr_wd(rate):
    """Through the trainer: 1 − V_T/V_0 = 1 − (1 − lr·wd)^T to 1 % of itself, with T large
    enough for a decay of at least 1e-3 (a float32 factor (1 − lr·wd) is off by up to 3 % at
    lr·wd = 1e-6)."""
    lr, n_train = 0.01, 100
    spec = spec_for(
        [{"lr": lr, "weight_decay": rate / lr, "seed": 0}],
        "mse",
        batch_size=1,
        epochs=math.ceil(decay_steps(rate) / n_train),
        dtype="float32",
    )
    spec.update(width=3, log_every=spec["epochs"], metrics={"eps_log_epochs": 0})
    steps = spec["epochs"] * n_train
    result = train_ensemble(spec, zero_gradient_arrays(n_train), log=lambda _: None)
    expected = 1 - (1 - rate) ** steps
    measured = 1 - result.final["W1"].astype(np.float64) / result.init["W1"]
    assert expected >= 1e-3
    np.testing.assert_allclose(measured, expected, rtol=0.01)
    history = result.history
    last = history[(history["epoch"] == spec["epochs"]) & (history["layer"] == 1)]
    np.testing.assert_allclose(last["init_factor"], (1 - rate) ** steps, rtol=1e-12)
    np.testing.assert_allclose(last["decay_horizon"], rate * steps, rtol=1e-12)


def test_decay_of_1e_8_per_step_is_exact_over_100_000_steps():
    """lr·wd = 1e-8, where a float32 factor rounds to 1 and decays nothing: the decay state
    the trainer steps (100,000 steps of it: the trainer's own loop would take a minute) gives
    1 − (1 − 1e-8)^T to 1 %, and so does the actual tensor it yields."""
    rate = 1e-8
    params = {"W1": torch.rand(1, 3, 2) + 0.5, "W2": torch.rand(1, 1, 3) + 0.5}
    start = params["W1"].double().clone()
    decay = ExactDecay(params, torch.float32, fold_interval(rate))
    decay.set_rates(*[torch.full((1,), rate, dtype=torch.float64)] * 2)
    alive = torch.ones(1, dtype=torch.bool)
    steps = decay_steps(rate)
    for _ in range(steps):
        decay.step(alive)
        decay.after_step(params)
    expected = 1 - (1 - rate) ** steps
    assert expected >= 1e-3
    measured = 1 - decay.effective(params)["W1"].double() / start
    torch.testing.assert_close(measured, torch.full_like(measured, expected), rtol=0.01, atol=0)
    factor, horizon = decay.controls("W1")
    assert factor.item() == pytest.approx((1 - rate) ** steps, rel=1e-12)
    assert horizon.item() == pytest.approx(rate * steps, rel=1e-12)


def test_a_tiny_weight_decay_is_not_the_same_run_as_none():
    """lr = 0.01, wd = 1e-6: lr·wd = 1e-8, below float32's resolution of a factor near 1."""
    arrays = toy_arrays("mse")
    members = [{"lr": 0.01, "weight_decay": wd, "seed": 0} for wd in (0.0, 1e-6)]
    spec = spec_for(members, "mse", epochs=20, dtype="float32")
    result = train_ensemble(spec, arrays, log=lambda _: None)
    without, tiny = result.final["W1"]
    assert not np.array_equal(without, tiny)
    shrink = np.linalg.norm(tiny) / np.linalg.norm(without)
    assert 1 - 1e-4 < shrink < 1  # about 1e-8 per step over 160 steps, with the gradient's noise


def test_folding_a_small_scale_keeps_the_actual_tensor():
    """A scale below FOLD_BELOW is moved into its tensor; scale·stored is unchanged (to float32
    rounding) and the scale keeps what the float32 factor missed."""
    params = {"W1": torch.randn(2, 3, 4), "b1": torch.randn(2, 3), "W2": torch.randn(2, 1, 3)}
    decay = ExactDecay(params, torch.float32, fold_every=1)
    rate = torch.tensor([1 - FOLD_BELOW / 3, 0.1], dtype=torch.float64)
    zero = torch.zeros(2, dtype=torch.float64)
    decay.set_rates(zero, zero)
    decay.step(torch.ones(2, dtype=torch.bool), rate)  # W1 only
    before = decay.effective(params)["W1"].double()
    stored_member_1 = params["W1"][1].clone()
    decay.after_step(params)
    scale = decay.scales[decay.index["W1"]]
    assert scale[0] > FOLD_BELOW and scale[1] == 0.9
    assert torch.equal(params["W1"][1], stored_member_1)  # not folded: bit-identical
    torch.testing.assert_close(decay.effective(params)["W1"].double(), before, rtol=2e-7, atol=0)
    assert torch.equal(decay.controls("W1")[0], 1 - rate)  # the control is never folded


def test_fold_interval_bounds_the_decay_between_checks():
    assert fold_interval(0.0) > 10**15  # no decay: never
    assert fold_interval(2.0) == 1
    rate = 1e-3
    assert (1 - rate) ** fold_interval(rate) >= math.exp(-1.01)


def test_strong_decay_over_many_steps_neither_underflows_nor_drifts():
    """lr·wd = 0.05 for 2,000 steps: the scale would reach 1e-45 without folds."""
    arrays = toy_arrays("mse", n_train=64)
    members = [
        {"lr": 0.5, "weight_decay": 0.1, "seed": 0},
        {"lr": 0.5, "weight_decay": 0.0, "seed": 1},
    ]
    spec = spec_for(members, "mse", batch_size=2, epochs=63, dtype="float32")
    spec["log_every"] = 63
    result = train_ensemble(spec, arrays, log=lambda _: None)
    assert all(np.isfinite(value).all() for value in result.final.values())
    last = result.history[result.history["epoch"] == 63]
    decayed = last[last["weight_decay"] > 0]
    assert (decayed["init_factor"] < 1e-40).all() and (decayed["decay_horizon"] > 99).all()
    assert (result.diverged_epoch == -1).all()


def test_learned_part_and_movement_are_recorded_per_logged_epoch():
    arrays = toy_arrays("mse")
    result = train_ensemble(spec_for(MEMBERS, "mse", depth=3, epochs=4), arrays, log=lambda _: None)
    history = result.history
    trained = history[history["epoch"] > 0]
    for column in ("init_factor", "decay_horizon", "movement", "effective_rank_learned"):
        assert column in history and trained[column].notna().all(), column
    start = history[history["epoch"] == 0]
    assert (start["init_factor"] == 1).all() and (start["movement"] == 0).all()
    assert (start["decay_horizon"] == 0).all()
    assert (start["fro_norm_learned"] == 0).all()  # L = W_0 − 1·W_0: no spectrum
    assert start["effective_rank_learned"].isna().all()
    end = history[history["epoch"] == 4]
    for _, row in end.iterrows():
        steps = 4 * -(-60 // 8)
        assert row["init_factor"] == pytest.approx((1 - row["lr"] * row["weight_decay"]) ** steps)
    # the learned part, rebuilt from the saved arrays
    member, layer_rows = 1, end[(end["layer"] == 1)].reset_index(drop=True)
    factor = layer_rows.loc[member, "init_factor"]
    learned = result.final["W1"][member].astype(np.float64) - factor * result.init["W1"][member]
    np.testing.assert_allclose(
        np.linalg.norm(learned), layer_rows.loc[member, "fro_norm_learned"], rtol=1e-5
    )
