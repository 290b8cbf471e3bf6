"""Benchmark one grid point, or a grid with -m.

    python run.py model=resnet18 precision=int8
    python run.py -m model=resnet18,resnet50 precision=fp16,int8
"""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


def main() -> int:
    # Imported here, not at the top: each point's child process re-imports this module, and
    # it needs none of MLflow.
    from bench.errors import ConfigError
    from bench.runner import exit_code, register, run_point

    register()
    statuses: list[str] = []

    @hydra.main(version_base="1.3", config_path="conf", config_name="config")
    def task(cfg: DictConfig) -> None:
        hydra_cfg = HydraConfig.get()
        sweep_dir = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else None
        try:
            statuses.append(run_point(cfg, sweep_dir).status)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    task()
    return exit_code(statuses)


if __name__ == "__main__":
    sys.exit(main())
