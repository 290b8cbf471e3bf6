import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.contract.errors import ConfigError
from bench.contract.records import Model
from bench.device.models import CLASSIFICATION, SEGMENTATION, build_model, check_state_dict, model_spec

MODEL = Model("resnet18", "random", 8)


def test_blog_models_have_blog_sizes_and_other_torchvision_models_are_accepted():
    assert model_spec("resnet50").default_size == 256 and model_spec("resnet50").task == CLASSIFICATION
    assert model_spec("deeplabv3_resnet101").default_size == 512
    assert model_spec("deeplabv3_resnet101").task == SEGMENTATION
    assert model_spec("mobilenet_v3_small").default_size == 224
    with pytest.raises(ConfigError, match="unknown model 'resnet19'"):
        model_spec("resnet19")


def test_batchnorm_reestimation_keeps_random_resnet101_finite_in_fp16():
    """With init statistics, fcn_resnet101's activations overflow fp16 (the NaNs seen on the H100)."""
    x = torch.randn(2, 3, 64, 64)
    outputs = {}
    for batches in (0, 8):
        model = build_model(Model("fcn_resnet101", "random", batches), 64,
                            64, torch.device("cpu"), seed=0)
        with torch.no_grad():
            outputs[batches] = model.half()(x.half())
    assert not torch.isfinite(outputs[0]).all()
    assert torch.isfinite(outputs[8]).all()


def test_each_point_builds_a_fresh_model():
    a = build_model(MODEL, 64, 64, torch.device("cpu"), seed=0)
    b = build_model(MODEL, 64, 64, torch.device("cpu"), seed=0)
    assert torch.equal(a.conv1.weight, b.conv1.weight)  # same seed, same weights
    a.half()
    assert next(b.parameters()).dtype == torch.float32


def test_a_state_dict_for_another_architecture_is_one_line():
    state = build_model(MODEL._replace(name="resnet34"), 64, 64, torch.device("cpu"), seed=0).state_dict()
    with pytest.raises(ConfigError) as error:
        check_state_dict("resnet18", CLASSIFICATION, state, "r34.pt")
    message = str(error.value)
    assert "\n" not in message and message.startswith("model.weights: 'r34.pt' is not a state dict for resnet18")
    assert "unexpected key(s), e.g. layer1.2." in message


def test_suite_commit_outside_a_checkout_is_unknown_or_named(tmp_path):
    from bench.store import record

    copy = tmp_path / "bench"
    shutil.copytree(Path(record.__file__).parents[1], copy)  # the bench package, outside any checkout
    script = "import json, bench.store.record as r; print(json.dumps(r.suite_commit()))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    env.pop("BENCH_COMMIT", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(out.stdout) == "unknown", out.stderr
    env["BENCH_COMMIT"] = "abc1234"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(out.stdout) == "abc1234"
    # The tree these tests run in: a checkout (commit, "-dirty" with local changes) or a source tarball.
    in_checkout = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(record.__file__).parent,
                                 capture_output=True).returncode == 0
    here = record.suite_commit()
    if in_checkout:
        assert len(here.removesuffix("-dirty")) == 40
    else:
        assert here == os.environ.get("BENCH_COMMIT", "unknown")
