"""TensorRT version dispatch and device rules, as plain functions of real version strings.

TensorRT cannot be installed here, so these tests exercise what decides each call: which
builder/runtime API a TensorRT version gets, the keyword arguments torch2trt and
Torch-TensorRT receive, and which device/precision pairs are skipped and why. The versions
are ones that shipped: 8.2.1.8 (JetPack 4.6), 8.5.2.2 (JetPack 5.1), 10.3.0 (JetPack 6),
10.13.3.9, 11.0.0.114; Torch-TensorRT 2.9.0 to 2.14.0.
"""
import importlib.util
from types import SimpleNamespace

import pytest
import torch

from bench.device import onnx_export
from bench.device.backends import trt_rules
from bench.device.backends.tensorrt import EnginePlan, TensorrtBackend, engine_plan, parser_max_opset, \
    precision_reason
from bench.device.backends.torch2trt import (OPTIONS, Torch2trtBackend, calibration_dataset, torch2trt_kwargs,
                                      unavailable_with)
from bench.device.backends.torch_tensorrt import CompilePlan, TorchTensorrtBackend, compile_plan, describe
from bench.contract.errors import ConfigError

NANO, XAVIER, ORIN, V100, A100 = (5, 3), (7, 2), (8, 7), (7, 0), (8, 0)


def Torch2trtConfig(**changes) -> dict:
    """torch2trt's options: its defaults with ``changes``."""
    return {**{name: option.default for name, option in OPTIONS.items()}, **changes}
MIB = 1 << 20


@pytest.mark.parametrize("text, expected", [
    ("8.2.1.8", (8, 2)), ("8.5.2.2", (8, 5)), ("10.3.0", (10, 3)), ("10.13.3.9", (10, 13)),
    ("11.0.0.114", (11, 0)), ("2.10.0+cu130", (2, 10)), ("0.5.0", (0, 5)),
])
def test_versions_parse_to_major_minor(text, expected):
    assert trt_rules.parse_version(text) == expected


def test_versions_compare_as_numbers_not_strings():
    # torch2trt's own check, trt.__version__ >= '5.1', is False for "10.3.0": the bug this avoids
    assert "10.3.0" < "5.1"
    assert trt_rules.parse_version("10.3.0") > trt_rules.parse_version("8.6.1.6") > (5, 1)


@pytest.mark.parametrize("text", ["", "ten", "10", "v10.3"])
def test_unreadable_versions_are_an_error(text):
    with pytest.raises(ValueError, match="major.minor"):
        trt_rules.parse_version(text)


# --- tensorrt backend: builder and runtime API per TensorRT version ---------------------------

@pytest.mark.parametrize("version, precision, fallback, expected", [
    ("8.2.1.8", "fp32", True, EnginePlan("explicit_batch", "max_workspace_size", "v2", "fp32", (), "none")),
    ("8.2.1.8", "fp16", True, EnginePlan("explicit_batch", "max_workspace_size", "v2", "fp32", ("FP16",), "none")),
    ("8.2.1.8", "int8", True,
     EnginePlan("explicit_batch", "max_workspace_size", "v2", "fp32", ("INT8", "FP16"), "calibrator")),
    ("8.4.1.5", "fp16", True, EnginePlan("explicit_batch", "memory_pool_limit", "v2", "fp32", ("FP16",), "none")),
    ("8.5.2.2", "int8", False,
     EnginePlan("explicit_batch", "memory_pool_limit", "v3", "fp32", ("INT8",), "calibrator")),
    ("8.6.1.6", "fp16", True, EnginePlan("explicit_batch", "memory_pool_limit", "v3", "fp32", ("FP16",), "none")),
    ("10.3.0", "fp16", True, EnginePlan("default", "memory_pool_limit", "v3", "fp32", ("FP16",), "none")),
    ("10.13.3.9", "bf16", True, EnginePlan("default", "memory_pool_limit", "v3", "fp32", ("BF16",), "none")),
    ("10.13.3.9", "int8", True,
     EnginePlan("default", "memory_pool_limit", "v3", "fp32", ("INT8", "FP16"), "calibrator")),
    ("11.0.0.114", "fp32", True, EnginePlan("default", "memory_pool_limit", "v3", "fp32", (), "none")),
    ("11.0.0.114", "fp16", True, EnginePlan("default", "memory_pool_limit", "v3", "fp16", (), "none")),
    ("11.0.0.114", "int8", True, EnginePlan("default", "memory_pool_limit", "v3", "fp32", (), "qdq", "fp16")),
    ("11.1.0.5", "int8", False, EnginePlan("default", "memory_pool_limit", "v3", "fp32", (), "qdq", "fp32")),
])
def test_engine_plan_per_tensorrt_version(version, precision, fallback, expected):
    assert engine_plan(version, precision, fallback) == expected


def test_strongly_typed_tensorrt_11_never_gets_builder_flags():
    for precision in ("fp32", "fp16", "int8"):
        assert engine_plan("11.0.0.114", precision, True).builder_flags == ()
        assert engine_plan("10.16.0.1", precision, True).onnx_dtype == "fp32"


@pytest.mark.parametrize("version, reason", [
    ("8.5.2.2", "bf16 needs TensorRT >= 9.0"),
    ("11.0.0.114", "bf16-typed ONNX model"),
])
def test_bf16_where_tensorrt_backend_cannot_build_it(version, reason):
    assert reason in precision_reason(version, "bf16", modelopt_installed=True)
    with pytest.raises(ValueError, match=reason):
        engine_plan(version, "bf16", True)


def test_int8_on_tensorrt_11_needs_modelopt_but_calibrators_do_not():
    assert "nvidia-modelopt" in precision_reason("11.0.0.114", "int8", modelopt_installed=False)
    assert precision_reason("11.0.0.114", "int8", modelopt_installed=True) is None
    assert precision_reason("10.13.3.9", "int8", modelopt_installed=False) is None


def test_unknown_precision_is_an_error_not_fp32():
    with pytest.raises(ConfigError, match="fp8"):
        engine_plan("10.13.3.9", "fp8", True)
    with pytest.raises(ConfigError, match="fp8"):
        torch2trt_kwargs("10.13.3.9", "0.5.0", "fp8", 1, Torch2trtConfig())
    with pytest.raises(ConfigError, match="fp8"):
        compile_plan("2.10.0", "fp8", False, True)


# --- device rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("version, cc, precision, reason", [
    ("8.2.1.8", NANO, "int8", "int8 needs compute capability >= 6.1 (DP4A); this GPU has 5.3 (Jetson Nano)"),
    ("8.6.1.6", (6, 0), "int8", "this GPU has 6.0"),
    ("10.3.0", NANO, "fp16", "Maxwell"),
    ("10.5.0", V100, "fp32", "removed in TensorRT 10.5"),
    ("10.13.3.9", V100, "fp16", "use TensorRT 10.4 or older"),
    ("11.0.0.114", V100, "int8", "compute capability 7.0"),
    ("8.5.2.2", XAVIER, "bf16", "bf16 needs compute capability >= 8.0; this GPU has 7.2"),
    ("10.13.3.9", None, "fp32", "needs a CUDA device"),
])
def test_device_rules_skip_with_the_reason(version, cc, precision, reason):
    assert reason in trt_rules.device_reason(version, cc, precision)


@pytest.mark.parametrize("version, cc, precision", [
    ("8.2.1.8", NANO, "fp16"),  # the Nano's fp16 rows are fine
    ("8.2.1.8", NANO, "fp32"),
    ("8.5.2.2", XAVIER, "int8"),  # the blog's Xavier int8 rows
    ("8.6.1.6", (6, 1), "int8"),
    ("10.4.0", V100, "int8"),  # the last TensorRT with Volta
    ("8.6.1.6", V100, "fp16"),
    ("10.3.0", ORIN, "int8"),
    ("10.13.3.9", A100, "bf16"),
    ("11.0.0.114", (9, 0), "fp16"),
])
def test_device_rules_let_supported_points_run(version, cc, precision):
    assert trt_rules.device_reason(version, cc, precision) is None


@pytest.mark.parametrize("core, cc, precision, reason", [
    (0, XAVIER, "fp16", None),
    (1, ORIN, "int8", None),
    (None, A100, "fp32", None),
    (0, A100, "fp16", "DLA cores exist only on Jetson Xavier (7.2) and Orin (8.7)"),
    (0, None, "fp16", "none (CPU)"),
    (0, XAVIER, "fp32", "the DLA runs fp16 and int8 only"),
])
def test_dla_rules(core, cc, precision, reason):
    found = trt_rules.dla_reason(core, cc, precision)
    assert found is None if reason is None else reason in found


# --- torch2trt ---------------------------------------------------------------------------------

def test_torch2trt_on_tensorrt_11_is_unavailable_with_the_reason():
    assert "does not support TensorRT 11.0.0.114" in unavailable_with("11.0.0.114")
    assert unavailable_with("10.13.3.9") is None
    assert unavailable_with("8.2.1.8") is None


def test_torch2trt_blog_call_on_jetpack_4_6():
    """The blog's torch2trt(model, [x], fp16_mode=True, int8_mode=True, max_batch_size=1), plus the calibration."""
    kwargs = torch2trt_kwargs("8.2.1.8", "0.4.0", "int8", 1, Torch2trtConfig())
    assert kwargs == {
        "max_batch_size": 1, "max_workspace_size": 32 * MIB, "fp16_mode": True, "int8_mode": True,
        "int8_calib_algorithm": trt_rules.TrtName("CalibrationAlgoType.ENTROPY_CALIBRATION_2"),
        "int8_calib_batch_size": 1,
    }


@pytest.mark.parametrize("trt_version, precision, expected", [
    ("8.5.2.2", "fp32", {"max_batch_size": 1, "max_workspace_size": 32 * MIB}),
    ("8.5.2.2", "fp16", {"max_batch_size": 1, "max_workspace_size": 32 * MIB, "fp16_mode": True}),
    ("10.3.0", "fp16", {"max_batch_size": 1, "fp16_mode": True}),  # max_workspace_size is ignored on 10
    ("10.13.3.9", "int8", {"max_batch_size": 1, "fp16_mode": True, "int8_mode": True,
                           "int8_calib_algorithm": trt_rules.TrtName("CalibrationAlgoType.ENTROPY_CALIBRATION_2")}),
])
def test_torch2trt_kwargs_per_tensorrt_version(trt_version, precision, expected):
    assert torch2trt_kwargs(trt_version, "0.5.0", precision, 1, Torch2trtConfig()) == expected


def test_torch2trt_int8_options():
    cfg = Torch2trtConfig(int8_fp16_fallback=False, calibration_algorithm="minmax", max_batch_size=8)
    kwargs = torch2trt_kwargs("10.3.0", "0.5.0", "int8", 4, cfg)
    assert kwargs["fp16_mode"] is False and kwargs["int8_mode"] is True and kwargs["max_batch_size"] == 8
    assert kwargs["int8_calib_algorithm"] == trt_rules.TrtName("CalibrationAlgoType.MINMAX_CALIBRATION")
    assert torch2trt_kwargs("8.4.1.5", "0.4.0", "int8", 4, Torch2trtConfig())["int8_calib_batch_size"] == 4


def test_torch2trt_dla_core_on_xavier():
    kwargs = torch2trt_kwargs("8.5.2.2", "0.5.0", "fp16", 1, Torch2trtConfig(dla_core=1))
    assert kwargs["default_device_type"] == trt_rules.TrtName("DeviceType.DLA")
    assert kwargs["dla_core"] == 1 and kwargs["gpu_fallback"] is True
    assert "max_batch_size" not in kwargs  # 0.5 would make the batch axis dynamic, which the DLA rejects
    assert torch2trt_kwargs("8.5.2.2", "0.4.0", "fp16", 1, Torch2trtConfig(dla_core=0))["max_batch_size"] == 1


def test_torch2trt_rejects_what_it_cannot_do():
    with pytest.raises(ConfigError, match="smaller than input.batch_size=4"):
        torch2trt_kwargs("10.3.0", "0.5.0", "fp16", 4, Torch2trtConfig(max_batch_size=2))
    with pytest.raises(ValueError, match="no bf16 mode"):
        torch2trt_kwargs("10.3.0", "0.5.0", "bf16", 1, Torch2trtConfig())
    with pytest.raises(ConfigError, match="calibration_algorithm='legacy'"):
        Torch2trtBackend(dict(calibration_algorithm="legacy")).check_options()


def test_torch2trt_calibration_dataset_layout_per_version():
    batches = [torch.full((2, 3, 8, 8), float(i)) for i in range(3)]
    whole = calibration_dataset(batches, "0.5.0")
    assert len(whole) == 3 and all(item[0] is batch for item, batch in zip(whole, batches))
    samples = calibration_dataset(batches, "0.4.0")  # 0.4 copies one sample at a time into its buffer
    assert len(samples) == 6
    assert [item[0].shape for item in samples] == [torch.Size([3, 8, 8])] * 6
    assert [float(item[0][0, 0, 0]) for item in samples] == [0, 0, 1, 1, 2, 2]


def test_names_resolve_against_the_tensorrt_module():
    trt_stand_in = SimpleNamespace(  # stand-in for the tensorrt module: only the attribute paths matter
        CalibrationAlgoType=SimpleNamespace(ENTROPY_CALIBRATION_2="entropy2-member"),
        DeviceType=SimpleNamespace(DLA="dla-member"))
    kwargs = torch2trt_kwargs("8.5.2.2", "0.5.0", "int8", 1, Torch2trtConfig(dla_core=0))
    resolved = trt_rules.resolve_names(trt_stand_in, kwargs)
    assert resolved["int8_calib_algorithm"] == "entropy2-member" and resolved["default_device_type"] == "dla-member"
    assert resolved["fp16_mode"] is True and resolved["dla_core"] == 0


# --- Torch-TensorRT ----------------------------------------------------------------------------

@pytest.mark.parametrize("version, precision, expected", [
    ("2.9.0", "fp16", CompilePlan(torch.float32, {"enabled_precisions": {torch.float16}})),
    ("2.10.0+cu130", "fp16",
     CompilePlan(torch.float32, {"use_explicit_typing": False, "enabled_precisions": {torch.float16}})),
    ("2.12.1", "bf16",
     CompilePlan(torch.float32, {"use_explicit_typing": False, "enabled_precisions": {torch.bfloat16}})),
    ("2.13.0", "fp16",
     CompilePlan(torch.float32, {"enable_autocast": True, "autocast_low_precision_type": torch.float16})),
    ("2.14.0", "bf16",
     CompilePlan(torch.float32, {"enable_autocast": True, "autocast_low_precision_type": torch.bfloat16})),
    ("2.11.0", "fp32", CompilePlan(torch.float32)),
])
def test_torch_tensorrt_precision_handling_per_version(version, precision, expected):
    assert compile_plan(version, precision, half_model=False, int8_fp16_fallback=True) == expected


@pytest.mark.parametrize("version, expected", [
    ("2.9.0", CompilePlan(torch.float16, {"enabled_precisions": {torch.float16}})),
    ("2.11.0", CompilePlan(torch.float16)),
    ("2.13.0", CompilePlan(torch.float16)),
])
def test_torch_tensorrt_half_model(version, expected):
    assert compile_plan(version, "fp16", half_model=True, int8_fp16_fallback=True) == expected


@pytest.mark.parametrize("version, fallback, kwargs", [
    ("2.9.0", True, {"enabled_precisions": {torch.int8, torch.float16}}),
    ("2.9.0", False, {"enabled_precisions": {torch.int8}}),
    ("2.11.0", False, {}),
    ("2.12.0", True, {"use_explicit_typing": False, "enabled_precisions": {torch.int8, torch.float16}}),
    ("2.13.0", True, {"enable_autocast": True, "autocast_low_precision_type": torch.float16}),
])
def test_torch_tensorrt_int8_is_modelopt_qdq(version, fallback, kwargs):
    plan = compile_plan(version, "int8", half_model=False, int8_fp16_fallback=fallback)
    assert plan == CompilePlan(torch.float32, {**kwargs, "min_block_size": 1}, quantize=True)


def test_torch_tensorrt_never_relies_on_ignored_or_asserting_arguments():
    for precision in ("fp32", "fp16", "bf16", "int8"):
        for half in (False, True):
            for version in ("2.13.0", "2.14.0"):  # enabled_precisions is ignored from 2.13
                assert "enabled_precisions" not in compile_plan(version, precision, half, True).kwargs
            plan = compile_plan("2.10.0", precision, half, True)  # explicit typing asserts on other precisions
            if "enabled_precisions" in plan.kwargs:
                assert plan.kwargs["use_explicit_typing"] is False


def test_plan_description_is_stable():
    plan = compile_plan("2.9.0", "int8", False, True)
    assert describe(plan) == ("model=torch.float32 quantize=True enabled_precisions={torch.float16,torch.int8} "
                              "min_block_size=1")


# --- this machine ------------------------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_without_tensorrt_each_backend_names_what_is_missing():
    torch2trt = "torch2trt" if importlib.util.find_spec("torch2trt") is None else None
    assert TensorrtBackend.unavailable_reason() == "tensorrt not installed"
    assert Torch2trtBackend.unavailable_reason() == f"tensorrt{', torch2trt' if torch2trt else ''} not installed"
    assert TorchTensorrtBackend.unavailable_reason().startswith("tensorrt")


def test_bad_tensorrt_options_are_config_errors():
    with pytest.raises(ConfigError, match="entropy2, entropy, minmax"):
        TensorrtBackend({"calibration_algorithm": "percentile"}).check_options()
    with pytest.raises(ConfigError, match="workspace_mb=0 must be >= 1"):
        TensorrtBackend({"workspace_mb": 0}).check_options()
    with pytest.raises(ConfigError, match="backend.workspace is not an option of backend tensorrt"):
        TensorrtBackend({"workspace": 64})
    with pytest.raises(ConfigError, match="backend.opset='13' must be int or null"):
        TensorrtBackend({"opset": "13"})


@pytest.mark.parametrize("trt_version, limit", [("8.2.1.8", 13), ("8.5.2.2", 17), ("8.6.1.6", 17),
                                               ("10.3.0", None), ("11.0.0.114", None)])
def test_tensorrt_exports_an_opset_its_parser_reads(trt_version, limit):
    """TensorRT 8.2's parser reads opset <= 13 and 8.5's <= 17: the exporter and opset follow, and say so."""
    assert parser_max_opset(trt_version) == limit
    export = onnx_export.choose("auto", None, limit, f"TensorRT {trt_version}")
    if limit is not None:
        assert export.exporter == "torchscript" and export.opset <= limit
    else:
        assert export.exporter == ("dynamo" if onnx_export.dynamo_available() else "torchscript")
    with pytest.raises(ConfigError, match="reads opsets up to 13|go up to opset 13"):
        onnx_export.choose("auto", 17, 13, "TensorRT 8.2.1.8's ONNX parser")
    with pytest.raises(ConfigError, match="dla_core=-1"):
        Torch2trtBackend(dict(dla_core=-1)).check_options()
