"""Datasets as in-memory tensors, and batch augmentation on tensors.

Where the data comes from, in order:

1. ``data_dir`` (argument) or the ``HYPERNAS_DATA`` environment variable, searched for
   * torchvision's layout (``FashionMNIST/raw/*-ubyte[.gz]``, ``cifar-10-batches-py/``),
   * plain IDX files (``train-images-idx3-ubyte[.gz|.xz]`` ...; Debian's
     ``dataset-fashion-mnist`` puts them in ``/usr/share/datasets/fashion-mnist``),
   * an ``.npz`` with ``x_train, y_train, x_test, y_test`` (``<name>.npz``, also one
     folder down, e.g. ``cifar10/cifar10.npz``);
2. Debian's Fashion-MNIST location, if installed;
3. torchvision's download into ``data_dir`` (or ``~/.cache/hypernas``): the default for
   anyone with internet.

An explicit ``data_dir`` (the argument, ``--data-dir``) means *this* copy: the folder
must exist, and the data set is taken from it or downloaded into it, never from
another place (step 2 is skipped), so that a mistyped path is an error rather than a
run on some other copy.  ``$HYPERNAS_DATA`` is a setting of the environment (the
Makefile points it at a shared folder that holds CIFAR-10 only), so it is one place to
search among the others; but a variable naming a folder that does not exist is an error
that names the variable, not a silent fall-back.

The split follows the authors' code: the first half of the official training set trains,
the second half validates; accuracy is reported on the official test set.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError

ENV_VAR = "HYPERNAS_DATA"
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")

#: name -> facts: channels, size, normalisation (from the authors' preproc.py)
DATASETS = {
    "fashion_mnist": dict(channels=1, size=28, classes=10, tv="FashionMNIST",
                          mean=(0.28604063146254594,), std=(0.35302426207299326,)),
    "cifar10": dict(channels=3, size=32, classes=10, tv="CIFAR10",
                    mean=(0.49139968, 0.48215827, 0.44653124),
                    std=(0.24703233, 0.24348505, 0.26158768)),
}


class DataNotFound(UserError, FileNotFoundError):
    """The data set is not where the user said (or anywhere); the message lists the
    ways to provide it."""


@dataclass
class Splits:
    """uint8 images ``(N, C, H, W)`` and int64 labels for each split."""
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float, normalised with the dataset's mean and std."""
        d = DATASETS[self.name]
        mean = torch.tensor(d["mean"], device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(d["std"], device=x.device).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std


def _read_idx(path: Path) -> np.ndarray:
    import lzma
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def _find_idx(folder: Path, stem: str):
    for name in (stem, stem + ".gz", stem + ".xz"):
        if (folder / name).is_file():
            return folder / name
    return None


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _load_idx_folder(folder: Path):
    paths = [_find_idx(folder, s) for s in _IDX]
    if not all(paths):
        return None
    xtr, ytr, xte, yte = (_read_idx(p) for p in paths)
    return xtr[:, None], ytr, xte[:, None], yte, str(folder)


def _load_npz(path: Path):
    d = np.load(path)
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(d.files)
    if missing:
        raise ValueError(f"{path} lacks arrays {sorted(missing)}; an .npz needs "
                         "x_train, y_train, x_test, y_test")
    x_tr, x_te = d["x_train"], d["x_test"]
    if x_tr.ndim == 3:
        x_tr, x_te = x_tr[:, None], x_te[:, None]
    elif x_tr.shape[-1] in (1, 3):  # NHWC -> NCHW
        x_tr, x_te = x_tr.transpose(0, 3, 1, 2), x_te.transpose(0, 3, 1, 2)
    return x_tr, d["y_train"], x_te, d["y_test"], str(path)


def _load_cifar_batches(folder: Path):
    import pickle
    files = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
    if not all(f.is_file() for f in files):
        return None
    parts = []
    for f in files:
        with open(f, "rb") as fh:
            d = pickle.load(fh, encoding="latin1")
        parts.append((np.asarray(d["data"]).reshape(-1, 3, 32, 32), np.asarray(d["labels"])))
    x_tr = np.concatenate([p[0] for p in parts[:5]]); y_tr = np.concatenate([p[1] for p in parts[:5]])
    return x_tr, y_tr, parts[5][0], parts[5][1], str(folder)


def _search(name: str, root: Path):
    tv = DATASETS[name]["tv"]
    aliases = {"fashion_mnist": ("fashion_mnist", "fashion-mnist", "fashionmnist", "FashionMNIST"),
               "cifar10": ("cifar10", "cifar-10", "CIFAR10")}[name]
    if name == "fashion_mnist":
        for folder in [root / tv / "raw", root] + [root / a for a in aliases]:
            found = _load_idx_folder(folder)
            if found:
                return found
    else:
        for folder in (root / "cifar-10-batches-py", root / tv / "cifar-10-batches-py"):
            found = _load_cifar_batches(folder)
            if found:
                return found
    for a in aliases:
        for path in (root / f"{a}.npz", root / a / f"{a}.npz"):
            if path.is_file():
                return _load_npz(path)
    return None


def data_dir_setting(data_dir=None):
    """The data directory in effect: the argument, else ``$HYPERNAS_DATA``, else None."""
    d = data_dir or os.environ.get(ENV_VAR)
    return Path(d).expanduser() if d else None


def check_data_dir(data_dir=None):
    """The data directory in effect and whether it was given explicitly; raises
    :class:`DataNotFound` when the argument or ``$HYPERNAS_DATA`` names no folder."""
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DataNotFound(
                f"the data directory {root} (data_dir / --data-dir) "
                f"{'is not a folder' if root.exists() else 'does not exist'}; give the folder that holds "
                "the data set (create it first for a download into it), or leave the option out to use "
                f"${ENV_VAR}, Debian's copy or a download into ~/.cache/hypernas")
        return root, True
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataNotFound(
                f"${ENV_VAR}={env} {'is not a folder' if root.exists() else 'does not exist'}; "
                f"point ${ENV_VAR} at the folder that holds the data sets, or unset it")
        return root, False
    return None, False


def load(name: str, data_dir=None, download: bool = True) -> Splits:
    """Load ``name`` (``fashion_mnist`` or ``cifar10``) as uint8 tensors, split
    train / validation (halves of the official training set) / test.  An explicit
    ``data_dir`` must exist and is the only place the data set is taken from (or
    downloaded into); see the module's docstring."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    root, explicit = check_data_dir(data_dir)
    found = _search(name, root) if root else None
    if found is None and name == "fashion_mnist" and not explicit:
        found = _load_idx_folder(DEBIAN_FMNIST)
    if found is None and download:
        found = _download(name, root or Path("~/.cache/hypernas").expanduser())
    if found is None:
        raise DataNotFound(_how_to_provide(name, root, download, explicit))
    x_tr, y_tr, x_te, y_te, source = found
    x_tr, x_te = torch.from_numpy(np.ascontiguousarray(x_tr)), torch.from_numpy(np.ascontiguousarray(x_te))
    y_tr, y_te = torch.as_tensor(np.asarray(y_tr), dtype=torch.long), torch.as_tensor(np.asarray(y_te), dtype=torch.long)
    half = len(x_tr) // 2
    return Splits(name, x_tr[:half], y_tr[:half], x_tr[half:], y_tr[half:], x_te, y_te, source)


def _one_line(err) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _download(name, root: Path):
    before = _folders(root)
    try:
        import torchvision.datasets as dset
        cls = getattr(dset, DATASETS[name]["tv"])
        tr = cls(str(root), train=True, download=True)
        te = cls(str(root), train=False, download=True)
    except Exception as err:  # no internet, no torchvision ...
        _download.last_error = err
        # a failed download leaves nothing behind: the empty folders torchvision made go
        for folder in sorted(_folders(root) - before, key=lambda f: -len(f.parts)):
            try:
                folder.rmdir()
            except OSError:
                pass
        return None
    def arr(ds):
        x = np.asarray(ds.data)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return x, np.asarray(ds.targets)
    (x_tr, y_tr), (x_te, y_te) = arr(tr), arr(te)
    return x_tr, y_tr, x_te, y_te, f"torchvision download into {root}"


def _folders(root: Path) -> set:
    """``root`` and the folders under it (two levels: torchvision's ``<Name>/raw``)."""
    if not root.is_dir():
        return set()
    found = {root}
    for child in root.iterdir():
        if child.is_dir():
            found.add(child)
            found.update(c for c in child.iterdir() if c.is_dir())
    return found


def _how_to_provide(name, root, download, explicit=False):
    tv = DATASETS[name]["tv"]
    err = getattr(_download, "last_error", None)
    lines = [f"{name} was not found{f' in {root}' if root else ''}"
             + (" (the data directory given; no other copy is used in its place)" if explicit else "")
             + (f" and torchvision could not download it ({_one_line(err)})" if download and err else "")
             + ". Provide it one of these ways:",
             f"  - with internet: leave download on; torchvision fetches it into the data directory",
             f"  - set the data directory (argument data_dir=... / --data-dir, or ${ENV_VAR}) to a folder holding"]
    if name == "fashion_mnist":
        lines += ["      the four IDX files (train-images-idx3-ubyte[.gz|.xz], ...), e.g. Debian's "
                  f"`apt-get install dataset-fashion-mnist` ({DEBIAN_FMNIST}),",
                  f"      or torchvision's layout {tv}/raw/, or fashion_mnist.npz"]
    else:
        lines += [f"      cifar-10-batches-py/ (torchvision's layout) or cifar10.npz / cifar10/cifar10.npz"]
    lines.append("  - an .npz needs arrays x_train, y_train, x_test, y_test (uint8 images NHWC or NCHW)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# augmentation on normalised float batches (per preset)

def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch ``(B, C, H, W)``; ``kind`` is ``"affine_vflip"`` (the authors'
    Fashion-MNIST: RandomAffine(15 deg, translate 0.1, scale 0.9-1.1, shear 0.1) and
    RandomVerticalFlip), ``"crop_hflip"`` (CIFAR-10: RandomCrop(32, padding=4) and
    RandomHorizontalFlip) or ``"none"``.  All randomness comes from ``generator``."""
    if kind == "none":
        return x
    B = x.shape[0]
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(dev)

    if kind == "affine_vflip":
        ang = (rand(B) * 2 - 1) * (15 * torch.pi / 180)
        shear = (rand(B) * 2 - 1) * (0.1 * torch.pi / 180)
        scale = 0.9 + 0.2 * rand(B)
        trans = (rand(B, 2) * 2 - 1) * 0.1 * 2  # fraction of size -> [-1, 1] grid units
        cos, sin = torch.cos(ang), torch.sin(ang)
        # inverse map for grid_sample: rotation+shear, then scale, then translation
        a = torch.stack([torch.stack([cos, -torch.sin(ang + shear)], -1),
                         torch.stack([sin, torch.cos(ang + shear)], -1)], -2) * scale.view(B, 1, 1)
        inv = torch.linalg.inv(a)
        theta = torch.cat([inv, -(inv @ trans.unsqueeze(-1))], -1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        bg = x.amin(dim=(1, 2, 3), keepdim=True)  # fill with the (normalised) black value
        x = F.grid_sample(x - bg, grid, mode="nearest", padding_mode="zeros",
                          align_corners=False) + bg
        flip = rand(B) < 0.5
        return torch.where(flip.view(B, 1, 1, 1), x.flip(2), x)
    if kind == "crop_hflip":
        H, W = x.shape[2:]
        p = 4
        xp = F.pad(x, (p, p, p, p))
        dy = (rand(B) * (2 * p + 1)).long().clamp(max=2 * p)
        dx = (rand(B) * (2 * p + 1)).long().clamp(max=2 * p)
        iy = (dy.view(B, 1) + torch.arange(H, device=dev)).view(B, 1, H, 1).expand(B, x.shape[1], H, W + 2 * p)
        rows = xp.gather(2, iy)
        ix = (dx.view(B, 1) + torch.arange(W, device=dev)).view(B, 1, 1, W).expand(B, x.shape[1], H, W)
        x = rows.gather(3, ix)
        flip = rand(B) < 0.5
        return torch.where(flip.view(B, 1, 1, 1), x.flip(3), x)
    raise ValueError(f"unknown augmentation {kind!r}; choose 'affine_vflip', 'crop_hflip' or 'none'")
