"""Benchmark one grid point, or a grid with -m.

    python run.py model=resnet18 precision=int8
    python run.py -m model=resnet18,resnet50 precision=fp16,int8

Exit status (bench/contract/exits.py): 0 every point ok or skipped, 1 some points failed, 2 bad input
(nothing measured), 128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM; the same command again finishes the
sweep).
"""
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def task(cfg: DictConfig) -> int:
    """One point (python run.py ...), or one job of another launcher's sweep (hydra/launcher=slurm).

    With -m and the default launcher (hydra_plugins/trt_bench_launcher) the whole grid goes to the
    controller at once and this is not called.
    """
    from pathlib import Path

    from bench.contract.logs import adopt_library_loggers
    from bench.contract.protocol import digest
    from bench.controller.sweep import run_command_line

    adopt_library_loggers()  # Hydra set up the log; MLflow's and matplotlib's lines go into it, warnings only
    hydra_cfg = HydraConfig.get()
    overrides = [list(hydra_cfg.overrides.task)]
    if hydra_cfg.mode == RunMode.MULTIRUN:  # another launcher: this job is one point of the sweep in sweep.dir
        folder = Path(hydra_cfg.sweep.dir).resolve()
        return run_command_line([cfg], overrides, True, pinned_sweep=digest(folder), lock_dir=folder)
    code = run_command_line([cfg], overrides, multirun=False)
    if code:
        raise SystemExit(code)
    return code


def main() -> int:
    from bench.controller.config import register_configs, hydra_argv
    from bench.controller.hydra_errors import one_line

    register_configs()
    sys.argv = hydra_argv(sys.argv)
    full_traces = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's own errors reach us whole, to be said in one line
    try:
        task()
    except KeyboardInterrupt:
        print("interrupted before any point was measured", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - Hydra's and OmegaConf's errors about the command line
        line = one_line(exc)
        if full_traces or line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
