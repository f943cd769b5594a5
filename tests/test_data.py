"""Data loading from every supported source, the error when there is none, and the
augmentations.  Tests that need a data set fail with the library's DataNotFound message
when it is missing (they never skip)."""
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import hypernas.data as data
from hypernas.data import DataNotFound, augment, load

CIFAR_DIR = "/work/shared/data"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def fmnist():
    return load("fashion_mnist", download=False)


def test_fashion_mnist_splits(fmnist):
    sp = fmnist
    assert sp.name == "fashion_mnist"
    for x, y, n in ((sp.x_train, sp.y_train, 30000), (sp.x_val, sp.y_val, 30000),
                    (sp.x_test, sp.y_test, 10000)):
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.uint8
        assert y.shape == (n,) and y.dtype == torch.long
        assert y.min() == 0 and y.max() == 9
        assert len(y.unique()) == 10
    assert sp.x_train.float().std() > 50            # real images, not blanks
    assert not torch.equal(sp.x_train[:100], sp.x_val[:100])
    x = sp.normalize(sp.x_train[:2000])
    assert x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1


def test_cifar10_npz_real():
    sp = load("cifar10", CIFAR_DIR, download=False)
    assert sp.x_train.shape == (25000, 3, 32, 32) and sp.x_val.shape == (25000, 3, 32, 32)
    assert sp.x_test.shape == (10000, 3, 32, 32) and sp.x_test.dtype == torch.uint8
    assert sp.y_test.min() == 0 and sp.y_test.max() == 9
    assert sp.source.endswith("cifar10.npz")


def test_npz_nhwc_to_nchw_and_half_split(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    y_train = np.arange(10) % 10
    y_test = np.array([3, 1, 4, 1])
    np.savez(tmp_path / "cifar10.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    sp = load("cifar10", tmp_path, download=False)
    assert sp.source == str(tmp_path / "cifar10.npz")
    assert sp.x_train.shape == (5, 3, 32, 32) and sp.x_val.shape == (5, 3, 32, 32)
    assert sp.x_test.shape == (4, 3, 32, 32)
    # element [n, c, h, w] is the file's [n, h, w, c]; first half trains, second validates
    assert np.array_equal(sp.x_train.numpy(), x_train[:5].transpose(0, 3, 1, 2))
    assert np.array_equal(sp.x_val.numpy(), x_train[5:].transpose(0, 3, 1, 2))
    assert np.array_equal(sp.x_test.numpy(), x_test.transpose(0, 3, 1, 2))
    assert sp.y_train.tolist() == [0, 1, 2, 3, 4] and sp.y_val.tolist() == [5, 6, 7, 8, 9]
    assert sp.y_test.dtype == torch.long and sp.y_test.tolist() == [3, 1, 4, 1]


def test_npz_one_folder_down_and_grayscale(tmp_path):
    (tmp_path / "fashion_mnist").mkdir()
    x = np.arange(6 * 28 * 28, dtype=np.int64).reshape(6, 28, 28).astype(np.uint8)
    np.savez(tmp_path / "fashion_mnist" / "fashion_mnist.npz", x_train=x, y_train=np.arange(6),
             x_test=x[:2], y_test=np.arange(2))
    sp = load("fashion_mnist", tmp_path, download=False)
    assert sp.x_train.shape == (3, 1, 28, 28)
    assert np.array_equal(sp.x_val[:, 0].numpy(), x[3:])


def test_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "cifar10.npz", x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="y_train"):
        load("cifar10", tmp_path, download=False)


def test_torchvision_layout_via_env_var(tmp_path, monkeypatch, fmnist):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in sorted(data.DEBIAN_FMNIST.glob("*-ubyte.gz")):
        with gzip.open(gz, "rb") as src, open(raw / gz.name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    assert len(list(raw.iterdir())) == 4
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    sp = load("fashion_mnist", download=False)
    assert sp.source == str(raw)
    assert sp.x_train.shape == (30000, 1, 28, 28) and sp.x_test.shape == (10000, 1, 28, 28)
    assert torch.equal(sp.x_test, fmnist.x_test) and torch.equal(sp.y_val, fmnist.y_val)


def test_missing_fashion_mnist_names_every_way(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FMNIST", tmp_path / "no-debian")
    (tmp_path / "empty").mkdir()        # a data directory that does not exist is another error
    with pytest.raises(DataNotFound) as err:
        load("fashion_mnist", tmp_path / "empty", download=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "fashion_mnist was not found in" in msg and "empty" in msg
    for needle in ("data_dir", "--data-dir", "HYPERNAS_DATA", "download",
                   "train-images-idx3-ubyte", "FashionMNIST/raw", "fashion_mnist.npz",
                   "apt-get install dataset-fashion-mnist", "x_train, y_train, x_test, y_test"):
        assert needle in msg, f"{needle!r} missing from:\n{msg}"
    assert "could not download" not in msg      # download was off


def test_missing_cifar10_names_every_way(tmp_path):
    with pytest.raises(DataNotFound) as err:
        load("cifar10", tmp_path, download=False)
    msg = str(err.value)
    for needle in ("data_dir", "HYPERNAS_DATA", "cifar-10-batches-py", "cifar10.npz", "x_train"):
        assert needle in msg, f"{needle!r} missing from:\n{msg}"


def test_unknown_dataset():
    with pytest.raises(ValueError, match="cifar10"):
        load("mnist")


# -- augmentation -----------------------------------------------------------------------

def _batch(fmnist, n=16):
    return fmnist.normalize(fmnist.x_train[:n])


@pytest.mark.parametrize("kind", ["affine_vflip", "crop_hflip"])
def test_augment_shapes_determinism_and_change(fmnist, kind):
    if kind == "crop_hflip":
        x = torch.randn(16, 3, 32, 32)
    else:
        x = _batch(fmnist)
    a = augment(x, kind, torch.Generator().manual_seed(5))
    b = augment(x, kind, torch.Generator().manual_seed(5))
    c = augment(x, kind, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    changed = [(not torch.equal(a[i], x[i])) for i in range(len(x))]
    assert sum(changed) >= len(x) - 2


def test_crop_hflip_is_a_padded_crop(fmnist):
    torch.manual_seed(0)
    x = torch.randn(6, 3, 32, 32)
    out = augment(x, "crop_hflip", torch.Generator().manual_seed(1))
    xp = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        found = any(torch.equal(out[i], cand)
                    for dy in range(9) for dx in range(9)
                    for crop in [xp[i, :, dy:dy + 32, dx:dx + 32]]
                    for cand in (crop, crop.flip(2)))
        assert found, f"image {i} is no padded crop (or its mirror) of the input"


def _z(a):
    a = a.flatten(1)
    a = a - a.mean(1, keepdim=True)
    return a / a.norm(dim=1, keepdim=True)


def test_affine_keeps_the_picture_like_torchvision(fmnist):
    import torchvision.transforms as T
    x = _batch(fmnist, 128)
    out = augment(x, "affine_vflip", torch.Generator().manual_seed(0))
    bg = x.amin(dim=(1, 2, 3), keepdim=True)
    # nearest sampling: every output pixel is an input pixel of its image or the background
    for i in range(8):
        vals = torch.cat([x[i].flatten(), bg[i].flatten()])
        d = (out[i].flatten()[:, None] - vals[None]).abs().min(1).values
        assert d.max() < 1e-5
    # about half the images are flipped vertically
    flipped = ((_z(out) * _z(x.flip(2))).sum(1) > (_z(out) * _z(x)).sum(1)).sum().item()
    assert 40 <= flipped <= 88
    # the authors' torchvision transform, on the same images, moves them as much: the
    # correlation of each output with its source (or the source's mirror) is alike
    tf = T.Compose([T.RandomAffine(15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=0.1),
                    T.RandomVerticalFlip()])
    torch.manual_seed(0)
    ref = torch.stack([tf(x[i] - bg[i]) + bg[i] for i in range(len(x))])

    def own(y):
        return torch.maximum((_z(y) * _z(x)).sum(1), (_z(y) * _z(x.flip(2))).sum(1)).median().item()
    assert 0.4 < own(out) < 0.9
    assert abs(own(out) - own(ref)) < 0.08, (own(out), own(ref))


def test_augment_none_and_unknown(fmnist):
    x = _batch(fmnist, 4)
    assert augment(x, "none", torch.Generator()) is x
    with pytest.raises(ValueError, match="augmentation"):
        augment(x, "mixup", torch.Generator())


def test_idx_files_compressed_with_xz(tmp_path, fmnist):
    """xz-compressed IDX files (smaller than .gz: what travels to a lent GPU) load the same."""
    import lzma
    for gz in sorted(data.DEBIAN_FMNIST.glob("*-ubyte.gz")):
        with gzip.open(gz, "rb") as src, lzma.open(tmp_path / (gz.name[:-3] + ".xz"), "wb", preset=1) as dst:
            shutil.copyfileobj(src, dst)
    sp = load("fashion_mnist", tmp_path, download=False)
    assert sp.source == str(tmp_path)
    assert torch.equal(sp.x_train, fmnist.x_train) and torch.equal(sp.y_test, fmnist.y_test)
