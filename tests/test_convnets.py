"""Conv nets (rankbias.convnets, convtrain): the functional grouped nets compute what torch.nn's
modules compute, members trained together equal members trained alone, a stopped job resumes
bit-identically, augmentation draws only from each member's generator, and the conv operator norm
is the norm of the unrolled map. The ResNet-18 path runs on a few synthetic CIFAR-format images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_checkpoint import assert_same_result, train_with_stops
from torch import nn

from rankbias import convnets, convtrain, data
from rankbias.convshapes import ConvArch
from rankbias.train import train_ensemble

DOUBLE = torch.float64
CPU = torch.device("cpu")
SMALL = ConvArch("cnn", (1, 12, 12), 4, (3, "M", 5, "M", 6))


def image_arrays(shape=(1, 12, 12), classes: int = 4, train: int = 48, seed: int = 0) -> dict:
    """Images whose class shifts one quadrant's brightness: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    features = int(np.prod(shape))
    arrays = {}
    for split, count in (("train", train), ("val", 8), ("test", 16)):
        labels = rng.integers(0, classes, count)
        images = rng.normal(size=(count, *shape))
        images[:, :, : shape[1] // 2, : shape[2] // 2] += labels[:, None, None, None]
        arrays[f"x_{split}"], arrays[f"y_{split}"] = images.reshape(count, features), labels
    return arrays


def conv_spec(arch: ConvArch = SMALL, **overrides) -> dict:
    members = [
        {"member": i, "lr": lr, "weight_decay": wd, "seed": seed, "wd_function": "constant"}
        for i, (seed, lr, wd) in enumerate([(0, 0.05, 0.01), (1, 0.1, 0.0), (2, 0.05, 0.05)])
    ]
    spec = {
        "experiment": "test",
        "group": "g",
        "dataset": "images",
        "loss": "ce",
        "arch": arch.name,
        "channels": list(arch.channels),
        "image_shape": list(arch.in_shape),
        "depth": arch.depth,
        "width": arch.width,
        "batch_norm": True,
        "batch_size": 8,
        "epochs": 2,
        "log_every": 1,
        "ensemble": "loop",
        "augment": {},
        "dtype": "float64",
        "device": "cpu",
        "metrics": {},
        "members": members,
    }
    return spec | overrides


def reference_cnn(arch: ConvArch, params: dict, member: int) -> nn.Module:
    """The same plain net from torch.nn modules, holding member `member`'s tensors."""
    modules: list[nn.Module] = []
    channels, index = arch.in_shape[0], 1
    for item in arch.plan():
        if item == "M":
            modules.append(nn.MaxPool2d(2))
            continue
        conv, norm = nn.Conv2d(channels, item, 3, padding=1, bias=False), nn.BatchNorm2d(item)
        conv.weight.data = params[f"W{index}"][member].clone()
        norm.weight.data, norm.bias.data = (
            params[f"{kind}{index}"][member].clone() for kind in ("bn_weight", "bn_bias")
        )
        modules += [conv, norm, nn.ReLU()]
        channels, index = item, index + 1
    head = nn.Linear(arch.layers()[-1].in_channels, arch.out_dim)
    head.weight.data, head.bias.data = params[f"W{index}"][member], params[f"b{index}"][member]
    return nn.Sequential(*modules, nn.Flatten(), head).double()


def test_grouped_forward_equals_torch_modules_in_training_and_evaluation_mode():
    params = convnets.init_params(SMALL, [3, 4], DOUBLE, CPU)
    images = torch.randn(2, 5, 1, 12, 12, dtype=DOUBLE)
    modules = [reference_cnn(SMALL, params, member).train() for member in range(2)]
    outputs = convnets.forward(SMALL, params, images, training=True)  # moves running statistics
    for member, module in enumerate(modules):
        torch.testing.assert_close(outputs[member], module(images[member]), rtol=1e-12, atol=1e-12)
        norms = [layer for layer in module if isinstance(layer, nn.BatchNorm2d)]
        for index, norm in enumerate(norms, start=1):
            for kind in ("mean", "var"):
                ours, theirs = params[f"bn_{kind}{index}"][member], getattr(norm, f"running_{kind}")
                torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    shared = torch.randn(6, 1, 12, 12, dtype=DOUBLE)
    evaluated = convnets.forward(SMALL, params, shared)
    for member, module in enumerate(modules):
        torch.testing.assert_close(evaluated[member], module.eval()(shared), rtol=1e-12, atol=1e-12)


def test_resnet18_has_paper_b_shapes_and_parameter_count():
    arch = ConvArch("resnet18", (3, 32, 32), 10)
    layers = arch.layers()
    assert len(layers) == 21  # stem, 16 block convs, 3 projection shortcuts, head
    assert [layer.role for layer in layers].count("shortcut") == 3
    assert [layer.out_size for layer in layers if layer.role == "conv"][::4] == [32, 32, 16, 8, 4]
    params = convnets.init_params(arch, [0], torch.float32, CPU)
    trained = sum(
        value.numel()
        for name, value in params.items()
        if not name.startswith(("bn_mean", "bn_var"))
    )
    assert trained == 11_173_962  # torchvision-style CIFAR ResNet-18 (kuangliu, Paper B's code)
    images = torch.randn(1, 2, 3, 32, 32)
    assert convnets.forward(arch, params, images, training=True).shape == (1, 2, 10)


def test_members_trained_together_equal_each_trained_alone_in_both_modes():
    arrays = image_arrays()
    spec = conv_spec(augment={"crop": 2, "flip": True, "rotate": 10.0})
    together = {
        mode: train_ensemble(spec | {"ensemble": mode}, arrays, log=lambda _: None)
        for mode in ("loop", "grouped")
    }
    for index, member in enumerate(spec["members"]):
        alone = train_ensemble(spec | {"members": [member]}, arrays, log=lambda _: None)
        for name, value in alone.final.items():
            assert np.array_equal(together["loop"].final[name][index], value[0]), name
            np.testing.assert_allclose(
                together["grouped"].final[name][index], value[0], rtol=1e-9, atol=1e-10
            )


def test_a_stopped_conv_job_resumes_bit_identically(tmp_path):
    arrays = image_arrays()
    spec = conv_spec(dtype="float32", augment={"crop": 2, "flip": True})
    reference = train_ensemble(spec, arrays, log=lambda _: None)
    resumed = train_with_stops(spec, arrays, tmp_path, [3, 5])
    assert resumed.resumed  # it did stop and resume
    assert_same_result(resumed, reference)


def test_weight_decay_is_exact_and_a_diverging_member_is_frozen():
    arrays = image_arrays()
    spec = conv_spec(epochs=1)
    spec["members"][1] = spec["members"][1] | {"lr": 1e200}  # batch norm's variance overflows
    result = train_ensemble(spec, arrays, log=lambda _: None)
    assert result.diverged_epoch[1] == 1 and (result.diverged_epoch[[0, 2]] == -1).all()
    end = result.history[result.history["epoch"] == 1]
    steps = -(-len(arrays["x_train"]) // spec["batch_size"])
    for member in (0, 2):
        rate = spec["members"][member]["lr"] * spec["members"][member]["weight_decay"]
        factor = end[end["member"] == member]["init_factor"].to_numpy()
        np.testing.assert_allclose(factor, (1 - rate) ** steps, rtol=1e-12)
        assert np.isfinite(result.final["W1"][member]).all()


def test_augmentation_draws_from_each_members_generator_and_pads_with_black():
    images = torch.randn(2, 3, 1, 8, 8)
    fill = torch.tensor([-1.5])

    def run(seeds, options):
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        return convtrain.augment(images[: len(seeds)], options, generators, fill)

    options = {"crop": 3, "flip": True, "rotate": 15}
    both = run([5, 6], options)
    assert torch.equal(both, run([5, 6], options))
    assert torch.equal(both[:1], run([5], options))  # member 0's draws are its own
    assert not torch.equal(both[0], images[0])
    assert torch.equal(run([5, 6], {}), images)  # nothing asked, nothing changed
    cropped = run([5, 6], {"crop": 8})  # offsets 0..16 of a 24-pixel canvas: mostly padding
    assert (cropped == fill).float().mean() > 0.3
    flipped = run([5, 6], {"flip": True})
    for member in range(2):
        for sample in range(3):
            assert torch.equal(flipped[member, sample], images[member, sample]) or torch.equal(
                flipped[member, sample], images[member, sample].flip(-1)
            )


@pytest.mark.parametrize("stride", [1, 2])
def test_operator_norm_is_the_unrolled_convs_spectral_norm(stride):
    arch = ConvArch("cnn", (2, 7, 7), 3, (3,))
    params = convnets.init_params(arch, [0, 1], DOUBLE, CPU)
    layer = convnets.Layer(2, 3, 3, stride, 7, "conv")
    arch_norms = convnets.operator_norms(arch, params) if stride == 1 else None
    for member in range(2):
        kernel = params["W1"][member]

        def conv(flat, kernel=kernel):
            return F.conv2d(flat.view(1, 2, 7, 7), kernel, None, stride, 1).flatten()

        unrolled = torch.autograd.functional.jacobian(conv, torch.zeros(98, dtype=DOUBLE))
        exact = torch.linalg.matrix_norm(unrolled, 2)
        if arch_norms is not None:
            torch.testing.assert_close(arch_norms[1][member], exact, rtol=1e-7, atol=0)
        reshaped = torch.linalg.matrix_norm(kernel.flatten(1), 2)
        assert exact > reshaped  # the reshaped kernel's norm is not the layer's
        assert layer.out_size == (7 if stride == 1 else 4)


def test_resnet18_on_synthetic_cifar_batches_trains_and_resumes_bit_identically(
    tmp_path, cifar_mirror
):
    """Paper B's network on images that went the real way: a CIFAR-10 binary archive (synthetic,
    20 records a batch), fetched, checked and prepared as the workflow does; three SGD steps."""
    mirror, _ = cifar_mirror
    data.fetch("cifar10", tmp_path / "raw", str(mirror))
    spec = {"source": "cifar10", "train_size": 13, "test_size": 10, "validation_fraction": 0.1}
    arrays, info = data.prepare(spec, tmp_path / "raw")
    assert arrays["x_train"].shape == (12, 3072) and info["image_shape"] == [3, 32, 32]
    arch = ConvArch("resnet18", (3, 32, 32), 10)
    spec = conv_spec(arch, batch_size=4, epochs=1, dtype="float32")
    spec["members"] = spec["members"][:2]
    spec["augment"] = {"crop": 4, "flip": True, "rotate": 15}
    reference = train_ensemble(spec, arrays, log=lambda _: None)
    assert reference.final["W1"].shape == (2, 64, 3, 3, 3)
    assert reference.final["W21"].shape == (2, 10, 512)
    assert not np.array_equal(reference.final["W2"], reference.init["W2"])  # it stepped
    resumed = train_with_stops(spec, arrays, tmp_path / "checkpoint", [2])
    assert_same_result(resumed, reference)
