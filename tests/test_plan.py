import pytest

from rankbias import plan

CONFIG = {
    "datasets": {
        "housing": {"source": "california_housing"},
        "t": {"source": "teacher", "rank": 2},
    },
    "experiments": {
        "sweep": {
            "runs": [
                {
                    "dataset": "housing",
                    "loss": "mse",
                    "width": 8,
                    "batch_size": [16, 64],
                    "epochs": 2,
                    "lr": [0.01, 0.1],
                    "weight_decay": [0, 1e-3, 1e-2],
                    "seeds": [0, 1],
                    "members_per_job": 6,
                },
            ]
        },
    },
}


def test_shape_axes_split_jobs_and_members_chunk_by_seed():
    jobs = plan.jobs(CONFIG)
    assert sorted(group for _, group in jobs) == [
        "housing_L2_H8_B16_j0",
        "housing_L2_H8_B16_j1",
        "housing_L2_H8_B64_j0",
        "housing_L2_H8_B64_j1",
    ]
    first = jobs[("sweep", "housing_L2_H8_B16_j0")]
    assert {m["seed"] for m in first["members"]} == {0}
    assert len(first["members"]) == 6
    assert [m["member"] for m in jobs[("sweep", "housing_L2_H8_B16_j1")]["members"]] == list(
        range(6, 12)
    )
    assert {(m["lr"], m["weight_decay"]) for m in first["members"]} == {
        (lr, wd) for lr in (0.01, 0.1) for wd in (0.0, 1e-3, 1e-2)
    }


def test_unknown_dataset_is_named():
    config = {
        **CONFIG,
        "experiments": {
            "x": {"runs": [{**CONFIG["experiments"]["sweep"]["runs"][0], "dataset": "cifar"}]}
        },
    }
    with pytest.raises(
        plan.PlanError, match=r"experiments.x.runs\[0\].dataset: unknown data set 'cifar'"
    ):
        plan.jobs(config)


def test_two_runs_producing_the_same_job_must_be_named_apart():
    run = CONFIG["experiments"]["sweep"]["runs"][0]
    config = {**CONFIG, "experiments": {"x": {"runs": [run, {**run, "lr": 0.5}]}}}
    with pytest.raises(plan.PlanError, match="distinct `name`"):
        plan.jobs(config)
    config["experiments"]["x"]["runs"][1]["name"] = "fast"
    assert len(plan.jobs(config)) == 4 + 2  # the renamed run has one lr: one job per batch size


def test_raw_sources_skip_generated_data():
    assert plan.raw_sources(CONFIG) == ["california_housing"]


IMAGES = {
    "datasets": {"fashion": {"source": "fashion_mnist"}, "housing": CONFIG["datasets"]["housing"]}
}


def conv_config(**run) -> dict:
    base = {"dataset": "fashion", "loss": "ce", "arch": "cnn", "channels": [4, "M", 8]}
    base |= {"batch_size": 16, "steps": 10, "lr": 0.1, "weight_decay": [0, 0.1], "seeds": [0, 1]}
    return {**IMAGES, "experiments": {"conv": {"runs": [base | run]}}}


def test_a_conv_run_plans_its_net_from_the_images_it_trains_on():
    ((key, spec),) = plan.jobs(conv_config()).items()
    assert key == ("conv", "fashion_cnn_B16_j0")
    assert spec["image_shape"] == [1, 28, 28] and spec["channels"] == [4, "M", 8]
    assert (spec["depth"], spec["width"], spec["batch_norm"]) == (3, 8, True)
    assert len(spec["members"]) == 4 and spec["ensemble"] == "auto"
    resnet = plan.jobs(conv_config(arch="resnet18", channels=[]))
    assert next(iter(resnet.values()))["depth"] == 21


@pytest.mark.parametrize(
    "run,message",
    [
        ({"dataset": "housing"}, "arch: cnn needs images, but data set 'housing'"),
        ({"width": 8}, "width: set by arch cnn"),
        ({"batch_norm": False}, "batch_norm: set by arch cnn"),
        ({"channels": []}, "channels: give `channels` with arch cnn"),
        ({"arch": "vgg11"}, "channels: give `channels` with arch cnn, and only with it"),
        ({"channels": [4, "M", "M", "M", "M", "M"]}, "is pooled to nothing"),
    ],
)
def test_an_impossible_conv_run_is_refused_by_key(run, message):
    with pytest.raises(plan.PlanError, match=message) as refused:
        plan.jobs(conv_config(**run), "my.yaml")
    assert str(refused.value).startswith("my.yaml: experiments.conv.runs[0]")
