"""Every metric, tag and param name a record carries, written here once.

The measuring core fills metrics and details under these names, the store records them, and
``analysis`` reads them back; each imports the name from here (tests/test_layout.py checks that no
other module spells one out). Standard library only: it ships to the device with the core.
"""

# Metrics: the headline figures (docs/methodology.md says what each times).
LATENCY_MS = "latency_ms_median"  # end-to-end: host clock around the call and the device's sync
LATENCY_MS_MEAN = "latency_ms_mean"
GPU_MS = "gpu_ms_median"  # GPU compute: CUDA events around the call, the stream held until it is queued
SPEEDUP = "speedup"  # eager fp32's end-to-end latency over the variant's, timed in the same processes
GPU_SPEEDUP = "gpu_speedup"
THROUGHPUT = "throughput_ips"  # images per second, back to back (the throughput scenario)
THROUGHPUT_SPEEDUP = "throughput_speedup"
RAW = "raw_"  # prefix of eager fp32's figures timed beside the variant
RAW_LATENCY_MS, RAW_LATENCY_MS_MEAN = RAW + LATENCY_MS, RAW + LATENCY_MS_MEAN
RAW_GPU_MS, RAW_THROUGHPUT = RAW + GPU_MS, RAW + THROUGHPUT

# Figures recorded with an interval and a spread over processes: figure -> stem of ``<stem>_lo/_hi/_spread``.
FIGURES = {LATENCY_MS: "latency_ms", GPU_MS: "gpu_ms", SPEEDUP: "speedup", GPU_SPEEDUP: "gpu_speedup",
           THROUGHPUT: THROUGHPUT, THROUGHPUT_SPEEDUP: THROUGHPUT_SPEEDUP}


def low_of(figure: str) -> str:
    """The metric holding the lower end of ``figure``'s interval."""
    return FIGURES[figure] + "_lo"


def high_of(figure: str) -> str:
    return FIGURES[figure] + "_hi"


def spread_of(figure: str) -> str:
    """The metric holding max/min of ``figure`` over the point's processes."""
    return FIGURES[figure] + "_spread"


# Metrics: the calls of one series (docs/methodology.md).
LATENCY_MS_STD, LATENCY_MS_MIN, LATENCY_MS_MAX = "latency_ms_std", "latency_ms_min", "latency_ms_max"
LATENCY_MS_P90, LATENCY_MS_P95, LATENCY_MS_P99 = "latency_ms_p90", "latency_ms_p95", "latency_ms_p99"
LATENCY_CV, ITERATIONS = "latency_cv", "iterations"
GPU_MS_P90, GPU_MS_P99, GPU_CV = "gpu_ms_p90", "gpu_ms_p99", "gpu_cv"
GPU_HOLD_FRACTION = "gpu_hold_fraction"  # share of calls whose GPU time was measured behind a held stream
REPEATS = "repeats"  # processes the point's figures come from

# Metrics: conversion, resources, energy.
CONVERT_S, CONVERT_CACHE_HIT = "convert_s", "convert_cache_hit"
PEAK_RSS_MB, PEAK_CUDA_MEM_MB = "peak_rss_mb", "peak_cuda_mem_mb"
ENERGY_MJ, ENERGY_MJ_PER_IMAGE, POWER_W_MEAN = "energy_mj", "energy_mj_per_image", "power_w_mean"

# Metrics: accuracy against eager fp32 (agreement, errors) and against labels (top-k, mIoU).
ACC_MAX_ABS_ERR, ACC_REL_L2_ERR, ACC_COSINE = "acc_max_abs_err", "acc_rel_l2_err", "acc_cosine"
ACC_NONFINITE, ACC_IMAGES = "acc_nonfinite", "acc_images"
ACC_TOP1_AGREEMENT, ACC_PIXEL_AGREEMENT, ACC_MIOU_VS_REF = "acc_top1_agreement", "acc_pixel_agreement", \
    "acc_miou_vs_ref"
ACC_TOP1, ACC_TOP5, REF_TOP1, REF_TOP5 = "acc_top1", "acc_top5", "ref_top1", "ref_top5"
ACC_MIOU, REF_MIOU = "acc_miou", "ref_miou"

# Tags of every run the suite writes.
ROLE, STATUS, REASON, FAILURE, KIND = "bench.role", "bench.status", "bench.reason", "bench.failure", "bench.kind"
SWEEP_ID, POINT_ID, POINT_KEY, GRID_KEY = "bench.sweep_id", "bench.point_id", "bench.point_key", "bench.grid_key"
COMMIT, UNSTABLE, LABEL, EVENTS = "bench.commit", "bench.unstable", "bench.label", "bench.events"
CONDITIONS = "bench.conditions"  # why a timed window was not clean: throttled, a shared GPU, a clock that fell
DESCRIPTION, RUN_NAME, PARENT_RUN = "mlflow.note.content", "mlflow.runName", "mlflow.parentRunId"
MAKER = "mlflow.user"  # the account that made the run (on the team server, only it may change the run)
# Seconds added to the measuring machine's clock to record the run in the store's (its clock was off).
CLOCK_OFFSET_S = "bench.clock_offset_s"
PARENT, CHILD = "parent", "point"  # values of ROLE
DISCARDED = "discarded"  # ROLE of a run cut off half-way that its account may not delete: in no table
# Tags of a sweep's parent run: its state (COMPLETE when every point has a result of its own, INCOMPLETE when
# it was interrupted or points were lost on the way: the same grid resumes it) and who is writing it.
STATE, COMPLETE, INCOMPLETE = "bench.sweep_state", "complete", "incomplete"
CONTROLLER, CONTROLLER_PROCESS = "bench.controller", "bench.controller_process"
HEARTBEAT_MS, LAST_WRITE_MS, POINTS_PLANNED = "bench.heartbeat_ms", "bench.last_write_ms", "bench.points_planned"

# Tags of a nightly's parent run: how many regressions its check found, and its verdict.
NIGHTLY_REGRESSIONS, NIGHTLY_STATUS = "nightly.regressions", "nightly.status"

# Tags from the device's fingerprint and the point's details.
DEVICE_LABEL, DEVICE_NAME, DEVICE_KIND, DEVICE_CC = "device.label", "device.name", "device.kind", "device.cc"
HOST_NAME, CPU_MODEL, MODEL_TASK = "host.name", "cpu.model", "model.task"
TIMING_METHOD, TIMING_LATENCY, TIMING_GPU = "timing.method", "timing.latency", "timing.gpu"
TIMING_UNSTABLE, TIMING_CONDITIONS = "timing.unstable", "timing.conditions"
ENERGY_SOURCE, ACCURACY_LABELLED, ACCURACY_INPUTS = "energy.source", "accuracy.labelled", "accuracy.inputs"
AUTO_TRIED = "backend.auto_tried"  # backend=auto: why each backend it tried could not run the point

# Params a reader selects on beyond the plan's own field names.
BACKEND_VARIANT, BACKEND_REQUESTED, INPUT_SHAPE = "backend.variant", "backend.requested", "input.shape"
