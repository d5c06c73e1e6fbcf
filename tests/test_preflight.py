"""The preflight: on the CPU here (CI has no GPU) it passes and records the device; each of its
checks fails for the fault it is there to catch, and a failure stops training with the numbers."""

import json
from dataclasses import replace

import numpy as np
import pytest

from rankbias import cli, preflight
from rankbias.train import train_ensemble

UNDER_TEST = "cpu:0"  # the CPU under another name: the faulty trainers below act on it alone


def results_by_check(record: dict) -> dict[str, bool]:
    return {check["check"]: check["passed"] for check in record["checks"]}


def test_the_preflight_passes_on_the_cpu_and_records_what_ran_it():
    record = preflight.run_preflight("cpu")
    assert record["passed"] and len(record["checks"]) == 12  # 4 checks, 3 problems
    assert all(check["value"] <= check["tolerance"] for check in record["checks"])
    assert record["device"] == "cpu" and record["torch"].startswith("2.")
    assert "compare the CPU with itself" in record["note"]


def rounded_to_tf32(final: dict) -> dict:
    """Weights as a TF32 matmul would leave them: 10 bits of mantissa."""
    out = {}
    for name, value in final.items():
        mantissa, exponent = np.frexp(value)
        out[name] = np.ldexp(np.round(mantissa * 2**11) / 2**11, exponent).astype(value.dtype)
    return out


def tf32_device(spec, arrays, **kwargs):
    result = train_ensemble(spec, arrays, **kwargs)
    if spec["device"] == UNDER_TEST:
        return replace(result, final=rounded_to_tf32(result.final))
    return result


def leaking_members(spec, arrays, **kwargs):
    """Members that see a little of each other (a broadcasting bug): the mean of the ensemble's
    first layer added to every member."""
    result = train_ensemble(spec, arrays, **kwargs)
    final = dict(result.final)
    final["W1"] = final["W1"] + 1e-6 * final["W1"].mean(axis=0, keepdims=True)
    return replace(result, final=final)


def lossy_resume(spec, arrays, checkpointer=None, **kwargs):
    """A resume that loses the data order: a resumed run trains on in a new order."""
    result = train_ensemble(spec, arrays, checkpointer=checkpointer, **kwargs)
    if checkpointer is not None and checkpointer.stop_after is None:
        final = {name: value * (1 + 1e-7) for name, value in result.final.items()}
        return replace(result, final=final)
    return result


@pytest.mark.parametrize(
    "trainer, failing",
    [
        (tf32_device, "agrees with the CPU"),
        (leaking_members, "equals the same model trained alone"),
        (lossy_resume, "resumed, bit-identical"),
    ],
)
def test_each_check_fails_for_its_fault_and_only_that_one(trainer, failing):
    record = preflight.run_preflight(UNDER_TEST, trainer)
    assert not record["passed"]
    for check, passed in results_by_check(record).items():
        assert passed == (failing not in check), check
    missed = [c for c in record["checks"] if failing in c["check"]]
    assert all(c["value"] > c["tolerance"] for c in missed)  # the numbers say by how much


def test_a_failed_preflight_stops_with_the_numbers_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "preflight.json"
    monkeypatch.setattr(preflight, "train_ensemble", tf32_device)
    with pytest.raises(SystemExit, match="preflight failed on cpu:0: .*agrees with the CPU"):
        cli.main(["preflight", "--out", str(out), "--device", UNDER_TEST])
    assert not out.exists()
    assert "FAIL two_layer_mse, float32: cpu:0 agrees with the CPU" in capsys.readouterr().out
    monkeypatch.undo()
    cli.main(["preflight", "--out", str(out), "--device", "cpu"])
    assert json.loads(out.read_text())["passed"]
