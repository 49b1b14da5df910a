"""`kernels/` ships as `fused_optim.kernels`, never as a top-level `kernels` module: editable and wheel installs."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import importlib.util, fused_optim, fused_optim.kernels.lamb, fused_optim.kernels.lars, "
    "fused_optim.experiments.study; "
    "spec = importlib.util.find_spec('kernels'); "
    "print(fused_optim.kernels.__file__); print(spec.origin if spec else None)"
)


def _probe(cwd: Path, env: dict | None = None) -> tuple[Path, str]:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    kernels_file, top_level = out.stdout.split()[-2:]
    return Path(kernels_file), top_level


@pytest.mark.parametrize("where", ["outside", "repo root"])
def test_editable_install_imports_the_kernels_from_any_folder(tmp_path, where):
    cwd = tmp_path if where == "outside" else REPO
    kernels_file, top_level = _probe(cwd)
    assert kernels_file.parent == REPO / "kernels"
    if where == "outside":
        # The install adds no top-level `kernels` (at the repo root, Python's own cwd entry on sys.path finds the
        # folder; installed packages, e.g. bitsandbytes, look for an unrelated `kernels` package).
        assert top_level == "None" or Path(top_level).parent != REPO / "kernels"


def test_wheel_ships_kernels_inside_the_package(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("fused_optim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fused_optim/kernels/lamb.py" in names and "fused_optim/kernels/lars.py" in names
    assert "fused_optim/experiments/range_test.py" in names
    assert not [n for n in names if n.startswith(("kernels/", "experiments/"))]

    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # The wheel's copy first on the path, from a folder outside the repository.
    env = {**os.environ, "PYTHONPATH": str(site)}
    kernels_file, top_level = _probe(tmp_path, env)
    assert kernels_file.parent == site / "fused_optim" / "kernels"
    assert top_level == "None" or Path(top_level).parent != REPO / "kernels"
    assert not (site / "kernels").exists()
