"""trt-bench: how much faster a PyTorch vision model gets per backend, precision and device."""
