import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from rankbias.paper_b import bound_columns, galanti_bound, rank_correlations, spearman
from rankbias.train import lr_factor


def test_galanti_bound_formula_and_convention():
    bound = galanti_bound(32, torch.tensor([0.1, 0.1]), torch.tensor([0.01, 0.0]), eps=0.1)
    # λ = wd/2 = 0.005: 32·log(20) / (2·0.1·0.005)
    assert bound[0].item() == pytest.approx(32 * math.log(20) / 0.001)
    assert math.isinf(bound[1].item())


def test_eps_rank_and_count_on_a_diagonal():
    sigma = torch.tensor([[3.0, 2.0, 1.0, 0.0]])  # ||W||_F = sqrt(14)
    columns = bound_columns(sigma, 16, torch.tensor([0.1]), torch.tensor([0.01]))
    normalised = np.array([3.0, 2.0, 1.0, 0.0]) / math.sqrt(14)
    for eps in (0.1, 0.3, 0.5):
        assert columns[f"sv_above_{eps}"].item() == (normalised > eps).sum()
    # residual after rank r: sqrt(5/14) = 0.598, sqrt(1/14) = 0.267, 0 for r = 0, 1, 2, 3
    assert columns["rank_eps_0.5"].item() == 2
    assert columns["rank_eps_0.3"].item() == 2
    assert columns["rank_eps_0.1"].item() == 3


def test_lr_milestones_follow_multistep_decay():
    spec = {"lr_milestones": [10, 20], "lr_gamma": 0.5}
    assert [lr_factor(spec, e) for e in (1, 10, 11, 20, 21, 30)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert lr_factor({}, 50) == 1


def grid_table(rank_of) -> pd.DataFrame:
    """Two hidden layers + output of a depth-3 net over B × lr × wd, two seeds, all ok."""
    rows = []
    for batch, lr, wd, seed in itertools.product((8, 32, 128), (0.01, 0.1), (0.0, 0.01), (0, 1)):
        for layer in (1, 2, 3):
            rank = rank_of(batch, lr, wd, layer) + 0.1 * seed
            rows.append(
                dict(
                    dataset="d",
                    width=16,
                    depth=3,
                    batch_size=batch,
                    lr=lr,
                    weight_decay=wd,
                    seed=seed,
                    layer=layer,
                    status="ok",
                    rank_galanti=rank,
                    effective_rank=rank,
                )
            )
    return pd.DataFrame(rows)


def test_rank_correlations_per_layer_split_by_weight_decay():
    # Paper B's picture with wd > 0: rank rises with B, falls with lr; flat in B without wd.
    table = grid_table(lambda b, lr, wd, layer: (b if wd > 0 else 10) - 100 * lr * layer)
    result = rank_correlations(table).set_index(["layer", "subset", "axis", "metric"])
    assert set(result.index.get_level_values("layer")) == {1, 2}  # the output layer is apart
    with_wd = result.loc[(1, "wd > 0", "batch_size", "rank_galanti")]
    assert with_wd["rho"] == pytest.approx(
        np.corrcoef([1, 1, 2, 2, 3, 3], [2, 1, 4, 3, 6, 5])[0, 1]
    )
    assert with_wd["settings"] == 6 and with_wd["agrees"] == "yes"
    # inside each lr slice rank rises strictly with B: rho 1 in both slices
    assert with_wd["rho_within"] == pytest.approx(1) and with_wd["slices"] == 2
    assert result.loc[(2, "wd > 0", "lr", "rank_galanti")]["agrees"] == "weak"
    without_wd = result.loc[(1, "wd = 0", "batch_size", "rank_galanti")]
    assert without_wd["rho"] == pytest.approx(0) and without_wd["paper_b_direction"] == "≈ 0 (B5)"
    assert without_wd["agrees"] == "no"  # rank moves with lr by far more than 10 % at wd = 0
    assert ("wd = 0", "weight_decay") not in {(s, a) for _, s, a, _ in result.index}
    # A collapsed member is not evidence: excluded before the medians.
    table.loc[(table["batch_size"] == 8) & (table["lr"] == 0.01), "status"] = "collapsed"
    fewer = rank_correlations(table).set_index(["layer", "subset", "axis", "metric"])
    assert fewer.loc[(1, "wd > 0", "batch_size", "rank_galanti")]["settings"] == 5


def test_spearman_against_opposite_and_tied_orders():
    x = pd.Series([1, 2, 3, 4])
    assert spearman(x, pd.Series([8, 6, 4, 2])) == pytest.approx(-1)
    assert spearman(x, pd.Series([1, 1, 2, 2])) == pytest.approx(
        np.corrcoef([1, 2, 3, 4], [1.5, 1.5, 3.5, 3.5])[0, 1]
    )
    assert np.isnan(spearman(x, pd.Series([5, 5, 5, 5])))
