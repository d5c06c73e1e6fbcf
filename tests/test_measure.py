import numpy as np
import pandas as pd

from rankbias.measure import chance_accuracy, constant_predictor_loss, measure_job


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
    table, spectra = measure_job(spec, weights, history, np.array([-1, -1, 3]), arrays)
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
