"""Checkpoint audit (`python -m rankbias audit`): models the test builds and trains with plain
torch.nn, saved as safetensors or state dicts, measured without training, every number checked
against an independent computation."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from rankbias import data
from rankbias.audit import AuditError, Training, audit, load_state
from rankbias.cli import main


def effective_rank(matrix: np.ndarray) -> float:
    sigma = np.linalg.svd(matrix, compute_uv=False)
    share = sigma / sigma.sum()
    return float(np.exp(-(share * np.log(share)).sum()))


def trained_mlp(tmp_path, steps: int = 60, lr: float = 0.1, wd: float = 0.05):
    """A 20-64-32-3 ReLU MLP trained by torch.optim.SGD (coupled decay) on a prepared table."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 20))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(20)])
    frame["label"] = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    frame.to_csv(tmp_path / "points.csv", index=False)
    spec = {"source": "table", "path": str(tmp_path / "points.csv"), "target": "label"}
    spec["task"] = "classification"
    from rankbias.tables import fetch_table

    fetch_table(spec, tmp_path / "raw")
    arrays, info = data.prepare(spec, tmp_path / "raw")
    data.write_prepared(arrays, info, str(tmp_path / "points.npz"), str(tmp_path / "points.json"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(20, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 3),
    ).double()
    save_file(model.state_dict(), str(tmp_path / "init.safetensors"))
    optimiser = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)
    x_train = torch.as_tensor(arrays["x_train"])
    y_train = torch.as_tensor(arrays["y_train"])
    for step in range(steps):
        batch = slice(16 * step % 256, 16 * step % 256 + 16)
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
        optimiser.step()
    save_file(model.state_dict(), str(tmp_path / "final.safetensors"))
    return model, arrays


def test_an_mlp_checkpoint_is_measured_with_its_bounds_and_learned_part(tmp_path, capsys):
    model, arrays = trained_mlp(tmp_path)
    csv = tmp_path / "audit.csv"
    command = ["audit", str(tmp_path / "final.safetensors"), "--init"]
    command += [str(tmp_path / "init.safetensors"), "--batch-size", "16", "--lr", "0.1"]
    command += ["--weight-decay", "0.05", "--steps", "60", "--data", str(tmp_path / "points.npz")]
    main([*command, "--out-csv", str(csv)])
    printed = capsys.readouterr().out
    assert printed.startswith("| tensor | layer_kind | shape |") and "0.weight" in printed
    table = pd.read_csv(csv)
    assert list(table["tensor"]) == ["0.weight", "2.weight", "4.weight"]
    init = load_state(tmp_path / "init.safetensors")
    s_init = (1 - 0.1 * 0.05) ** 60
    for row, name in zip(table.itertuples(), table["tensor"], strict=True):
        weight = model.state_dict()[name].numpy()
        assert row.effective_rank == pytest.approx(effective_rank(weight), rel=1e-10)
        learned = weight - s_init * init[name].numpy()
        assert row.effective_rank_learned == pytest.approx(effective_rank(learned), rel=1e-10)
        assert row.init_factor == pytest.approx(s_init) and row.decay_horizon == pytest.approx(0.3)
    # Theorem 3.3 with λ = wd/2: B·log(2/ε)/(2·lr·λ) for a dense layer
    assert table["galanti_bound_0.1"].iloc[0] == pytest.approx(16 * math.log(20) / (0.1 * 0.05))
    with torch.no_grad():  # the chain read from the state dict computes what the model computes
        predicted = model(torch.as_tensor(arrays["x_train"])).argmax(dim=1).numpy()
    assert table["train_acc"].iloc[0] == pytest.approx((predicted == arrays["y_train"]).mean())
    assert (table["bound_grs"] > 0).all() and table["bound_grs"].nunique() == 1


def test_a_cnn_checkpoint_reshapes_kernels_as_paper_b_and_needs_positions_for_its_bound(
    tmp_path, capsys
):
    torch.manual_seed(1)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 14 * 14, 10),
    )
    save_file(cnn.state_dict(), str(tmp_path / "cnn.safetensors"))
    csv = tmp_path / "cnn.csv"
    command = ["audit", str(tmp_path / "cnn.safetensors"), "--batch-size", "8", "--lr", "0.05"]
    main([*command, "--weight-decay", "0.1", "--positions", "0.weight=784", "--out-csv", str(csv)])
    printed = capsys.readouterr().out
    assert "| 0.weight | conv | 8×1×3×3 |" in printed
    assert "4.weight (--positions NAME=N)" in printed or "output positions" in printed
    table = pd.read_csv(csv).set_index("tensor")
    assert list(table.index) == ["0.weight", "4.weight", "7.weight"]  # BatchNorm's 1-D left out
    kernel = cnn.state_dict()["4.weight"].numpy().reshape(16, -1)  # out × in·k·k
    assert table.loc["4.weight", "cols"] == 72
    assert table.loc["4.weight", "effective_rank"] == pytest.approx(effective_rank(kernel))
    dense_bound = 8 * math.log(20) / (0.05 * 0.1)
    assert table.loc["0.weight", "galanti_bound_0.1"] == pytest.approx(784 * dense_bound)
    assert math.isnan(table.loc["4.weight", "galanti_bound_0.1"])  # m_l not given
    assert table.loc["7.weight", "galanti_bound_0.1"] == pytest.approx(dense_bound)


def test_a_nested_state_dict_is_read_with_weights_only(tmp_path):
    layer = torch.nn.Linear(5, 4)
    torch.save({"epoch": 3, "model": layer.state_dict()}, tmp_path / "run.pt")
    table, spectra, note = audit(load_state(tmp_path / "run.pt"), "run.pt", Training())
    assert list(table["tensor"]) == ["model.weight"] and spectra["model.weight"].shape == (4,)
    assert "needs --batch-size" in note


def test_a_pickled_module_is_refused_with_the_safe_alternative(tmp_path):
    torch.save(torch.nn.Linear(5, 4), tmp_path / "module.pt")
    with pytest.raises(AuditError) as refused:
        load_state(tmp_path / "module.pt")
    message = str(refused.value)
    assert "refused" in message and "arbitrary unpickling" in message
    assert "torch.nn.modules.linear.Linear" in message and "save_file" in message


def test_no_weight_and_non_finite_values_are_refused_by_tensor(tmp_path):
    save_file({"bn.weight": torch.ones(4), "bn.bias": torch.zeros(4)}, str(tmp_path / "a.st"))
    (tmp_path / "a.st").rename(tmp_path / "bn.safetensors")
    with pytest.raises(AuditError, match=r"no 2-D weight or conv kernel.*bn\.bias \(4,\)"):
        audit(load_state(tmp_path / "bn.safetensors"), "bn.safetensors", Training())
    weight = torch.zeros(3, 4)
    weight[1, 2] = float("nan")
    with pytest.raises(
        AuditError, match=r"tensor 'fc.weight' \(3, 4\) has 1 non-finite .*\(1, 2\)"
    ):
        audit({"fc.weight": weight}, "fc.safetensors", Training())
