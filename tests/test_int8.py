"""The int8 ONNX Runtime point really is int8, and agrees with fp32 on top-1 for most inputs."""
import onnx
from onnx import TensorProto

from conftest import SMALL, measure_here


def test_int8_model_is_quantized_and_agrees_with_fp32(cache_dir):
    measured = measure_here(*SMALL, "backend=onnxruntime", "precision=int8", "input.batch_size=4",
                            "accuracy.batches=4", "calibration.num_batches=8", f"cache_dir={cache_dir}")
    assert measured["status"] == "ok", measured["reason"]
    graph = onnx.load(measured["details"]["backend.onnx_path"]).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") >= 20, "activations are not quantized"
    conv_weights = [t for t in graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) == 4]
    assert len(conv_weights) >= 20, "convolution weights are not int8"
    assert measured["details"]["backend.quantized_ops"] == ops.count("QuantizeLinear")
    m = measured["metrics"]
    assert m["acc_top1_agreement"] >= 0.75  # 16 images
    assert 0.0 < m["acc_rel_l2_err"] < 0.3  # int8 error is real but bounded
    assert measured["details"]["calibration.inputs"] == "random normal, seed 1234"
    assert measured["plan"]["backend"]["quant_format"] == "QDQ"
