"""One grid point end to end: validate -> resolve backend -> skip if this sweep has it -> measure -> record.

Hydra calls ``run_point`` once per point; a sweep's points share one MLflow parent run found
through the sweep directory, so nothing depends on Hydra's end-of-sweep callback (it is not
called when a job fails).
"""
from __future__ import annotations

import logging
import multiprocessing
import signal
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bench import calibration, fingerprint
from bench.backends import backend_schemas, resolve
from bench.backends.base import digest
from bench.config import PRECISIONS, Config, register_configs
from bench.errors import ConfigError
from bench.models import check_weights, model_spec
from bench.point import FAILED, OK, SKIPPED, PointResult, child_main, failed, input_shape, measure_point, resolve_target
from bench.tracking import Tracker, point_key

log = logging.getLogger(__name__)


def register() -> None:
    """Register the schemas with Hydra's ConfigStore (before composing any config)."""
    register_configs(backend_schemas())


def validate(cfg: Config) -> None:
    """Every user mistake that can be seen before work starts, as one ConfigError line."""
    spec = model_spec(cfg.model.name)
    if cfg.precision.name not in PRECISIONS:
        raise ConfigError(f"precision {cfg.precision.name!r} is not one of: {', '.join(PRECISIONS)}")
    if cfg.input.batch_size < 1:
        raise ConfigError(f"input.batch_size={cfg.input.batch_size} must be >= 1")
    for side in ("height", "width"):
        value = cfg.input[side]
        if value is None:
            continue
        if value < 1:
            raise ConfigError(f"input.{side}={value} must be a positive integer")
        if value < spec.min_size:
            raise ConfigError(f"input.{side}={value} is too small for {spec.name}: it needs at least {spec.min_size}")
        if spec.fixed_size and value != spec.fixed_size:
            raise ConfigError(f"input.{side}={value}: {spec.name} takes exactly {spec.fixed_size}")
    if cfg.timing.min_iters < 1 or cfg.timing.warmup_iters < 0 or cfg.timing.min_s < 0 or cfg.timing.warmup_s < 0:
        raise ConfigError("timing: min_iters must be >= 1 and warmup_iters, min_s, warmup_s >= 0")
    if cfg.accuracy.batches < 1:
        raise ConfigError(f"accuracy.batches={cfg.accuracy.batches} must be >= 1")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"threads={cfg.threads} must be >= 1 (or null for the library default)")
    calibration.check(cfg.calibration)
    check_weights(cfg.model)


def point_name(cfg: Config, backend: str) -> str:
    """``resnet18/int8/onnxruntime/256``, named by backend variant (``inductor+cudagraphs``).

    Non-square inputs read ``256x320``, batches ``/b8``.
    """
    _, _, height, width = input_shape(cfg)
    size = f"{height}" if height == width else f"{height}x{width}"
    batch = f"/b{cfg.input.batch_size}" if cfg.input.batch_size > 1 else ""
    return f"{cfg.model.name}/{cfg.precision.name}/{backend}/{size}{batch}"


def point_params(cfg: Config, backend_dict: dict, variant: str, target_device: str) -> dict[str, str]:
    batch, _, height, width = input_shape(cfg)
    params = {
        "model": cfg.model.name,
        "model.task": model_spec(cfg.model.name).task,
        "model.weights": cfg.model.weights,
        "backend": backend_dict["name"],
        "backend.requested": cfg.backend.name,
        "backend.variant": variant,
        "precision": cfg.precision.name,
        "input.height": height,
        "input.width": width,
        "input.batch_size": batch,
        "input.shape": f"{batch}x3x{height}x{width}",
        "device": target_device,
        "threads": cfg.threads,
        "raw_baseline": cfg.raw_baseline,
        "cudnn_benchmark": cfg.cudnn_benchmark,
        "isolate": cfg.isolate,
        **{f"backend.{k}": v for k, v in backend_dict.items() if k != "name"},
        **{f"timing.{k}": v for k, v in OmegaConf.to_container(cfg.timing).items()},
        **{f"accuracy.{k}": v for k, v in OmegaConf.to_container(cfg.accuracy).items()},
    }
    if cfg.precision.name == "int8":
        params.update({f"calibration.{k}": v for k, v in OmegaConf.to_container(cfg.calibration).items()})
    return {k: str(v) for k, v in params.items()}


def run_in_child(cfg_dict: dict, backend_dict: dict) -> PointResult:
    """Measure in a fresh process: a segfault or abort becomes a failed result, not a dead sweep.

    Points are forked from a forkserver that has imported torch once (and never touched CUDA),
    so each point starts clean without paying the interpreter and torch start-up again.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bench.point", "torchvision"])
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=child_main, args=(cfg_dict, backend_dict, sender), name="bench-point")
    process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = None
    process.join()
    if result is not None:
        return result
    code = process.exitcode
    how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
    return PointResult(status=FAILED, reason=f"the point's process died with {how} before reporting a result")


def run_point(cfg: DictConfig, sweep_dir: str | None = None) -> PointResult:
    """Validate, measure and record one grid point; ``sweep_dir`` groups points under a parent run."""
    validate(cfg)
    target = resolve_target(cfg.device)
    backend, reason = resolve(cfg.backend, target, cfg.precision.name)
    if backend:
        backend.check_options()
    tracker = Tracker(cfg.tracking)
    backend_dict = OmegaConf.to_container(OmegaConf.structured(backend.cfg), resolve=True) if backend \
        else OmegaConf.to_container(cfg.backend, resolve=True)
    variant = backend.variant() if backend else cfg.backend.name
    name = point_name(cfg, variant)
    tags = {**fingerprint.collect(target.device), **fingerprint.suite_commit()}
    sweep = None
    if sweep_dir:
        sweep_path = Path(sweep_dir).resolve()
        sweep_id = digest(sweep_path)
        tags["bench.sweep_id"] = sweep_id
        sweep = tracker.open_sweep(sweep_id, sweep_path, tags)

    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    tags["bench.point_key"] = point_key(cfg_dict, tags)
    recorded = tracker.recorded_point(sweep, tags["bench.point_key"]) if sweep else None
    if recorded:  # resume: a re-run sweep measures only what it has not recorded yet
        log.info("%s: already recorded in this sweep (%s, %s); skipped", name, recorded.where, recorded.status)
        return PointResult(status=recorded.status, reason=f"already recorded in this sweep as {recorded.where}")
    if reason:
        result = PointResult(status=SKIPPED, reason=reason)
    else:
        log.info("%s: measuring on %s (%s)", name, target.device, tags["device.label"])
        if cfg.isolate:
            result = run_in_child(cfg_dict, backend_dict)
        else:
            try:
                result = measure_point(cfg, OmegaConf.structured(backend.cfg))
            except Exception as exc:  # noqa: BLE001 - a failing point is a recorded result
                result = failed(exc)
    where = tracker.save(name, point_params(cfg, backend_dict, variant, str(target.device)), tags, result,
                         OmegaConf.to_yaml(cfg_dict), sweep)
    log.info("%s: %s", name, summary(result))
    log.info("recorded %s", where)
    return result


def summary(result: PointResult) -> str:
    """One line a person can read, saying how each number was obtained."""
    if result.status != OK:
        return f"{result.status}: {result.reason}"
    m = result.metrics
    task_metric = "acc_top1_agreement" if "acc_top1_agreement" in m else "acc_pixel_agreement"
    return (
        f"ok: median {m['latency_ms_median']:.3g} ms (p90 {m['latency_ms_p90']:.3g}, "
        f"{int(m['iterations'])} iters, {result.params['timing.method']}), "
        f"raw {m['raw_latency_ms_median']:.3g} ms, speed-up {m['speedup']:.2f}x, "
        f"{task_metric.removeprefix('acc_')} {m[task_metric]:.3f}, rel L2 err {m['acc_rel_l2_err']:.2e}, "
        f"convert {m['convert_s']:.1f} s"
    )


def exit_code(statuses: list[str]) -> int:
    """0 when no point failed, else the number of failed points (capped for the shell)."""
    counts = {status: statuses.count(status) for status in (OK, SKIPPED, FAILED)}
    log.info("%d point(s): %d ok, %d skipped, %d failed", len(statuses), counts[OK], counts[SKIPPED], counts[FAILED])
    return min(counts[FAILED], 125)
