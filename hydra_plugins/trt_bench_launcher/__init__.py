"""trt-bench's Hydra launcher (hydra/launcher=grid, the default): the whole grid to the controller at once."""
