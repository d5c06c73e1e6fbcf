"""A user's own data set: a CSV, Parquet or NPZ table (`source: table`), checked and prepared.

Every refusal names the file, the column and the (1-based) row, because a table a user brings is
where typos, empty cells and stray text live. What is legal but easy to get wrong is recorded in
the preparation JSON instead: constant feature columns (image borders) are centred and left
unscaled, never divided by a zero std; the SHA-256 of the file is checked when given and
recorded always.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import numpy as np
import pandas as pd

from rankbias import data
from rankbias.data import MANIFEST, DataError, standardise, subset
from rankbias.storage import atomic_path, sha256_bytes, write_json

FORMATS = ("csv", "parquet", "npz")
TEST_FRACTION = 0.2  # datasets.<name>.test_fraction's default without a test_column
# a test_column's values (True == 1 and False == 0 as keys); text is compared in lower case
TEST_VALUES = {1: True, 0: False, "true": True, "false": False, "test": True, "train": False}


class TableError(DataError):
    """A user's table cannot be used as configured; the message names file, column and row."""


def is_url(path: str) -> bool:
    return urllib.parse.urlparse(str(path)).scheme in ("http", "https", "ftp")


def table_format(spec: dict) -> str:
    """`format`, else the file's suffix (`.csv`, `.csv.gz`, `.parquet`, `.pq`, `.npz`)."""
    if spec.get("format"):
        return spec["format"]
    name = Path(urllib.parse.urlparse(spec["path"]).path).name.lower()
    suffixes = {".csv": "csv", ".gz": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
    suffix = Path(name).suffix
    if suffix not in suffixes or (suffix == ".gz" and not name.endswith(".csv.gz")):
        raise TableError(
            f"{spec['path']}: cannot tell the table's format from its name; set `format` "
            f"(allowed: {', '.join(FORMATS)})"
        )
    return suffixes[suffix]


def file_name(spec: dict) -> str:
    return Path(urllib.parse.urlparse(spec["path"]).path).name


# ----------------------------------------------------------------------------- fetching


def fetch_table(spec: dict, dest_dir: str | os.PathLike) -> dict:
    """Copy the table (a path or a URL) into `dest_dir`, its SHA-256 checked against `sha256`
    when given, else recorded; write the manifest last."""
    origin = spec["path"]
    try:
        raw = data.download(origin) if is_url(origin) else Path(origin).read_bytes()
    except OSError as error:
        raise TableError(f"{origin}: cannot read the table ({error})") from error
    digest = sha256_bytes(raw)
    expected = spec.get("sha256")
    if expected and digest != expected.lower():
        raise TableError(
            f"{origin}: SHA-256 is {digest}, expected {expected} (datasets.<name>.sha256); the "
            "file changed or is another version, and was not used"
        )
    dest = Path(dest_dir)
    with atomic_path(dest / file_name(spec)) as tmp:
        tmp.write_bytes(raw)
    manifest = {
        "source": "table",
        "files": {
            file_name(spec): {
                "sha256_file": digest,
                "origin": origin,
                "sha256_checked": bool(expected),  # False: recorded, nothing to check against
            }
        },
    }
    write_json(dest / MANIFEST, manifest)
    return manifest


# ----------------------------------------------------------------------------- reading


def read_table(path: str | os.PathLike, kind: str) -> pd.DataFrame:
    """The table as columns. An NPZ holds one 1-D array per column, or 2-D arrays [N, d] whose
    columns are named `<key>_<j>`; it is read without unpickling (allow_pickle=False)."""
    path = Path(path)
    try:
        if kind == "csv":
            return pd.read_csv(path)
        if kind == "parquet":
            return pd.read_parquet(path)
        with np.load(path, allow_pickle=False) as handle:
            columns: dict[str, np.ndarray] = {}
            for key in handle.files:
                array = handle[key]
                if array.ndim == 1:
                    columns[key] = array
                elif array.ndim == 2:
                    columns.update({f"{key}_{j}": array[:, j] for j in range(array.shape[1])})
                else:
                    raise TableError(
                        f"{path}: array {key!r} has shape {array.shape}; an NPZ table holds 1-D "
                        "columns or 2-D [rows, columns] arrays"
                    )
        lengths = {key: len(column) for key, column in columns.items()}
        if len(set(lengths.values())) > 1:
            raise TableError(f"{path}: arrays of different lengths {lengths}")
        return pd.DataFrame(columns)
    except TableError:
        raise
    except Exception as error:  # pandas, pyarrow and numpy raise many kinds; name the file
        raise TableError(f"{path}: not a readable {kind} table ({error})") from error


def columns_of(spec: dict, table: pd.DataFrame, path: str) -> list[str]:
    """The feature columns: `features`, else every column but the target and the test column."""
    columns = [str(c) for c in table.columns]
    table.columns = columns
    target, split = spec["target"], spec.get("test_column")
    for key, name in (("target", target), ("test_column", split)):
        if name is not None and name not in columns:
            raise TableError(
                f"{path}: {key} column {name!r} is missing; columns: {', '.join(columns)}"
            )
    features = spec.get("features") or [c for c in columns if c not in (target, split)]
    for name in features:
        if name not in columns:
            raise TableError(
                f"{path}: feature column {name!r} is missing; columns: {', '.join(columns)}"
            )
        if name in (target, split):
            raise TableError(f"{path}: column {name!r} is the target or test column, not a feature")
    if not features:
        raise TableError(f"{path}: no feature column besides the target {target!r}")
    return features


def numeric_column(table: pd.DataFrame, name: str, path: str, role: str) -> np.ndarray:
    """One column as float64, refusing text and empty or non-finite cells by row."""
    raw = table[name]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    text = np.flatnonzero(np.isnan(values) & raw.notna().to_numpy())
    if len(text):
        row = int(text[0])
        raise TableError(
            f"{path}: {role} column {name!r}, row {row + 1}: {raw.iloc[row]!r} is not a number "
            f"({len(text)} such row{'s' * (len(text) > 1)})"
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        what = "empty or NA (read as NaN)" if np.isnan(values[row]) else f"{values[row]}"
        raise TableError(
            f"{path}: {role} column {name!r}, row {row + 1}: {what}; "
            f"{len(bad)} row{'s' * (len(bad) > 1)} without a finite value: drop or fill them"
        )
    return values


def class_labels(table: pd.DataFrame, name: str, path: str) -> tuple[np.ndarray, list]:
    """Class indices 0..K-1 (classes sorted) and the classes; every class needs two examples."""
    raw = table[name]
    missing = np.flatnonzero(raw.isna().to_numpy())
    if len(missing):
        raise TableError(f"{path}: target column {name!r}, row {missing[0] + 1}: empty (no class)")
    classes, labels, counts = np.unique(raw.to_numpy(), return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise TableError(f"{path}: target column {name!r} has one class ({classes[0]!r}) only")
    for index in np.flatnonzero(counts < 2):
        row = int(np.flatnonzero(labels == index)[0])
        raise TableError(
            f"{path}: target column {name!r}, row {row + 1}: class {classes[index]!r} has one "
            "example; a class needs at least two (one to train on, one to test), so drop or "
            "merge it"
        )
    return labels.astype(np.int64), [c.item() if hasattr(c, "item") else c for c in classes]


def test_mask(spec: dict, table: pd.DataFrame, labels: np.ndarray | None, path: str) -> np.ndarray:
    """Which rows are test rows: `test_column` (true/false, 1/0, "test"/"train"), else a seeded
    `test_fraction` (stratified by class for a classifier). Both splits must be non-empty."""
    n_rows = len(table)
    if spec.get("test_column"):
        name = spec["test_column"]
        mask = np.zeros(n_rows, dtype=bool)
        for row, value in enumerate(table[name].to_numpy()):
            key = value.item() if hasattr(value, "item") else value
            key = key.strip().lower() if isinstance(key, str) else key
            if key not in TEST_VALUES:
                raise TableError(
                    f"{path}: test column {name!r}, row {row + 1}: {value!r}; allowed: true/false, "
                    "1/0, test/train"
                )
            mask[row] = TEST_VALUES[key]
        how = f"test column {name!r}"
    else:
        fraction = spec.get("test_fraction", TEST_FRACTION)
        rng = np.random.default_rng(spec.get("split_seed", 0))
        mask = np.zeros(n_rows, dtype=bool)
        groups = (
            [np.arange(n_rows)]
            if labels is None
            else [np.flatnonzero(labels == k) for k in np.unique(labels)]
        )
        for rows in groups:
            mask[rng.choice(rows, size=int(round(fraction * len(rows))), replace=False)] = True
        how = f"test_fraction {fraction} of {n_rows} rows"
    for split, rows in (("test", mask), ("training", ~mask)):
        if not rows.any():
            raise TableError(f"{path}: the {split} split is empty ({how})")
    return mask


# ----------------------------------------------------------------------------- preparing


def load_checked(spec: dict, path: str | os.PathLike, shown: str = ""):
    """Read and check the table: features [N, d], target, class list (None for regression),
    the test mask and the feature names. Messages name `shown` (the user's file, where `path`
    is its verified copy)."""
    path_text = shown or str(path)
    table = read_table(path, table_format(spec))
    if table.empty:
        raise TableError(f"{path_text}: the table has no rows")
    features = columns_of(spec, table, path_text)
    x = np.column_stack([numeric_column(table, name, path_text, "feature") for name in features])
    if spec["task"] == "classification":
        y, classes = class_labels(table, spec["target"], path_text)
    else:
        y, classes = numeric_column(table, spec["target"], path_text, "target"), None
    mask = test_mask(spec, table, y if classes is not None else None, path_text)
    return x, y, classes, mask, features


def prepare_table(spec: dict, raw_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and record of a table data set (its copy in `raw_dir`, verified by the manifest)."""
    copy = raw_dir / file_name(spec)
    x, y, classes, mask, features = load_checked(spec, copy, f"{spec['path']} (copy {copy})")
    rng = np.random.default_rng(spec.get("subset_seed", 0))
    classification = classes is not None
    x_train, y_train = subset(x[~mask], y[~mask], spec.get("train_size"), rng, classification)
    x_test, y_test = subset(x[mask], y[mask], spec.get("test_size"), rng, classification)
    absent = np.setdiff1d(np.arange(len(classes)), y_train) if classification else []
    if len(absent):
        raise TableError(
            f"{spec['path']}: class {classes[absent[0]]!r} of target column "
            f"{spec['target']!r} has no training row (the split or train_size leaves all "
            "of its rows out): a net cannot learn a class it never sees"
        )
    if spec.get("standardise", True):
        x_train, x_test, scaling = standardise(x_train, x_test, spec.get("clip"), features)
    else:
        scaling = {"kind": "none", "clip": None, "constant_features": []}
    arrays = {
        "x_train": x_train,
        "y_train": y_train if classification else y_train[:, None],
        "x_test": x_test,
        "y_test": y_test if classification else y_test[:, None],
    }
    info = {
        "task": spec["task"],
        "n_outputs": len(classes) if classification else 1,
        "feature_names": features,
        "target": spec["target"],
        "split": {
            "test_column": spec.get("test_column"),
            "test_fraction": None
            if spec.get("test_column")
            else spec.get("test_fraction", TEST_FRACTION),
            "split_seed": None if spec.get("test_column") else spec.get("split_seed", 0),
            "stratified": classification and not spec.get("test_column"),
        },
        "scaling": scaling,
    }
    if classification:
        info |= {
            "n_classes": len(classes),
            "classes": classes,  # class k of y is classes[k]
            "class_counts_train": np.bincount(y_train, minlength=len(classes)).tolist(),
        }
    return arrays, info


def planned_shape(spec: dict, raw_dir: Path | None) -> tuple[int, int, int, int]:
    """(features, outputs, training rows, test rows) for memory estimates, read from the table
    (a URL's fetched copy in `raw_dir`); a URL not fetched yet is estimated as 100,000 rows of
    1,000 features and 10 classes until it is."""
    path = spec["path"]
    if is_url(path):
        copy = raw_dir / file_name(spec) if raw_dir else None
        if not (copy and copy.is_file()):
            return 1000, 10, 100_000, 0
        path = copy
    x, y, classes, mask, _ = load_checked(spec, path)
    train = min(int((~mask).sum()), spec.get("train_size") or x.shape[0])
    test = min(int(mask.sum()), spec.get("test_size") or x.shape[0])
    return x.shape[1], len(classes) if classes else 1, train, test
