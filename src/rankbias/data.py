"""Data sets: fetch raw files (URL, mirror or system copy, SHA-256 checked) and prepare arrays.

Raw files are verified by the SHA-256 of their *decompressed* payload, so a re-compressed mirror
copy verifies the same as the canonical download. Prepared data sets are one `.npz` (x_train,
y_train, x_test, y_test) plus a `.json` that records every choice made on the way.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rankbias.storage import (
    atomic_path,
    read_json,
    sha256_bytes,
    sha256_file,
    write_json,
    write_npz,
)

MIRROR_ENV = "RANKBIAS_DATA_MIRROR"
MANIFEST = "manifest.json"
DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class RawFile:
    name: str
    sha256: str  # of the decompressed payload; of the file as it is when `whole`
    whole: bool = False  # an archive known by its own checksum (CIFAR-10's), never decompressed


@dataclass(frozen=True)
class Source:
    """Where a raw data set comes from and how to check it."""

    files: tuple[RawFile, ...]
    url_bases: tuple[str, ...] = ()
    archive_url: str = ""  # a .tgz holding the files (California housing)
    archive_sha256: str = ""
    system_dirs: tuple[str, ...] = field(default=())
    system_package: str = ""  # the Debian/Ubuntu package that installs `system_dirs`


CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_RECORD = 1 + 3 * 32 * 32  # a label byte, then 1,024 red, 1,024 green, 1,024 blue bytes
_IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _idx_files(digests: tuple[str, str, str, str]) -> tuple[RawFile, ...]:
    """The four IDX files of an MNIST-format data set, with their payload checksums."""
    return tuple(RawFile(name, digest) for name, digest in zip(_IDX_NAMES, digests, strict=True))


SOURCES: dict[str, Source] = {
    "mnist": Source(
        files=_idx_files(
            (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            )
        ),
        url_bases=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion_mnist": Source(
        files=_idx_files(
            (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            )
        ),
        url_bases=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        system_package="dataset-fashion-mnist",
    ),
    "cifar10": Source(  # the binary version: records of bytes, no unpickling
        files=(
            RawFile(
                CIFAR_ARCHIVE,
                "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                whole=True,
            ),
        ),
        url_bases=("https://www.cs.toronto.edu/~kriz/",),
    ),
    "california_housing": Source(
        files=(
            RawFile(
                "cal_housing.data",
                "d3d8a1a722ae78f91134862727d27a70b1415e7d512a89140406248687f4b902",
            ),
        ),
        archive_url="https://ndownloader.figshare.com/files/5976036",
        archive_sha256="aaa5c9a6afe2225cc2aed2723682ae403280c4a3695a2ddda4ffb5d8215ea681",
    ),
}
GENERATED_SOURCES = ("teacher",)
USER_SOURCES = ("table",)  # a user's file, fetched per data set (rankbias.tables)
SPLITS = ("train", "val", "test")
VALIDATION_FRACTION = 0.1  # datasets.<name>.validation_fraction's default
# Raw shapes, known before anything is fetched (for memory estimates): features, outputs (classes
# or targets), training rows, test rows; California housing's test rows are a fraction of all.
RAW_SHAPES = {
    "mnist": (784, 10, 60_000, 10_000),
    "fashion_mnist": (784, 10, 60_000, 10_000),
    "cifar10": (3072, 10, 50_000, 10_000),
    "california_housing": (8, 1, 20_640, 0),
}

# Sources whose rows are images (channels, height, width), flattened channel-major in the
# prepared arrays: the conv nets take them as images.
IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def planned_shape(spec: dict, raw_dir: Path | None = None) -> tuple[int, int, int, int]:
    """(features, outputs, training rows with validation, test rows) that preparing the data set
    `spec` will give, without preparing it (a user's table is read: rankbias.tables)."""
    if spec["source"] == "table":
        from rankbias.tables import planned_shape as table_shape

        return table_shape(spec, raw_dir)
    if spec["source"] == "teacher":
        return (
            spec.get("input_dim", 20),
            1,
            spec.get("train_size", 2000),
            spec.get("test_size", 1000),
        )
    features, outputs, train, test = RAW_SHAPES[spec["source"]]
    if spec["source"] == "california_housing":
        test = int(round(spec.get("test_fraction", 0.2) * train))
        train -= test
    return (
        features,
        outputs,
        min(train, spec.get("train_size") or train),
        min(test, spec.get("test_size") or test),
    )


class DataError(RuntimeError):
    """A raw or prepared data file is missing, corrupt or of the wrong version."""


# ----------------------------------------------------------------------------- fetching


def payload(raw: bytes, name: str, whole: bool = False) -> bytes:
    """The bytes a checksum is taken over: decompressed for `.gz` files, unless `whole`."""
    if name.endswith(".gz") and not whole:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataError(f"{name}: not a valid gzip file ({error})") from error
    return raw


def check_payload(raw: bytes, expected: RawFile, origin: str) -> None:
    """Refuse a file whose decompressed payload does not hash to the expected SHA-256."""
    try:
        digest = sha256_bytes(payload(raw, expected.name, expected.whole))
    except DataError as error:
        digest = f"unreadable ({error})"
    if digest != expected.sha256:
        raise DataError(
            f"{origin}: SHA-256 of the decompressed payload is {digest}, expected "
            f"{expected.sha256} for {expected.name}; the file is truncated, corrupt or a "
            "different version, and was not used"
        )


def _candidates(raw_file: RawFile, source: Source, source_name: str, mirror: str | None):
    """Local places a raw file may sit, best first: the mirror, then system copies."""
    dirs = [Path(mirror) / source_name, Path(mirror)] if mirror else []
    dirs += [Path(d) for d in source.system_dirs]
    for directory in dirs:
        yield directory / raw_file.name
        if raw_file.name.endswith(".gz") and not raw_file.whole:  # a decompressed copy verifies
            yield directory / raw_file.name.removesuffix(".gz")


def download(url: str) -> bytes:
    """The bytes at `url` (tests replace this to stay offline)."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        return response.read()


def _from_archive(archive: bytes, member_name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            if Path(member.name).name == member_name:
                handle = tar.extractfile(member)
                if handle is not None:
                    return handle.read()
    raise DataError(f"archive has no member {member_name}")


def fetch(source_name: str, dest_dir: str | os.PathLike, mirror: str | None = None) -> dict:
    """Place every raw file of `source_name` in `dest_dir`, verified; write the manifest last.

    Order: an already present verified file, the mirror folder (`mirror` or $RANKBIAS_DATA_MIRROR),
    system copies (Debian's dataset packages), then the canonical URLs. A candidate that fails its
    checksum is reported and skipped, never copied.
    """
    if source_name not in SOURCES:
        raise DataError(f"unknown data source {source_name!r}; known: {', '.join(sorted(SOURCES))}")
    source = SOURCES[source_name]
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"source": source_name, "files": {}}
    archive_cache: dict[str, bytes] = {}
    failures: list[str] = []
    for raw_file in source.files:
        target = dest / raw_file.name
        origin = _place(raw_file, source, source_name, mirror, target, archive_cache, failures)
        if origin is None:
            continue
        checksum = "sha256_file" if raw_file.whole else "sha256_payload"
        manifest["files"][raw_file.name] = {checksum: raw_file.sha256, "origin": origin}
    missing = [f.name for f in source.files if f.name not in manifest["files"]]
    if missing:
        urls = [base + name for base in source.url_bases for name in missing]
        urls += [source.archive_url] if source.archive_url else []
        package = source.system_package and (
            f" (Debian/Ubuntu: `apt-get install {source.system_package}` puts the files there)"
        )
        raise DataError(
            f"could not obtain {source_name} file(s) {', '.join(missing)}.\n"
            f"  mirror setting: {mirror or 'unset'} (set ${MIRROR_ENV} or data.mirror in the "
            f"config to a folder holding {source_name}/<file>)\n"
            f"  system folders tried: {', '.join(source.system_dirs) or 'none'}{package}\n"
            f"  URLs tried: {', '.join(urls) or 'none'}\n"
            "  attempts:\n    " + "\n    ".join(failures)
        )
    write_json(dest / MANIFEST, manifest)
    return manifest


def _place(
    raw_file: RawFile,
    source: Source,
    source_name: str,
    mirror: str | None,
    target: Path,
    archive_cache: dict[str, bytes],
    failures: list[str],
) -> str | None:
    """Try each origin of one raw file; return a description of where it came from."""
    local_copies = 0
    if target.exists():
        try:
            check_payload(target.read_bytes(), raw_file, str(target))
            return f"existing {target}"
        except DataError as error:
            failures.append(str(error))
            target.unlink()
    for candidate in _candidates(raw_file, source, source_name, mirror):
        if not candidate.is_file():
            continue
        local_copies += 1
        raw = candidate.read_bytes()
        try:
            check_payload(raw, replace(raw_file, name=candidate.name), str(candidate))
        except DataError as error:
            failures.append(str(error))
            continue
        _write_raw(
            target, raw, compress=not candidate.name.endswith(".gz") and target.suffix == ".gz"
        )
        return f"copy of {candidate}"
    if not local_copies:
        failures.append(f"{raw_file.name}: no copy in the mirror or system folders")
    for base in source.url_bases:
        url = base + raw_file.name
        try:
            raw = download(url)
            check_payload(raw, raw_file, url)
        except (OSError, DataError) as error:
            failures.append(f"{url}: {error}")
            continue
        _write_raw(target, raw)
        return url
    if source.archive_url:
        try:
            if source.archive_url not in archive_cache:
                archive = download(source.archive_url)
                digest = sha256_bytes(archive)
                if digest != source.archive_sha256:
                    raise DataError(f"archive SHA-256 {digest} != {source.archive_sha256}")
                archive_cache[source.archive_url] = archive
            raw = _from_archive(archive_cache[source.archive_url], raw_file.name)
            check_payload(raw, raw_file, source.archive_url)
        except (OSError, DataError, tarfile.TarError) as error:
            failures.append(f"{source.archive_url}: {error}")
            return None
        _write_raw(target, raw)
        return source.archive_url
    return None


def _write_raw(target: Path, raw: bytes, compress: bool = False) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)


def verify_manifest(raw_dir: str | os.PathLike) -> dict:
    """Re-check every raw file listed in a manifest before it is used."""
    raw_dir = Path(raw_dir)
    manifest = read_json(raw_dir / MANIFEST)
    for name, entry in manifest["files"].items():
        path = raw_dir / name
        if not path.is_file():
            raise DataError(f"{path}: listed in {raw_dir / MANIFEST} but missing")
        whole = "sha256_file" in entry
        expected = RawFile(name, entry["sha256_file" if whole else "sha256_payload"], whole)
        check_payload(path.read_bytes(), expected, str(path))
    return manifest


# ----------------------------------------------------------------------------- parsing


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (MNIST format): magic, big-endian dims, then unsigned bytes."""
    raw = payload(Path(path).read_bytes(), str(path))
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {tuple(dims)} but holds {data.size} values")
    return data.reshape(tuple(dims))


def read_cifar_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 3·32·32] (channel-major, as stored) and labels of one CIFAR-10 binary batch."""
    if len(data) % CIFAR_RECORD:
        raise DataError(
            f"{name}: {len(data)} bytes is not a whole number of {CIFAR_RECORD}-byte records"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max(initial=0) > 9:
        raise DataError(f"{name}: label {int(labels.max())} outside 0-9: not a CIFAR-10 batch")
    return records[:, 1:], labels


def read_cifar(path: str | os.PathLike) -> tuple[np.ndarray, ...]:
    """x_train, y_train, x_test, y_test of the binary archive, read member by member."""
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with tarfile.open(path, mode="r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and name in (*CIFAR_TRAIN, CIFAR_TEST):
                batches[name] = read_cifar_batch(tar.extractfile(member).read(), name)
    missing = [name for name in (*CIFAR_TRAIN, CIFAR_TEST) if name not in batches]
    if missing:
        raise DataError(f"{path}: no member {', '.join(missing)}: not CIFAR-10's binary archive")
    x_train = np.concatenate([batches[name][0] for name in CIFAR_TRAIN])
    y_train = np.concatenate([batches[name][1] for name in CIFAR_TRAIN])
    return x_train, y_train, *batches[CIFAR_TEST]


def read_california_housing(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The 8 features scikit-learn derives from the StatLib file; target in units of $100,000."""
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if table.shape != (20640, 9):
        raise DataError(f"{path}: expected 20640 x 9 values, found {table.shape}")
    lon, lat, age, rooms, bedrooms, population, households, income, value = table.T
    features = np.column_stack(
        [
            income,
            age,
            rooms / households,
            bedrooms / households,
            population,
            population / households,
            lat,
            lon,
        ]
    )
    names = [
        "MedInc",
        "HouseAge",
        "AveRooms",
        "AveBedrms",
        "Population",
        "AveOccup",
        "Latitude",
        "Longitude",
    ]
    return features, value / 100_000.0, names


# ----------------------------------------------------------------------------- preparation


def stratified_subset(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a stratified subset: each class keeps its share of `size` (largest remainder)."""
    classes, counts = np.unique(labels, return_counts=True)
    share = counts / counts.sum() * size
    take = np.floor(share).astype(int)
    remainder = size - take.sum()
    take[np.argsort(-(share - take), kind="stable")[:remainder]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
        for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def subset(x: np.ndarray, y: np.ndarray, size: int | None, rng, stratify: bool):
    """`size` rows of (x, y), seeded; stratified by class when `stratify`; all if size is None."""
    if size is None or size >= len(x):
        return x, y
    index = (
        stratified_subset(y, size, rng)
        if stratify
        else np.sort(rng.choice(len(x), size=size, replace=False))
    )
    return x[index], y[index]


def prepare(spec: dict, raw_dir: str | os.PathLike | None) -> tuple[dict[str, np.ndarray], dict]:
    """Build train/test arrays for one configured data set; return them and their provenance."""
    from rankbias.tables import prepare_table

    source = spec["source"]
    builders = {
        "mnist": _prepare_idx,
        "fashion_mnist": _prepare_idx,
        "cifar10": _prepare_cifar,
        "california_housing": _prepare_housing,
        "teacher": _prepare_teacher,
        "table": prepare_table,
    }
    if source not in builders:
        raise DataError(f"unknown data source {source!r}; known: {', '.join(builders)}")
    manifest = verify_manifest(raw_dir) if source in SOURCES or source in USER_SOURCES else None
    arrays, info = builders[source](spec, Path(raw_dir) if raw_dir else None)
    arrays, validation = carve_validation(arrays, spec)
    arrays, target = centre_target(arrays, info["task"], spec.get("centre_target", True))
    info = {
        "spec": spec,
        **info,
        "raw_manifest": manifest,
        "validation": validation,
        "target_centring": target,
        "n_train": len(arrays["x_train"]),
        "n_val": len(arrays["x_val"]),
        "n_test": len(arrays["x_test"]),
        "n_features": int(arrays["x_train"].shape[1]),
    }
    return arrays, info


def carve_validation(arrays: dict[str, np.ndarray], spec: dict) -> tuple[dict, dict]:
    """Move a seeded `validation_fraction` (default 0.1) of the training set to x_val/y_val, so
    a "best weight decay" can be chosen without looking at the test set. Features were scaled on
    the whole training split before; the validation rows are a random subset of it."""
    fraction = spec.get("validation_fraction", VALIDATION_FRACTION)
    seed = spec.get("validation_seed", 0)
    n_train = len(arrays["x_train"])
    n_val = int(round(fraction * n_train))
    if n_val >= n_train:
        raise DataError(f"validation_fraction {fraction} leaves no training sample of {n_train}")
    order = np.random.default_rng(seed).permutation(n_train)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    carved = {**arrays, "x_val": arrays["x_train"][val], "y_val": arrays["y_train"][val]}
    carved["x_train"], carved["y_train"] = arrays["x_train"][train], arrays["y_train"][train]
    return carved, {"fraction": fraction, "seed": seed, "n_val": n_val}


def centre_target(
    arrays: dict[str, np.ndarray], task: str, centre: bool
) -> tuple[dict[str, np.ndarray], dict]:
    """Subtract the training mean from a regression target (every split). Paper A's model
    f = U relu(V x + b) has no output bias: an uncentred target (California housing's mean is
    about 2.07) must then be carried by always-on hidden units, which inflates `units_linear`."""
    if task != "regression" or not centre:
        return arrays, {"centred": False}
    mean = arrays["y_train"].mean(axis=0)
    centred = {**arrays, **{f"y_{split}": arrays[f"y_{split}"] - mean for split in SPLITS}}
    return centred, {"centred": True, "train_mean": mean.tolist()}


def _prepare_idx(spec: dict, raw_dir: Path):
    """MNIST-format images: subset (stratified), then scale by the *global* train mean and std.

    Per-pixel standardisation would divide the constant border pixels by ~0; a global scale keeps
    every input finite and comparable.
    """
    rng = np.random.default_rng(spec.get("subset_seed", 0))
    x_train = read_idx(raw_dir / _IDX_NAMES[0]).reshape(-1, 784).astype(np.float64)
    y_train = read_idx(raw_dir / _IDX_NAMES[1]).astype(np.int64)
    x_test = read_idx(raw_dir / _IDX_NAMES[2]).reshape(-1, 784).astype(np.float64)
    y_test = read_idx(raw_dir / _IDX_NAMES[3]).astype(np.int64)
    x_train, y_train = subset(x_train, y_train, spec.get("train_size"), rng, stratify=True)
    x_test, y_test = subset(x_test, y_test, spec.get("test_size"), rng, stratify=True)
    mean, std = float(x_train.mean()), float(x_train.std())
    arrays = {
        "x_train": (x_train - mean) / std,
        "y_train": y_train,
        "x_test": (x_test - mean) / std,
        "y_test": y_test,
    }
    info = {
        "task": "classification",
        "n_classes": 10,
        "n_outputs": 10,
        "image_shape": list(IMAGE_SHAPES[spec["source"]]),
        "scaling": {"kind": "global", "mean": mean, "std": std},
        "class_counts_train": np.bincount(y_train, minlength=10).tolist(),
    }
    return arrays, info


def _prepare_cifar(spec: dict, raw_dir: Path):
    """CIFAR-10: subset (stratified), then standardise each colour channel on the training
    subset's mean and std (recorded); float32, so the full 50,000 images take 0.6 GB, not 1.2."""
    rng = np.random.default_rng(spec.get("subset_seed", 0))
    x_train, y_train, x_test, y_test = read_cifar(raw_dir / CIFAR_ARCHIVE)
    x_train, y_train = subset(x_train, y_train, spec.get("train_size"), rng, stratify=True)
    x_test, y_test = subset(x_test, y_test, spec.get("test_size"), rng, stratify=True)
    channels = IMAGE_SHAPES["cifar10"][0]
    by_channel = x_train.reshape(len(x_train), channels, -1).astype(np.float64)
    mean, std = by_channel.mean(axis=(0, 2)), by_channel.std(axis=(0, 2))

    def scaled(x: np.ndarray) -> np.ndarray:
        images = (x.reshape(len(x), channels, -1) - mean[:, None]) / std[:, None]
        return images.reshape(len(x), -1).astype(np.float32)

    arrays = {
        "x_train": scaled(x_train),
        "y_train": y_train,
        "x_test": scaled(x_test),
        "y_test": y_test,
    }
    info = {
        "task": "classification",
        "n_classes": 10,
        "n_outputs": 10,
        "image_shape": list(IMAGE_SHAPES["cifar10"]),
        "scaling": {"kind": "per_channel", "mean": mean.tolist(), "std": std.tolist()},
        "class_counts_train": np.bincount(y_train, minlength=10).tolist(),
    }
    return arrays, info


def standardise(
    x_train: np.ndarray, x_test: np.ndarray, clip: float | None, names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-feature z-scores on the training rows' mean and std (then clipped at ±clip). A
    feature constant on the training rows (an image border, a one-row subset) is centred and left
    unscaled: never divided by its zero std, and named in `constant_features`."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    constant = std == 0
    scale = np.where(constant, 1.0, std)
    z_train, z_test = (x_train - mean) / scale, (x_test - mean) / scale
    max_abs = np.abs(z_train).max(axis=0)
    if clip is not None:
        z_train, z_test = np.clip(z_train, -clip, clip), np.clip(z_test, -clip, clip)
    scaling = {
        "kind": "per_feature",
        "mean": mean.tolist(),
        "std": std.tolist(),
        "clip": clip,
        "max_abs_z_train_before_clip": max_abs.tolist(),
        "constant_features": [
            names[i] if names else f"column {i}" for i in np.flatnonzero(constant)
        ],
    }
    return z_train, z_test, scaling


def _prepare_housing(spec: dict, raw_dir: Path):
    """Seeded train/test split; standardise on the train split; clip the heavy-tailed ratios."""
    features, target, names = read_california_housing(raw_dir / "cal_housing.data")
    rng = np.random.default_rng(spec.get("split_seed", 0))
    order = rng.permutation(len(features))
    n_test = int(round(spec.get("test_fraction", 0.2) * len(features)))
    test, train = order[:n_test], order[n_test:]
    x_train, y_train = subset(features[train], target[train], spec.get("train_size"), rng, False)
    x_test, y_test = features[test], target[test]
    z_train, z_test, scaling = standardise(x_train, x_test, spec.get("clip", 5.0), names)
    arrays = {
        "x_train": z_train,
        "y_train": y_train[:, None],
        "x_test": z_test,
        "y_test": y_test[:, None],
    }
    return arrays, {
        "task": "regression",
        "n_outputs": 1,
        "feature_names": names,
        "target": "medianHouseValue / 100000",
        "scaling": scaling,
    }


TEACHER_FACTORS = ("orthonormal", "gaussian")
TEACHER_OUTPUT_WEIGHTS = ("equal", "gaussian")


def teacher_weights(spec: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """W* (m* × n, rank k) and a* (m*) of the planted-rank teacher.

    `factors: orthonormal` (default): W* = sqrt(m*/k)·Q_A·Q_Bᵀ with Q_A (m*×k), Q_B (n×k) the
    orthonormal factors of Gaussian matrices: all k singular values equal sqrt(m*/k), so every
    planted direction is as strong as the others and the mean row norm² is 1. `gaussian`:
    W* = A·B / sqrt(k·n), Gaussian A, B (unequal singular values: the weakest of k = 8 are hard
    to tell from noise). `output_weights: equal` (default): a*_j = 1/sqrt(m*); `gaussian`:
    a* ~ N(0, 1/m*).
    """
    n, width, rank = spec.get("input_dim", 20), spec.get("teacher_width", 32), spec["rank"]
    if rank > min(n, width):
        raise DataError(
            f"teacher rank {rank} exceeds min(input_dim, teacher_width) = {min(n, width)}"
        )
    factors = spec.get("factors", "orthonormal")
    if factors == "orthonormal":
        left = np.linalg.qr(rng.standard_normal((width, rank)))[0]
        right = np.linalg.qr(rng.standard_normal((n, rank)))[0]
        w_star = np.sqrt(width / rank) * left @ right.T
    elif factors == "gaussian":
        w_star = rng.standard_normal((width, rank)) @ rng.standard_normal((rank, n))
        w_star /= np.sqrt(rank * n)
    else:
        raise DataError(f"teacher factors {factors!r}; allowed: {', '.join(TEACHER_FACTORS)}")
    output_weights = spec.get("output_weights", "equal")
    if output_weights == "equal":
        a_star = np.full(width, 1 / np.sqrt(width))
    elif output_weights == "gaussian":
        a_star = rng.standard_normal(width) / np.sqrt(width)
    else:
        raise DataError(
            f"teacher output_weights {output_weights!r}; allowed: "
            f"{', '.join(TEACHER_OUTPUT_WEIGHTS)}"
        )
    return w_star, a_star


def _prepare_teacher(spec: dict, raw_dir: Path | None):
    """Planted-rank control: y = a*·relu(W* x) + noise with rank(W*) = k exactly, x ~ N(0, I).

    A net that learns this function needs a first layer of rank k, so a trained V whose count
    of strong directions (`rank_cut`) follows k shows the control can see rank; one that does
    not cannot decide "is rank two a law?" (claims A1, C3). See `teacher_weights`.
    """
    rng = np.random.default_rng(spec.get("seed", 0))
    w_star, a_star = teacher_weights(spec, rng)
    noise = spec.get("noise", 0.1)

    def sample(count: int):
        x = rng.standard_normal((count, w_star.shape[1]))
        y = np.maximum(x @ w_star.T, 0.0) @ a_star + noise * rng.standard_normal(count)
        return x, y[:, None]

    x_train, y_train = sample(spec.get("train_size", 2000))
    x_test, y_test = sample(spec.get("test_size", 1000))
    z_train, z_test, scaling = standardise(x_train, x_test, None)
    singular = np.linalg.svd(w_star, compute_uv=False)
    rank = spec["rank"]
    arrays = {
        "x_train": z_train,
        "y_train": y_train,
        "x_test": z_test,
        "y_test": y_test,
        "teacher_w": w_star,
        "teacher_a": a_star,
    }
    return arrays, {
        "task": "regression",
        "n_outputs": 1,
        "scaling": scaling,
        "teacher": {
            "rank": rank,
            "width": w_star.shape[0],
            "input_dim": w_star.shape[1],
            "noise": noise,
            "factors": spec.get("factors", "orthonormal"),
            "output_weights": spec.get("output_weights", "equal"),
            "singular_values": singular[: rank + 1].tolist(),
        },
    }


def write_prepared(
    arrays: dict[str, np.ndarray], info: dict, npz_path: str, json_path: str
) -> None:
    """Write arrays, then the JSON (with the arrays' hash) so a stale pair is detectable."""
    write_npz(npz_path, arrays)
    info = {**info, "npz_sha256": sha256_file(npz_path)}
    write_json(json_path, info)


def load_prepared(npz_path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Load a prepared data set; refuse it if it does not match the hash its JSON records."""
    npz_path = Path(npz_path)
    json_path = npz_path.with_suffix(".json")
    info = read_json(json_path)
    digest = sha256_file(npz_path)
    if digest != info.get("npz_sha256"):
        raise DataError(
            f"{npz_path}: SHA-256 {digest} does not match {info.get('npz_sha256')} "
            f"recorded in {json_path}; rebuild it (delete both files and rerun)"
        )
    with np.load(npz_path) as handle:
        arrays = {key: handle[key] for key in handle.files}
    return arrays, info
