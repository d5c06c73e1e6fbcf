import math

import numpy as np
import pytest
import torch

from rankbias.paper_b import bound_columns, galanti_bound
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
