"""The worked example's inputs (README, "Audit your own claim"): your table and your models.

Writes, into the folder given (default resources/your_claim):
- `points.csv`: 1,000 rows, 16 Gaussian features and 2 constant `border` columns; the class
  (`low`, `mid`, `high`) is a tertile of a·relu(W* x) + noise with rank(W*) = 2, so a first layer
  that learns it needs two directions; `split` marks a seeded 20 % as test rows;
- `models/init_seed<s>.safetensors` and `models/wd<wd>_seed<s>.safetensors`: two-layer ReLU MLPs
  (18 → 64 → 3) "trained elsewhere": plain torch.nn + torch.optim.SGD, batch 16, lr 0.2, 3,000
  steps, wd 0 and 0.02, seeds 0-4, on the rows rankbias prepares from points.csv (the config's
  `my_points`), so the workflow's losses and bounds apply to them as they were trained.

Run from the checkout: `python config/examples/your_claim/make_example.py resources/your_claim`.
"""

from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from safetensors.torch import save_file

from rankbias import data
from rankbias.tables import fetch_table

HERE = Path(__file__).resolve().parent
ROWS, FEATURES, PLANTED_RANK, SEED = 1000, 16, 2, 0
SEEDS, WEIGHT_DECAYS, LR, BATCH, STEPS, WIDTH = range(5), (0.0, 0.02), 0.2, 16, 3000, 64


def points() -> pd.DataFrame:
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((ROWS, FEATURES))
    w_star = rng.standard_normal((8, PLANTED_RANK)) @ rng.standard_normal((PLANTED_RANK, FEATURES))
    score = np.maximum(x @ w_star.T / np.sqrt(FEATURES), 0).sum(axis=1)
    score += 0.1 * score.std() * rng.standard_normal(ROWS)
    labels = np.array(["low", "mid", "high"])[
        np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    ]
    table = pd.DataFrame(x.round(5), columns=[f"x{i}" for i in range(FEATURES)])
    table["border_0"], table["border_1"] = 0.0, 0.0  # constant: legal, recorded, left unscaled
    table["label"] = labels
    table["split"] = np.where(rng.random(ROWS) < 0.2, "test", "train")
    return table


def train_elsewhere(x_train: np.ndarray, y_train: np.ndarray, models: Path) -> None:
    """Plain PyTorch, nothing of rankbias: what a user's own training script does."""
    x, y = torch.as_tensor(x_train, dtype=torch.float32), torch.as_tensor(y_train)
    for seed in SEEDS:
        torch.manual_seed(seed)
        start = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, 3)
        )
        save_file(start.state_dict(), str(models / f"init_seed{seed}.safetensors"))
        for weight_decay in WEIGHT_DECAYS:
            model = copy.deepcopy(start)
            optimiser = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=weight_decay)
            order = torch.Generator().manual_seed(seed)
            batches = []
            for _ in range(STEPS):
                if not batches:
                    batches = list(torch.randperm(len(x), generator=order).split(BATCH))[::-1]
                rows = batches.pop()
                optimiser.zero_grad()
                torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
                optimiser.step()
            name = f"wd{weight_decay:g}_seed{seed}.safetensors"
            save_file(model.state_dict(), str(models / name))


def main(out: Path) -> None:
    (out / "models").mkdir(parents=True, exist_ok=True)
    points().to_csv(out / "points.csv", index=False)
    config = yaml.safe_load((HERE / "config.yaml").read_text())
    spec = {**config["datasets"]["my_points"], "path": str(out / "points.csv")}
    with tempfile.TemporaryDirectory() as raw:
        fetch_table(spec, raw)
        arrays, _ = data.prepare(spec, Path(raw))
    train_elsewhere(arrays["x_train"], arrays["y_train"], out / "models")
    print(f"wrote {out / 'points.csv'} and {len(list((out / 'models').iterdir()))} checkpoints")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "resources/your_claim"))
