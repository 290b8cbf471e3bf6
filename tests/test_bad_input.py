"""Each bad input stops before any work with one line ``error: ...`` and exit status 2, and creates no store."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, SMALL, free_port, run_cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    (root / "empty").mkdir()
    (root / "broken").mkdir()
    (root / "broken" / "a.jpg").write_bytes(b"this is not a jpeg")
    torch.save([1, 2, 3], root / "list.pt")
    from torchvision.models import resnet34

    torch.save(resnet34().state_dict(), root / "resnet34.pt")
    return root


CASES = {
    # Hydra's own errors about the command line, in one line with what is allowed
    "unknown model option": (["model=resnet999"], "model=resnet999 is not an option; model is one of: "
                                                  "deeplabv3_resnet101"),
    "unknown precision": (["precision=int4"], "precision=int4 is not an option; precision is one of: bf16, fp16"),
    "unknown scenario": (["scenario=offline"], "scenario=offline is not an option; scenario is one of: latency"),
    "not an integer": (["input.height=abc"], "input.height=abc: Value 'abc' of type 'str' could not be converted"),
    "typo in a key": (["timing.min_iter=5"], "timing.min_iter is not a setting (did you mean timing.min_iters?"),
    "typo added with +": (["+precison=fp16"], "unknown setting precison (did you mean precision?)"),
    "model name missing": (["model=torchvision"], "model.name needs a value (model=torchvision needs model.name="),
    # values no device could measure, found by the controller
    "batch 0": (["input.batch_size=0"], "input.batch_size=0 must be >= 1"),
    "negative size": (["input.height=-3"], "input.height=-3 must be a positive integer"),
    "no processes": (["timing.repeats=0"], "timing.repeats=0 must be >= 1 (processes per point)"),
    "negative processes": (["timing.repeats=-2"], "timing.repeats=-2 must be >= 1"),
    "interval level above 1": (["timing.interval=1.5"], "timing.interval=1.5 must be a level between 0 and 1"),
    "interval level 0": (["timing.interval=0"], "timing.interval=0.0 must be a level between 0 and 1"),
    "folder source without folder": (["calibration.source=folder", "precision=int8"],
                                     "calibration.source=folder needs calibration.folder="),
    # found on the device, before anything is measured
    "unknown torchvision model": (["model=torchvision", "model.name=resnet19"], "unknown model 'resnet19'"),
    "too small": (["input.height=16", "input.width=16"], "input.height=16 is too small for resnet18"),
    "missing calibration folder": (["calibration=folder", "calibration.folder={root}/nope", "precision=int8"],
                                   "does not exist"),
    "empty calibration folder": (["calibration=folder", "calibration.folder={root}/empty", "precision=int8"],
                                 "has no images"),
    "calibration images that do not decode": (["calibration=folder", "calibration.folder={root}/broken",
                                               "precision=int8"], "none of its 1 image file(s) decodes"),
    "missing weights": (["model.weights={root}/nope.pt"], "does not exist"),
    "not a state dict": (["model.weights={root}/list.pt"], "not a state dict"),
    "state dict of another architecture": (["model.weights={root}/resnet34.pt"],
                                           "is not a state dict for resnet18 (96 unexpected key(s), e.g. layer1.2."),
    "bad backend option value": (["backend=onnxruntime", "backend.calibrate_method=Magic"], "is not one of"),
    "unknown backend option": (["backend=onnxruntime", "+backend.magic=1"], "backend.magic is not an option of"),
    "bad device": (["device=tpu"], "device='tpu' is not"),
    "resume given to a single run": (["resume=0123456789abcdef0123456789abcdef"], "only a sweep (-m) is resumed"),
    # the store, checked before anything is measured
    "unreachable store": (["tracking.uri=http://127.0.0.1:{port}"], "cannot be reached"),
    "store in a folder that does not exist": (["tracking.uri=sqlite:////no/such/dir/mlflow.db"],
                                              "folder /no/such/dir does not exist"),
    "unknown store scheme": (["tracking.uri=garbage://x"], "MLflow has no store for scheme 'garbage'"),
}


@pytest.mark.parametrize("case", CASES)
def test_one_line_error_before_any_work(case, files, tmp_path):
    overrides, message = CASES[case]
    args = [o.format(root=files, port=free_port()) for o in overrides]
    proc = run_cli(*SMALL, *args, cwd=tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == errors[0] and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no store, no lock, no outputs/


def test_a_grid_is_checked_whole_before_its_first_point(tmp_path):
    """Point 2 of 3 is wrong: nothing is measured, not even point 1."""
    proc = run_cli(*SMALL, "backend=pytorch", "-m", "input.batch_size=1,0,2", cwd=tmp_path, timeout=180)  # -m anywhere
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: point 2 of 3 (")
    assert "input.batch_size=0 must be >= 1" in proc.stderr and "measuring" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_option_set_beside_a_swept_backend_reaches_each_point_and_is_checked_there(tmp_path):
    """Hydra composes a multirun first with the default backend (auto), which has no channels_last."""
    plans = tmp_path / "plans.jsonl"
    made = run_cli("-m", *SMALL, "backend=pytorch,inductor", "backend.channels_last=true", "executor=plan",
                   f"executor.out={plans}", cwd=tmp_path, timeout=180)
    assert made.returncode == 0, made.stderr[-2000:]
    backends = [json.loads(line)["backend"] for line in plans.read_text().splitlines()]
    assert [(b["name"], b["channels_last"]) for b in backends] == [("pytorch", True), ("inductor", True)]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    wrong = run_cli("-m", *SMALL, "backend=pytorch,onnxruntime", "backend.channels_last=true", cwd=elsewhere,
                    timeout=180)
    assert wrong.returncode == 2 and "measuring" not in wrong.stderr
    assert "backend.channels_last is not an option of backend onnxruntime" in wrong.stderr.strip().splitlines()[-1]
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("module, args, message", [
    ("analysis.report", ["--format", "pdf"], "argument --format: invalid choice: 'pdf'"),
    ("analysis.regress", ["--threshold", "abc"], "'abc' is not a percentage like 5 or 5%"),
    ("bench.store.sync", ["--nope"], "unrecognized arguments: --nope"),
    ("bench.device", [], "the following arguments are required"),
])
def test_a_mistake_in_a_command_line_option_is_one_line_without_the_usage(module, args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: python")
    assert message in proc.stderr and "usage:" not in proc.stderr


def test_the_ui_command_says_in_one_line_what_it_cannot_open_and_starts_nothing(small_sweep, tmp_path):
    store = small_sweep.store
    cases = [(["--tracking-uri", f"sqlite:///{tmp_path / 'nope.db'}"], "no MLflow database at"),
             (["--tracking-uri", store, "--sweep", "sweep 00000000"], "sweep 'sweep 00000000': no such sweep"),
             (["--tracking-uri", store, "--port", "70000"], "--port 70000 is not a TCP port")]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases.append((["--tracking-uri", store, "--port", str(port)], f"port {port} on 127.0.0.1 is taken"))
        for args, message in cases:
            proc = subprocess.run([sys.executable, "-m", "bench.store.ui", *args], cwd=tmp_path, capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
            assert proc.returncode == 2 and proc.stdout == "", (args, proc.stderr)
            assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and message in proc.stderr, \
                proc.stderr
    assert list(tmp_path.iterdir()) == []  # no empty database made, no log left
