import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.config import ModelConfig
from bench.errors import ConfigError
from bench.models import CLASSIFICATION, SEGMENTATION, build_model, model_spec


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
        model = build_model(ModelConfig(name="fcn_resnet101", bn_recalibration_batches=batches), 64, 64,
                            torch.device("cpu"), seed=0)
        with torch.no_grad():
            outputs[batches] = model.half()(x.half())
    assert not torch.isfinite(outputs[0]).all()
    assert torch.isfinite(outputs[8]).all()


def test_each_point_builds_a_fresh_model():
    a = build_model(ModelConfig(name="resnet18"), 64, 64, torch.device("cpu"), seed=0)
    b = build_model(ModelConfig(name="resnet18"), 64, 64, torch.device("cpu"), seed=0)
    assert torch.equal(a.conv1.weight, b.conv1.weight)  # same seed, same weights
    a.half()
    assert next(b.parameters()).dtype == torch.float32


def test_suite_commit_outside_a_checkout_is_unknown_or_named(tmp_path, monkeypatch):
    import shutil

    from bench import fingerprint

    copy = tmp_path / "bench"
    shutil.copytree(Path(fingerprint.__file__).parent, copy)
    script = "import json, bench.fingerprint as f; print(json.dumps(f.suite_commit()))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    env.pop("BENCH_COMMIT", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(out.stdout) == {"bench.commit": "unknown"}
    env["BENCH_COMMIT"] = "abc1234"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(out.stdout) == {"bench.commit": "abc1234"}
    here = fingerprint.suite_commit()
    assert len(here["bench.commit"]) == 40 and here["bench.commit_dirty"] in {"true", "false"}
