"""A user's table (`source: table`): CSV, Parquet and NPZ read the same; the SHA-256 is checked or
recorded; each kind of bad table is refused by file, column and row, leaving nothing behind."""

import json

import numpy as np
import pandas as pd
import pytest

from rankbias import data, tables
from rankbias.cli import main


def housing_like(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """A small mixed table: four features, a constant border column, a class and a value."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.standard_normal((rows, 4)), columns=["f0", "f1", "f2", "f3"])
    frame["border"] = 7.0
    frame["label"] = np.where(frame["f0"] + frame["f1"] > 0, "up", "down")
    frame["value"] = 2 * frame["f0"] - frame["f2"] + 0.1 * rng.standard_normal(rows)
    return frame


def write(frame: pd.DataFrame, path, kind: str) -> None:
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "parquet":
        frame.to_parquet(path, index=False)
    else:  # an NPZ table: one array per column (strings as unicode arrays, no pickles)
        np.savez(path, **{name: frame[name].to_numpy(dtype=None) for name in frame.columns})


def prepared(tmp_path, frame: pd.DataFrame, kind: str = "csv", **keys):
    path = tmp_path / f"table.{kind}"
    path.parent.mkdir(parents=True, exist_ok=True)
    write(frame, path, kind)
    spec = {"source": "table", "path": str(path), "target": "value", "task": "regression", **keys}
    tables.fetch_table(spec, tmp_path / "raw")
    return data.prepare(spec, tmp_path / "raw")


@pytest.mark.parametrize("kind", ["parquet", "npz"])
def test_csv_parquet_and_npz_give_the_same_arrays(tmp_path, kind):
    frame = housing_like()
    csv_arrays, csv_info = prepared(tmp_path / "csv", frame.drop(columns="label"))
    other, other_info = prepared(tmp_path / kind, frame.drop(columns="label"), kind)
    for key, array in csv_arrays.items():
        np.testing.assert_allclose(other[key], array, rtol=0, atol=1e-12)
    assert other_info["feature_names"] == csv_info["feature_names"]


def test_a_classification_table_is_split_by_class_and_records_its_choices(tmp_path):
    arrays, info = prepared(
        tmp_path, housing_like(), target="label", task="classification", features=["f0", "f1"]
    )
    assert info["classes"] == ["down", "up"] and info["n_outputs"] == 2
    assert info["feature_names"] == ["f0", "f1"] and info["split"]["stratified"]
    assert arrays["x_train"].shape[1] == 2 and arrays["y_train"].dtype == np.int64
    np.testing.assert_allclose(arrays["x_train"].mean(axis=0), 0, atol=0.3)  # val rows carved
    counts = np.bincount(np.concatenate([arrays["y_train"], arrays["y_val"], arrays["y_test"]]))
    test_share = np.bincount(arrays["y_test"]) / counts
    np.testing.assert_allclose(test_share, 0.2, atol=0.03)  # stratified: each class's 20 %


def test_a_constant_column_is_legal_centred_unscaled_and_recorded(tmp_path):
    arrays, info = prepared(tmp_path, housing_like().drop(columns="label"))
    border = info["feature_names"].index("border")
    assert info["scaling"]["constant_features"] == ["border"]
    for split in ("train", "val", "test"):
        assert np.isfinite(arrays[f"x_{split}"]).all()
        np.testing.assert_array_equal(arrays[f"x_{split}"][:, border], 0.0)


def test_a_test_column_decides_the_split_and_is_not_a_feature(tmp_path):
    frame = housing_like().drop(columns="label")
    frame["split"] = ["test" if i % 4 == 0 else "train" for i in range(len(frame))]
    arrays, info = prepared(tmp_path, frame, test_column="split", validation_fraction=0)
    assert len(arrays["x_test"]) == 15 and len(arrays["x_train"]) == 45
    assert "split" not in info["feature_names"] and info["split"]["test_column"] == "split"


def test_the_sha256_is_checked_when_given_and_recorded_otherwise(tmp_path):
    path = tmp_path / "table.csv"
    housing_like().to_csv(path, index=False)
    spec = {"source": "table", "path": str(path), "target": "value", "task": "regression"}
    recorded = tables.fetch_table(spec, tmp_path / "raw")["files"]["table.csv"]
    assert recorded["sha256_file"] == data.sha256_file(path) and not recorded["sha256_checked"]
    checked = tables.fetch_table({**spec, "sha256": recorded["sha256_file"]}, tmp_path / "ok")
    assert checked["files"]["table.csv"]["sha256_checked"]
    with pytest.raises(tables.TableError, match="SHA-256 is .* expected 0{64}"):
        tables.fetch_table({**spec, "sha256": "0" * 64}, tmp_path / "refused")
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())


def bad_tables() -> dict[str, tuple[pd.DataFrame, dict, str]]:
    """Five kinds of bad table, each with the words its error must contain."""
    frame = housing_like().drop(columns="label")
    text = frame.astype({"f2": object})
    text.loc[6, "f2"] = "n/a?"
    holes = frame.copy()
    holes.loc[11, "f3"] = np.nan
    single = housing_like()
    single.loc[23, "label"] = "sideways"
    empty = frame.assign(split="train")
    return {
        "missing target": (frame, {"target": "price"}, "target column 'price' is missing"),
        "non-numeric feature": (text, {}, "feature column 'f2', row 7: 'n/a?' is not a number"),
        "NaN": (holes, {}, "feature column 'f3', row 12: empty or NA (read as NaN)"),
        "one-example class": (
            single,
            {"target": "label", "task": "classification"},
            "target column 'label', row 24: class 'sideways' has one example",
        ),
        "empty split": (empty, {"test_column": "split"}, "the test split is empty"),
    }


@pytest.mark.parametrize("kind", list(bad_tables()))
def test_each_bad_table_is_refused_by_file_column_and_row_and_writes_nothing(
    tmp_path, capsys, kind
):
    frame, keys, words = bad_tables()[kind]
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    spec = {"source": "table", "path": str(path), "target": "value", "task": "regression", **keys}
    manifest = tmp_path / "raw" / "manifest.json"
    main(["fetch", "--source", "table", "--spec", json.dumps(spec), "--manifest", str(manifest)])
    out = tmp_path / "results" / "mine.npz"
    command = ["prepare", "--spec", json.dumps(spec), "--raw-manifest", str(manifest)]
    with pytest.raises(SystemExit):
        main([*command, "--out-npz", str(out), "--out-json", str(out.with_suffix(".json"))])
    message = capsys.readouterr().err
    assert words in message and "mine.csv" in message and "data set mine" in message
    assert not out.parent.exists() or not any(out.parent.iterdir())
    with pytest.raises(data.DataError, match=words.split(":")[0]):  # refused at plan time too
        data.planned_shape(spec, None)


def test_a_table_at_a_url_is_fetched_checked_and_recorded(tmp_path):
    """A URL (a server on this machine: tests never download) is fetched like a path."""
    import functools
    import http.server
    import threading

    housing_like().drop(columns="label").to_csv(tmp_path / "remote.csv", index=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/remote.csv"
        digest = data.sha256_file(tmp_path / "remote.csv")
        spec = {"source": "table", "path": url, "target": "value", "task": "regression"}
        assert data.planned_shape(spec, tmp_path / "raw") == (1000, 10, 100_000, 0)  # not yet
        manifest = tables.fetch_table({**spec, "sha256": digest}, tmp_path / "raw")
        assert manifest["files"]["remote.csv"] == {
            "sha256_file": digest,
            "origin": url,
            "sha256_checked": True,
        }
        assert data.planned_shape(spec, tmp_path / "raw") == (5, 1, 48, 12)  # the copy, read
        arrays, info = data.prepare(spec, tmp_path / "raw")
        assert info["raw_manifest"] == manifest and len(arrays["x_test"]) == 12
    finally:
        server.shutdown()


def test_a_class_without_training_rows_is_refused(tmp_path):
    frame = housing_like()
    frame["split"] = np.where(frame["label"] == "up", "test", "train")
    with pytest.raises(tables.TableError, match="class 'up' of target column 'label' has no"):
        prepared(tmp_path, frame, target="label", task="classification", test_column="split")
