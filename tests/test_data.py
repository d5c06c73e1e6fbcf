import dataclasses
import gzip
import json
import shutil

import numpy as np
import pytest
from conftest import cifar_archive

from rankbias import data


def test_idx_roundtrip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = b"\x00\x00\x08\x03" + np.array([2, 3, 4], dtype=">u4").tobytes()
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + images.tobytes()))
    np.testing.assert_array_equal(data.read_idx(path), images)


def test_idx_rejects_short_payload(tmp_path):
    header = b"\x00\x00\x08\x01" + np.array([10], dtype=">u4").tobytes()
    path = tmp_path / "short-idx1-ubyte"
    path.write_bytes(header + bytes(9))
    with pytest.raises(data.DataError, match="header says"):
        data.read_idx(path)


def test_fetch_from_mirror_writes_verified_files(tmp_path, mirror, offline):
    manifest = data.fetch("california_housing", tmp_path / "raw", str(mirror))
    entry = manifest["files"]["cal_housing.data"]
    assert entry["origin"].startswith("copy of ")
    assert data.sha256_file(tmp_path / "raw" / "cal_housing.data") == entry["sha256_payload"]
    assert json.loads((tmp_path / "raw" / "manifest.json").read_text()) == manifest


def test_corrupt_mirror_file_is_refused_and_leaves_nothing(tmp_path, mirror, offline):
    bad_mirror = tmp_path / "mirror" / "california_housing"
    bad_mirror.mkdir(parents=True)
    original = (mirror / "california_housing" / "cal_housing.data").read_bytes()
    (bad_mirror / "cal_housing.data").write_bytes(original[: len(original) // 2])
    dest = tmp_path / "raw"
    with pytest.raises(data.DataError) as caught:
        data.fetch("california_housing", dest, str(tmp_path / "mirror"))
    message = str(caught.value)
    assert "cal_housing.data" in message
    assert data.SOURCES["california_housing"].files[0].sha256 in message  # expected checksum
    assert str(tmp_path / "mirror") in message  # the mirror setting
    assert "https://ndownloader.figshare.com/files/5976036" in message  # the URL tried
    assert not any(dest.iterdir()), "a refused file must leave no output behind"


def test_corrupt_gzip_in_mirror_is_refused(tmp_path, mirror, offline):
    bad = tmp_path / "mirror" / "mnist"
    shutil.copytree(mirror / "mnist", bad)
    raw = (bad / "train-labels-idx1-ubyte.gz").read_bytes()
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(raw[:-100])
    with pytest.raises(data.DataError, match="train-labels-idx1-ubyte.gz"):
        data.fetch("mnist", tmp_path / "raw", str(tmp_path / "mirror"))
    assert not (tmp_path / "raw" / "manifest.json").exists()


def flip_middle_byte(raw: bytes) -> bytes:
    middle = len(raw) // 2
    return raw[:middle] + bytes([raw[middle] ^ 0xFF]) + raw[middle + 1 :]


def other_version(raw: bytes) -> bytes:
    """A valid gzip whose payload differs in one label: another release of the file."""
    payload = bytearray(gzip.decompress(raw))
    payload[-1] = (payload[-1] + 1) % 10
    return gzip.compress(bytes(payload))


LABELS = "train-labels-idx1-ubyte.gz"
HOUSING = "cal_housing.data"
CORRUPTIONS = {  # name -> (source, file name in the mirror, file it stands for, corruption)
    "truncated gzip": ("mnist", LABELS, LABELS, lambda raw: raw[: len(raw) // 2]),
    "flipped byte in a gzip": ("mnist", LABELS, LABELS, flip_middle_byte),
    "empty gzip": ("mnist", LABELS, LABELS, lambda raw: b""),
    "other version of a gzip": ("mnist", LABELS, LABELS, other_version),
    "truncated decompressed copy": (
        "mnist",
        LABELS.removesuffix(".gz"),
        LABELS,
        lambda raw: gzip.decompress(raw)[:-10],
    ),
    "flipped byte in a text file": ("california_housing", HOUSING, HOUSING, flip_middle_byte),
    "text file with a line appended": (
        "california_housing",
        HOUSING,
        HOUSING,
        lambda raw: raw + b"-122.0,37.0,1.0,1.0,1.0,1.0,1.0,1.0,1.0\n",
    ),
    "text file with CRLF line ends": (
        "california_housing",
        HOUSING,
        HOUSING,
        lambda raw: raw.replace(b"\n", b"\r\n"),
    ),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_raw_file_is_refused_naming_file_and_checksum(
    corruption, tmp_path, mirror, offline
):
    source, name, stands_for, corrupt = CORRUPTIONS[corruption]
    bad = tmp_path / "mirror" / source
    shutil.copytree(mirror / source, bad)
    (bad / stands_for).unlink()
    original = (mirror / source / stands_for).read_bytes()
    (bad / name).write_bytes(corrupt(original))
    dest = tmp_path / "raw"
    with pytest.raises(data.DataError) as caught:
        data.fetch(source, dest, str(tmp_path / "mirror"))
    message = str(caught.value)
    expected = next(f.sha256 for f in data.SOURCES[source].files if f.name == stands_for)
    assert str(bad / name) in message and expected in message
    assert "was not used" in message
    assert not (dest / stands_for).exists() and not (dest / "manifest.json").exists()


def test_existing_raw_file_that_changed_is_refused_at_prepare(tmp_path, mirror, offline):
    data.fetch("california_housing", tmp_path / "raw", str(mirror))
    with open(tmp_path / "raw" / "cal_housing.data", "ab") as handle:
        handle.write(b"1,2,3\n")
    with pytest.raises(data.DataError, match="SHA-256"):
        data.prepare({"source": "california_housing"}, tmp_path / "raw")


def test_california_housing_preparation(tmp_path, mirror, offline):
    data.fetch("california_housing", tmp_path / "raw", str(mirror))
    spec = {"source": "california_housing", "test_fraction": 0.2, "split_seed": 0, "clip": 5.0}
    arrays, info = data.prepare(spec, tmp_path / "raw")
    assert (info["n_train"], info["n_val"], info["n_test"]) == (14861, 1651, 4128)
    assert info["n_features"] == 8 and info["validation"]["fraction"] == 0.1
    assert arrays["y_train"].shape == (14861, 1) and arrays["x_val"].shape == (1651, 8)
    # the target is centred on the training mean (about 2.07: house values in $100,000)
    mean = info["target_centring"]["train_mean"][0]
    assert 2.0 < mean < 2.15 and abs(arrays["y_train"].mean()) < 1e-12
    assert abs(arrays["y_test"].mean()) < 0.05 and abs(arrays["y_val"].mean()) < 0.1
    assert np.abs(arrays["x_train"]).max() <= 5.0
    assert max(info["scaling"]["max_abs_z_train_before_clip"]) > 5.0  # clipping was needed
    # standardisation is fitted on the training split only
    raw_features, _, _ = data.read_california_housing(tmp_path / "raw" / "cal_housing.data")
    order = np.random.default_rng(0).permutation(len(raw_features))
    np.testing.assert_allclose(info["scaling"]["mean"], raw_features[order[4128:]].mean(axis=0))
    again, _ = data.prepare(spec, tmp_path / "raw")
    np.testing.assert_array_equal(arrays["x_test"], again["x_test"])


def test_constant_features_are_centred_left_unscaled_and_named(tmp_path, mirror, offline):
    """One training row: every feature is constant on it. std 0 must not divide into NaN: the
    features are centred (0 on the training row), left unscaled and named in the record."""
    data.fetch("california_housing", tmp_path / "raw", str(mirror))
    spec = {"source": "california_housing", "train_size": 1, "validation_fraction": 0}
    arrays, info = data.prepare(spec, tmp_path / "raw")
    np.testing.assert_array_equal(arrays["x_train"], 0.0)
    assert np.isfinite(arrays["x_test"]).all() and arrays["x_test"].std() > 0
    assert info["scaling"]["constant_features"] == info["feature_names"]
    z_train, z_test, scaling = data.standardise(
        np.array([[1.0, 0.0], [1.0, 2.0]]), np.array([[4.0, 1.0]]), None, ["border", "pixel"]
    )
    np.testing.assert_array_equal(z_train, [[0.0, -1.0], [0.0, 1.0]])
    np.testing.assert_array_equal(z_test, [[3.0, 0.0]])  # centred on the training mean, scale 1
    assert scaling["constant_features"] == ["border"] and scaling["std"] == [0.0, 1.0]


def test_mnist_stratified_subset_and_global_scaling(tmp_path, mirror, offline):
    data.fetch("mnist", tmp_path / "raw", str(mirror))
    arrays, info = data.prepare(
        {"source": "mnist", "train_size": 1000, "test_size": 500}, tmp_path / "raw"
    )
    full = data.read_idx(tmp_path / "raw" / "train-labels-idx1-ubyte.gz")
    expected = np.bincount(full) / len(full) * 1000
    drawn = np.concatenate([arrays["y_train"], arrays["y_val"]])  # validation: 10 % of them
    assert np.abs(np.bincount(drawn) - expected).max() < 1.0
    assert arrays["x_train"].shape == (900, 784) and len(arrays["y_test"]) == 500
    assert len(arrays["y_val"]) == 100 and not info["target_centring"]["centred"]
    both = np.concatenate([arrays["x_train"], arrays["x_val"]])  # scaled before the carve
    assert abs(both.mean()) < 1e-9 and abs(both.std() - 1) < 1e-9
    assert np.isfinite(arrays["x_test"]).all()
    assert info["scaling"]["kind"] == "global"


def test_teacher_has_planted_rank():
    spec = {
        "source": "teacher",
        "rank": 3,
        "input_dim": 12,
        "teacher_width": 16,
        "train_size": 300,
        "test_size": 100,
        "seed": 4,
    }
    arrays, info = data.prepare(spec, None)
    singular = np.linalg.svd(arrays["teacher_w"], compute_uv=False)
    assert (singular > 1e-10 * singular[0]).sum() == 3
    np.testing.assert_allclose(singular[:3], np.sqrt(16 / 3))  # orthonormal: all equal
    np.testing.assert_allclose(arrays["teacher_a"], 0.25)
    assert info["teacher"]["rank"] == 3 and info["teacher"]["factors"] == "orthonormal"
    again, _ = data.prepare(spec, None)
    np.testing.assert_array_equal(arrays["y_train"], again["y_train"])
    gaussian, _ = data.prepare({**spec, "factors": "gaussian", "output_weights": "gaussian"}, None)
    singular = np.linalg.svd(gaussian["teacher_w"], compute_uv=False)
    assert (singular > 1e-10 * singular[0]).sum() == 3 and singular[2] < 0.9 * singular[0]


def test_teacher_rank_above_dimension_is_refused():
    with pytest.raises(data.DataError, match="exceeds"):
        data.prepare({"source": "teacher", "rank": 30, "input_dim": 10}, None)


def test_a_validation_fraction_that_leaves_no_training_sample_is_refused():
    spec = {"source": "teacher", "rank": 1, "train_size": 3, "validation_fraction": 0.9}
    with pytest.raises(data.DataError, match="validation_fraction 0.9 leaves no training"):
        data.prepare(spec, None)
    arrays, info = data.prepare({**spec, "validation_fraction": 0.0}, None)
    assert info["n_val"] == 0 and len(arrays["x_train"]) == 3


def test_prepared_file_that_changed_is_refused(tmp_path):
    arrays, info = data.prepare(
        {"source": "teacher", "rank": 2, "train_size": 50, "test_size": 20}, None
    )
    npz, info_path = tmp_path / "t.npz", tmp_path / "t.json"
    data.write_prepared(arrays, info, str(npz), str(info_path))
    loaded, _ = data.load_prepared(npz)
    np.testing.assert_array_equal(loaded["x_train"], arrays["x_train"])
    np.savez(npz, **{**arrays, "x_train": arrays["x_train"] + 1})
    with pytest.raises(data.DataError, match="does not match"):
        data.load_prepared(npz)


FASHION_DIR = data.SOURCES["fashion_mnist"].system_dirs[0]


@pytest.mark.skipif(
    not (data.Path(FASHION_DIR) / "train-labels-idx1-ubyte.gz").is_file(),
    reason=f"Debian's dataset-fashion-mnist is not installed ({FASHION_DIR}); .ci/run installs it",
)
def test_fashion_mnist_comes_from_the_debian_package(tmp_path, offline, monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    manifest = data.fetch("fashion_mnist", tmp_path / "raw", None)
    assert all(e["origin"].startswith(f"copy of {FASHION_DIR}") for e in manifest["files"].values())
    arrays, info = data.prepare({"source": "fashion_mnist", "train_size": 600}, tmp_path / "raw")
    assert arrays["x_test"].shape == (10000, 784) and info["n_train"] == 540
    assert sorted(np.unique(arrays["y_train"])) == list(range(10))


def test_offline_fashion_mnist_names_the_package_that_provides_it(tmp_path, offline, monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    empty = dataclasses.replace(data.SOURCES["fashion_mnist"], system_dirs=(str(tmp_path / "x"),))
    monkeypatch.setitem(data.SOURCES, "fashion_mnist", empty)
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
        data.fetch("fashion_mnist", tmp_path / "raw", None)
    assert not (tmp_path / "raw" / data.MANIFEST).exists()


def test_cifar10_comes_from_its_binary_archive_standardised_per_channel(tmp_path, cifar_mirror):
    mirror, batches = cifar_mirror
    manifest = data.fetch("cifar10", tmp_path / "raw", str(mirror))
    entry = manifest["files"][data.CIFAR_ARCHIVE]
    assert "sha256_file" in entry and entry["origin"].startswith("copy of ")
    arrays, info = data.prepare({"source": "cifar10", "validation_fraction": 0.1}, tmp_path / "raw")
    assert arrays["x_train"].shape == (90, 3072) and arrays["x_val"].shape == (10, 3072)
    assert arrays["x_test"].shape == (20, 3072) and arrays["x_train"].dtype == np.float32
    assert info["image_shape"] == [3, 32, 32] and info["scaling"]["kind"] == "per_channel"
    raw = np.concatenate([batches[name][:, 1:] for name in data.CIFAR_TRAIN]).astype(np.float64)
    red = raw[:, :1024]  # the first 1,024 bytes of a record are the red plane: channel 0
    assert info["scaling"]["mean"][0] == pytest.approx(red.mean())
    assert info["scaling"]["std"][2] == pytest.approx(raw[:, 2048:].std())
    scaled = np.concatenate([arrays["x_train"], arrays["x_val"]]).reshape(-1, 3, 1024)
    np.testing.assert_allclose(scaled.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=(0, 2)), 1, atol=1e-5)
    test_labels = batches[data.CIFAR_TEST][:, 0]
    assert sorted(arrays["y_test"].tolist()) == sorted(test_labels.tolist())


def test_a_cifar_archive_that_is_not_the_canonical_one_is_refused(tmp_path, offline):
    folder = tmp_path / "mirror" / "cifar10"
    folder.mkdir(parents=True)
    cifar_archive(folder / data.CIFAR_ARCHIVE)
    with pytest.raises(data.DataError) as refused:
        data.fetch("cifar10", tmp_path / "raw", str(folder.parent))
    message = str(refused.value)
    assert data.SOURCES["cifar10"].files[0].sha256 in message and "cifar-10-binary" in message
    assert not (tmp_path / "raw" / data.MANIFEST).exists()
    assert not (tmp_path / "raw" / data.CIFAR_ARCHIVE).exists()


def test_a_cifar_batch_of_broken_records_is_refused_by_name(tmp_path):
    cifar_archive(tmp_path / "broken.tar.gz", short_by=1)
    with pytest.raises(data.DataError, match=r"data_batch_1\.bin: .* whole number"):
        data.read_cifar(tmp_path / "broken.tar.gz")
