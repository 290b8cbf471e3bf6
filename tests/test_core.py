"""The measuring core on its own: what runs on the measured device, for every stack the devices have."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.contract.errors import ConfigError
from bench.contract.protocol import PlanError, check_plan, check_values, read_plans
from conftest import ROOT
from synthetic import plan as synthetic_plan

FORBIDDEN = ("hydra", "omegaconf", "mlflow", "pandas", "matplotlib")
# Imports every module of the core, then names any forbidden package that came with them.
IMPORT_ALL = """
import importlib, pkgutil, sys, bench.device, bench.device.backends
for package in (bench.device, bench.device.backends):
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
print(sorted(name for name in sys.modules if name.split(".")[0] in {forbidden!r}))
"""


def core_env() -> dict:
    """Only the core's source on the path, as on a device that was shipped it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return {**env, "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("which", ["py36", "py38", "this"])
def test_the_core_imports_on_each_stack_without_hydra_mlflow_or_omegaconf(which, request):
    python = sys.executable if which == "this" else request.getfixturevalue(which)
    done = subprocess.run([python, "-c", IMPORT_ALL.format(forbidden=set(FORBIDDEN))], capture_output=True,
                          text=True, env=core_env(), cwd="/", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", done.stdout


def test_the_nano_stack_answers_what_it_is_and_has(py36):
    done = subprocess.run([py36, "-m", "bench.device", "facts"], capture_output=True, text=True, env=core_env(),
                          cwd="/", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout)
    assert facts["python"] == "3.6.15" and facts["packages"]["torch"].startswith("1.10.0")
    assert facts["packages"]["onnxruntime"] == "1.10.0" and facts["packages"]["torchvision"].startswith("0.11.1")
    assert facts["backends"]["pytorch"] is None and facts["backends"]["onnxruntime"] is None
    assert facts["backends"]["inductor"].startswith("torch.compile needs torch >= 2.0")
    assert facts["backends"]["tensorrt"] == "tensorrt not installed"
    assert facts["devices"][0]["device"] == "cpu"


def test_a_plan_is_checked_field_by_field():
    good = synthetic_plan("resnet18", "onnxruntime", "int8", 64, {"device.label": "cpu"})
    good.pop("resolution")
    check_plan(good)
    check_values(good)
    for change, message in (
            (lambda p: p.update(extra=1), "unknown field 'extra'"),
            (lambda p: p["timing"].update(min_iter=5), "unknown field 'timing.min_iter'"),
            (lambda p: p["input"].pop("batch_size"), "field 'input.batch_size' is missing"),
            (lambda p: p["input"].update(height="64"), "field 'input.height' must be int or null, got '64'"),
            (lambda p: p.update(raw_baseline=1), "field 'raw_baseline' must be bool, got 1"),
            (lambda p: p.update(protocol=99), "plan protocol 99 is not this core's protocol")):
        bad = json.loads(json.dumps(good))
        change(bad)
        with pytest.raises(PlanError, match=message):
            check_plan(bad)
    for change, message in ((lambda p: p.update(precision="int4"), "precision='int4' is not one of"),
                            (lambda p: p["input"].update(batch_size=0), "input.batch_size=0 must be >= 1"),
                            (lambda p: p.update(scenario="offline"), "scenario='offline' is not one of")):
        bad = json.loads(json.dumps(good))
        change(bad)
        with pytest.raises(ConfigError, match=message):
            check_values(bad)


def test_a_plans_file_that_is_not_json_is_named_by_line():
    good = synthetic_plan("resnet18", "onnxruntime", "int8", 64, {"device.label": "cpu"})
    with pytest.raises(PlanError, match=r"plans.jsonl line 2: not JSON"):
        read_plans(json.dumps(good) + '\n{not json\n', "plans.jsonl")
    with pytest.raises(PlanError, match="holds no plans"):
        read_plans("\n\n", "plans.jsonl")


def test_each_backend_yaml_lists_exactly_the_options_its_module_declares():
    import yaml

    from bench.device.backends import BACKENDS

    for name, backend in BACKENDS.items():
        listed = yaml.safe_load((ROOT / "conf" / "backend" / f"{name}.yaml").read_text())
        assert listed.pop("name") == name
        assert listed == {option: declared.default for option, declared in backend.OPTIONS.items()}, name
