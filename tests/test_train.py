"""The ensemble trainer against the textbook loop: nn.Module + torch.optim.SGD, one model alone."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rankbias.models import Arch, forward, init_params
from rankbias.train import DATA_SEED_OFFSET, decay_weights, schedule, train_ensemble


def toy_arrays(loss: str, n_train: int = 60, n_features: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + 20, n_features))
    if loss == "ce":
        y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    else:
        y = np.sin(x[:, :1]) + 0.1 * rng.standard_normal((len(x), 1))
    return {
        "x_train": x[:n_train],
        "y_train": y[:n_train],
        "x_test": x[n_train:],
        "y_test": y[n_train:],
    }


def spec_for(
    members: list[dict],
    loss: str,
    depth: int = 2,
    batch_size: int = 8,
    epochs: int = 3,
    dtype: str = "float64",
    batch_norm: bool = False,
) -> dict:
    return {
        "loss": loss,
        "depth": depth,
        "width": 7,
        "batch_size": batch_size,
        "epochs": epochs,
        "log_every": 1,
        "dtype": dtype,
        "device": "cpu",
        "output_bias": False,
        "batch_norm": batch_norm,
        "bias_decay": True,
        "members": [{"member": i, **m} for i, m in enumerate(members)],
    }


def reference_training(
    arrays: dict, spec: dict, member: dict, v_weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """One model trained alone the usual way, from the same initialisation and data order.

    With `v_weights`, V = W1 is decayed by wd·mean(v_weights over the batch) instead of wd."""
    x = torch.as_tensor(arrays["x_train"])
    y = torch.as_tensor(arrays["y_train"])
    out_dim = int(y.max()) + 1 if spec["loss"] == "ce" else y.shape[1]
    arch = Arch(x.shape[1], spec["width"], spec["depth"], out_dim, batch_norm=spec["batch_norm"])
    start = init_params(arch, [member["seed"]], torch.float64, torch.device("cpu"))
    layers: list[nn.Module] = []
    for layer, (fan_out, fan_in) in enumerate(arch.layer_shapes(), start=1):
        linear = nn.Linear(fan_in, fan_out, bias=arch.has_bias(layer)).double()
        with torch.no_grad():
            linear.weight.copy_(start[f"W{layer}"][0])
            if linear.bias is not None:
                linear.bias.copy_(start[f"b{layer}"][0])
        layers.append(linear)
        if arch.batch_norm and layer < arch.depth:
            layers.append(nn.BatchNorm1d(fan_out).double())
        layers.append(nn.ReLU())
    model = nn.Sequential(*layers[:-1])
    decay = 0.0 if v_weights is not None else member["weight_decay"]
    optimiser = torch.optim.SGD(model.parameters(), lr=member["lr"], momentum=0, weight_decay=decay)
    generator = torch.Generator().manual_seed(member["seed"] + DATA_SEED_OFFSET)
    for _ in range(spec["epochs"]):
        order = torch.randperm(len(x), generator=generator)
        for begin in range(0, len(x), spec["batch_size"]):
            index = order[begin : begin + spec["batch_size"]]
            out = model(x[index])
            if spec["loss"] == "ce":
                loss = F.cross_entropy(out, y[index])
            else:
                loss = 0.5 * (out - y[index]).square().sum(dim=1).mean()
            optimiser.zero_grad()
            loss.backward()
            if v_weights is not None:
                with torch.no_grad():
                    for parameter in model.parameters():
                        batch_mean = float(v_weights[index.numpy()].mean())
                        factor = batch_mean if parameter is layers[0].weight else 1.0
                        parameter.grad += member["weight_decay"] * factor * parameter
            optimiser.step()
    linears = [m for m in model if isinstance(m, nn.Linear)]
    norms = [m for m in model if isinstance(m, nn.BatchNorm1d)]
    weights = {}
    for layer, linear in enumerate(linears, start=1):
        weights[f"W{layer}"] = linear.weight.detach().numpy()
        if linear.bias is not None:
            weights[f"b{layer}"] = linear.bias.detach().numpy()
    for layer, norm in enumerate(norms, start=1):
        weights[f"bn_weight{layer}"] = norm.weight.detach().numpy()
        weights[f"bn_bias{layer}"] = norm.bias.detach().numpy()
        weights[f"bn_mean{layer}"] = norm.running_mean.numpy()
        weights[f"bn_var{layer}"] = norm.running_var.numpy()
    model.eval()  # evaluation uses the running statistics
    with torch.no_grad():
        weights["test_outputs"] = model(torch.as_tensor(arrays["x_test"])).numpy()
    return weights


MEMBERS = [
    {"lr": 0.05, "weight_decay": 0.0, "seed": 0},
    {"lr": 0.02, "weight_decay": 0.01, "seed": 1},
    {"lr": 0.1, "weight_decay": 0.003, "seed": 2},
    {"lr": 0.05, "weight_decay": 0.03, "seed": 0},
]


@pytest.mark.parametrize(
    "loss,depth,batch_size,batch_norm",
    [("mse", 2, 8, False), ("ce", 2, 7, False), ("mse", 3, 16, False), ("ce", 4, 7, True)],
)
def test_each_member_equals_the_model_trained_alone(loss, depth, batch_size, batch_norm):
    """Weights, biases, batch-norm parameters and running statistics, and the evaluation-mode
    outputs on the test inputs, all to 1e-10 in float64."""
    arrays = toy_arrays(loss)
    spec = spec_for(MEMBERS, loss, depth=depth, batch_size=batch_size, batch_norm=batch_norm)
    result = train_ensemble(spec, arrays, log=lambda _: None)
    x_test = torch.as_tensor(arrays["x_test"])
    params = {name: torch.as_tensor(value) for name, value in result.final.items()}
    outputs = forward(params, x_test, depth).numpy()
    for index, member in enumerate(MEMBERS):
        alone = reference_training(arrays, spec, member)
        assert set(alone) - {"test_outputs"} == set(result.final)
        ensemble = {**result.final, "test_outputs": outputs}
        for name, weight in alone.items():
            np.testing.assert_allclose(
                ensemble[name][index], weight, rtol=0, atol=1e-10, err_msg=f"member {index} {name}"
            )


def test_data_dependent_weight_decay_of_v_matches_a_hand_written_reference():
    arrays = toy_arrays("mse")
    members = [
        {**m, "wd_function": form}
        for m, form in zip(
            MEMBERS, ["input_norm", "constant", "target_abs", "input_norm"], strict=True
        )
    ]
    spec = spec_for(members, "mse")
    result = train_ensemble(spec, arrays, log=lambda _: None)
    for index, member in enumerate(members):
        weights = decay_weights(member["wd_function"], arrays["x_train"], arrays["y_train"])
        alone = reference_training(arrays, spec, member, weights)
        alone.pop("test_outputs")
        for name, weight in alone.items():
            np.testing.assert_allclose(result.final[name][index], weight, rtol=0, atol=1e-10)
    constant = train_ensemble(spec_for(MEMBERS[3:], "mse"), arrays, log=lambda _: None)
    assert not np.allclose(constant.final["W1"][0], result.final["W1"][3], rtol=0, atol=1e-6)


def test_steps_round_up_to_whole_epochs_and_default_logging():
    assert schedule({"batch_size": 10, "steps": 25, "epochs": None}, n_train=100) == (3, 1)
    assert schedule({"batch_size": 10, "epochs": 60}, n_train=100) == (60, 10)
    assert schedule({"batch_size": 10, "epochs": 60, "log_every": 7}, n_train=100) == (60, 7)


def test_member_does_not_depend_on_its_ensemble():
    arrays = toy_arrays("ce")
    together = train_ensemble(spec_for(MEMBERS, "ce"), arrays, log=lambda _: None)
    alone = train_ensemble(spec_for(MEMBERS[2:3], "ce"), arrays, log=lambda _: None)
    for name, weight in alone.final.items():
        np.testing.assert_allclose(together.final[name][2], weight[0], rtol=0, atol=1e-12)


def test_diverging_member_is_frozen_and_the_others_go_on():
    arrays = toy_arrays("mse")
    healthy = MEMBERS[:2]
    diverging = {"lr": 1e6, "weight_decay": 0.0, "seed": 5}
    mixed = train_ensemble(spec_for([*healthy, diverging], "mse"), arrays, log=lambda _: None)
    alone = train_ensemble(spec_for(healthy, "mse"), arrays, log=lambda _: None)
    assert list(mixed.diverged_epoch) == [-1, -1, 1]
    for name in alone.final:
        np.testing.assert_allclose(mixed.final[name][:2], alone.final[name], rtol=0, atol=1e-12)
    last = mixed.history[mixed.history["epoch"] == 3]
    assert last[last["member"] == 2]["diverged"].all()
    assert not last[last["member"] < 2]["diverged"].any()


@pytest.mark.parametrize(
    "loss,depth,batch_norm", [("mse", 2, False), ("mse", 4, True), ("ce", 3, False)]
)
def test_a_frozen_member_does_not_move(loss, depth, batch_norm):
    """After the epoch it diverged in, two more epochs leave every one of its arrays as it was,
    non-finite entries included (its activations may overflow; its steps must stay zero)."""
    arrays = toy_arrays(loss)
    members = [MEMBERS[0], {"lr": 1e6, "weight_decay": 0.01, "seed": 5}]
    short, long = (
        train_ensemble(
            spec_for(members, loss, depth=depth, epochs=epochs, batch_norm=batch_norm),
            arrays,
            log=lambda _: None,
        )
        for epochs in (1, 3)
    )
    assert list(short.diverged_epoch) == [-1, 1] and list(long.diverged_epoch) == [-1, 1]
    for name in short.final:
        np.testing.assert_array_equal(short.final[name][1], long.final[name][1], err_msg=name)
    assert not np.allclose(short.final["W1"][0], long.final["W1"][0])


def test_training_is_deterministic_in_float32():
    arrays = toy_arrays("ce")
    spec = spec_for(MEMBERS, "ce", dtype="float32")
    first = train_ensemble(spec, arrays, log=lambda _: None)
    second = train_ensemble(spec, arrays, log=lambda _: None)
    for name in first.final:
        np.testing.assert_array_equal(first.final[name], second.final[name])
    assert first.history.equals(second.history)


def test_history_logs_every_layer_at_every_logged_epoch():
    arrays = toy_arrays("mse")
    result = train_ensemble(spec_for(MEMBERS, "mse", depth=3, epochs=4), arrays, log=lambda _: None)
    history = result.history
    assert sorted(history["epoch"].unique()) == [0, 1, 2, 3, 4]
    assert len(history) == 5 * 3 * len(MEMBERS)
    for column in (
        "train_loss",
        "test_loss",
        "fro_norm",
        "rank_galanti",
        "effective_rank",
        "residual_2",
        "weight_decay",
        "lr",
        "seed",
    ):
        assert column in history
    start = history[history["epoch"] == 0]
    assert (start.groupby("seed")["train_loss"].nunique() == 1).all()  # same seed, same init


def test_weight_decay_shrinks_weights_without_data_gradient():
    arrays = toy_arrays("mse")
    members = [
        {"lr": 0.05, "weight_decay": 0.0, "seed": 0},
        {"lr": 0.05, "weight_decay": 0.5, "seed": 0},
    ]
    result = train_ensemble(spec_for(members, "mse", epochs=5), arrays, log=lambda _: None)
    norms = np.linalg.norm(result.final["W1"].reshape(2, -1), axis=1)
    assert norms[1] < 0.8 * norms[0]


def test_batch_norm_refuses_a_mini_batch_of_one_sample():
    arrays = toy_arrays("ce", n_train=61)  # batch 6 leaves one sample in the last batch
    spec = spec_for(MEMBERS[:1], "ce", depth=3, batch_size=6, batch_norm=True)
    with pytest.raises(ValueError, match="batch_size 6 with 61 training samples"):
        train_ensemble(spec, arrays, log=lambda _: None)


def test_non_finite_data_are_refused_before_training():
    arrays = toy_arrays("mse")
    arrays["x_test"][3, 1] = np.nan
    with pytest.raises(ValueError, match="x_test holds non-finite values"):
        train_ensemble(spec_for(MEMBERS[:1], "mse"), arrays, log=lambda _: None)


def test_in_training_logging_is_a_hook():
    """Paper A's eps_batch comes from the default hook; without hooks the history has no eps
    columns, and a hook of one's own adds its columns to the first layer's rows only."""
    arrays = toy_arrays("mse")
    spec = spec_for(MEMBERS[:2], "mse", epochs=2)
    default = train_ensemble(spec, arrays, log=lambda _: None).history
    bare = train_ensemble(spec, arrays, log=lambda _: None, hooks=[]).history
    first_layer = default["layer"] == 1
    assert default.loc[first_layer, "eps_batch_max"].notna().all()
    assert default.loc[~first_layer, "eps_batch_max"].isna().all() and "eps_batch_max" not in bare

    def first_norm(setup, params, epoch):
        return {"w1_norm": params["W1"].flatten(1).norm(dim=1) + 0 * epoch}

    custom = train_ensemble(spec, arrays, log=lambda _: None, hooks=[first_norm]).history
    first = custom[custom["layer"] == 1]
    np.testing.assert_allclose(first["w1_norm"], first["fro_norm"], rtol=1e-6)
    assert custom.loc[custom["layer"] == 2, "w1_norm"].isna().all()
    assert set(custom) - {"w1_norm"} == set(bare)
