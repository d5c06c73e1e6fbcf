import numpy as np
import pandas as pd
import pytest

from rankbias.controls import plateau
from rankbias.measure import chance_accuracy, constant_predictor_loss, measure_job, member_status


def test_constant_predictor_losses():
    y = np.array([[1.0], [3.0]])
    assert constant_predictor_loss(y, "mse") == 0.5  # (1/2) * mean squared deviation of 1
    labels = np.array([0, 0, 1, 1])
    assert np.isclose(constant_predictor_loss(labels, "ce"), np.log(2))
    assert chance_accuracy(np.array([0, 0, 0, 1])) == 0.75


def _history(train_loss, train_acc, last_epoch=5):
    members = len(train_loss)
    frames = [
        _snapshot(train_loss, train_acc, epoch, members, layer, norm)
        for layer in (1, 2)
        for epoch, norm in ((last_epoch - 1, 2.0), (last_epoch, 1.6))
    ]
    return pd.concat(frames, ignore_index=True)


def _snapshot(train_loss, train_acc, epoch, members, layer, fro_norm):
    return pd.DataFrame(
        {
            "member": range(members),
            "seed": 0,
            "lr": 0.1,
            "weight_decay": 0.0,
            "epoch": epoch,
            "layer": layer,
            "fro_norm": fro_norm,
            "effective_rank": fro_norm,
            "effective_rank_learned": fro_norm,
            "residual_2": 0.5,
            "init_factor": 0.5,
            "decay_horizon": 0.7,
            "train_loss": train_loss,
            "test_loss": train_loss,
            "train_acc": train_acc,
            "test_acc": train_acc,
        }
    )


def test_status_labels_and_tidy_rows():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    weights = {"W1": rng.standard_normal((3, 6, 4)), "W2": rng.standard_normal((3, 2, 6))}
    weights["W1"][1] = 0.0  # a dead network: rank 0, must not count as low-rank bias
    spec = {
        "experiment": "e",
        "group": "g",
        "dataset": "d",
        "loss": "ce",
        "depth": 2,
        "width": 6,
        "batch_size": 4,
        "epochs": 5,
    }
    history = _history([0.1, np.log(2), np.nan], [0.97, 0.5, np.nan])
    spec["members"] = [{"member": i, "seed": 0, "lr": 0.1, "weight_decay": 0.0} for i in range(3)]
    arrays = {"x_train": rng.standard_normal((200, 4)), "y_train": labels}
    init = {"W1": rng.standard_normal((3, 6, 4)), "W2": rng.standard_normal((3, 2, 6))}
    table, spectra = measure_job(spec, weights, init, history, np.array([-1, -1, 3]), arrays)
    first = table[table["layer"] == 1].set_index("member")
    assert list(first["status"]) == ["ok", "collapsed", "diverged"]
    assert "chance" in first.loc[1, "status_reason"]
    assert first.loc[1, "rank_galanti"] == 0
    assert len(table) == 3 * 2 and set(table["layer"]) == {1, 2}
    assert spectra["W1"].shape == (3, 4) and spectra["W2"].shape == (3, 2)
    np.testing.assert_allclose(spectra["W2"][0], np.linalg.svd(weights["W2"][0], compute_uv=False))
    assert np.isclose(first.loc[0, "gap"], 0.0)
    assert np.allclose(table["norm_ratio"], 2.0 / 1.6)
    # Paper B's bound: B·log(2/eps)/(2·lr·λ) is infinite without weight decay
    assert np.isinf(table["galanti_bound_0.1"]).all()
    sigma = np.linalg.svd(weights["W2"][0], compute_uv=False)
    second = table[(table["layer"] == 2) & (table["member"] == 0)].iloc[0]
    assert second["sv_above_0.3"] == (sigma / np.linalg.norm(sigma) > 0.3).sum()
    # the learned part W − s_T·W_0 with s_T = 0.5 from the history, and the controls
    learned = weights["W2"][0] - 0.5 * init["W2"][0]
    assert second["fro_norm_learned"] == pytest.approx(np.linalg.norm(learned))
    assert second["movement"] == pytest.approx(
        np.linalg.norm(weights["W2"][0] - init["W2"][0]) / np.linalg.norm(init["W2"][0])
    )
    assert (table["init_factor"] == 0.5).all() and (table["decay_horizon"] == 0.7).all()
    # epochs 4 and 5 both lie in the last quarter of 5: fro_norm moved 2.0 -> 1.6, i.e. 25 %
    np.testing.assert_allclose(table["plateau_change_effective_rank"], 0.25)
    assert (table["plateaued_effective_rank"] == 0).all()
    assert (table["plateaued_residual_2"] == 1).all()


def test_plateau_needs_two_logged_epochs_in_the_last_quarter():
    rows = [
        {"member": 0, "layer": 1, "epoch": epoch, "effective_rank": value}
        for epoch, value in ((0, 9.0), (6, 5.0), (8, 4.9))
    ]
    decided = plateau(pd.DataFrame(rows), "effective_rank", 0.05)
    assert decided.loc[0, "plateau_change_effective_rank"] == pytest.approx(0.1 / 4.9)
    assert decided.loc[0, "plateaued_effective_rank"] == 1
    sparse = plateau(pd.DataFrame([rows[0], rows[2]]), "effective_rank", 0.05)  # epochs 0, 8
    assert np.isnan(sparse.loc[0, "plateaued_effective_rank"])
    moving = plateau(
        pd.DataFrame(rows[:2] + [{**rows[2], "effective_rank": 4.0}]), "effective_rank", 0.05
    )
    assert moving.loc[0, "plateaued_effective_rank"] == 0


def test_a_plateau_near_zero_is_judged_against_a_floor_not_the_tiny_value():
    def residual(values):
        rows = [
            {"member": 0, "layer": 1, "epoch": epoch, "residual_2": value, "train_loss": value}
            for epoch, value in zip((0, 6, 8), values, strict=True)
        ]
        return pd.DataFrame(rows)

    # 0.012 -> 0.013 is 8 % of itself but 2 % of the 0.05 that "rank two" is judged at
    settled = plateau(residual((0.5, 0.012, 0.013)), "residual_2", 0.05)
    assert settled.loc[0, "plateau_change_residual_2"] == pytest.approx(0.001 / 0.05)
    assert settled.loc[0, "plateaued_residual_2"] == 1
    crossing = plateau(residual((0.5, 0.08, 0.03)), "residual_2", 0.05)  # still falling
    assert crossing.loc[0, "plateaued_residual_2"] == 0
    # a loss of 0.010 -> 0.008 after starting at 2.3: 2 % of 0.115 (5 % of the first loss)
    loss = plateau(residual((2.3, 0.010, 0.008)), "train_loss", 0.05)
    assert loss.loc[0, "plateau_change_train_loss"] == pytest.approx(0.002 / 0.115)
    assert loss.loc[0, "plateaued_train_loss"] == 1


def test_a_regression_net_below_r2_of_a_tenth_is_collapsed():
    final = pd.DataFrame({"train_loss": [0.5, 0.92, 0.85], "train_acc": np.nan})
    status, reason = member_status(final, np.array([-1, -1, -1]), 1.0, None)
    assert status == ["ok", "collapsed", "ok"]  # R² = 0.5, 0.08, 0.15
    assert "train R² 0.080 < 0.1" in reason[1]
