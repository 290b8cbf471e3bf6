"""Each bad input stops before any work with one clear line, and creates no store."""
import socket

import pytest
import torch

from conftest import SMALL, run_cli


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    (root / "empty").mkdir()
    torch.save([1, 2, 3], root / "list.pt")
    return root


CASES = {
    "unknown torchvision model": (["model=torchvision", "model.name=resnet19"], "unknown model 'resnet19'"),
    "too small": (["input.height=16", "input.width=16"], "input.height=16 is too small for resnet18"),
    "negative size": (["input.height=-3"], "input.height=-3 must be a positive integer"),
    "batch 0": (["input.batch_size=0"], "input.batch_size=0 must be >= 1"),
    "missing calibration folder": (["calibration=folder", "calibration.folder={root}/nope"], "does not exist"),
    "empty calibration folder": (["calibration=folder", "calibration.folder={root}/empty"], "has no images"),
    "missing weights": (["model.weights={root}/nope.pt"], "does not exist"),
    "not a state dict": (["model.weights={root}/list.pt"], "not a state dict"),
    "bad backend option": (["backend=onnxruntime", "backend.calibrate_method=Magic"], "is not one of"),
    "unreachable store": (["tracking.uri=http://127.0.0.1:{port}"], "cannot be reached"),
}


@pytest.mark.parametrize("case", CASES)
def test_one_line_error_before_any_work(case, files, tmp_path):
    overrides, message = CASES[case]
    args = [o.format(root=files, port=_closed_port()) for o in overrides]
    proc = run_cli(*SMALL, *args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("override", ["model=resnet19", "precision=fp17", "backend=tensorrrt"])
def test_unknown_group_option_is_rejected_by_hydra_with_the_options(override, tmp_path):
    proc = run_cli(override, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert "Available options" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_typo_in_a_key_is_rejected(tmp_path):
    proc = run_cli("timing.min_iter=5", cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert "min_iter" in proc.stderr
