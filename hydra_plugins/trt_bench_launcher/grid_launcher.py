"""``hydra/launcher=grid`` (the default): Hydra's multirun hands the whole grid to the controller at once.

Hydra's basic launcher calls the task once per point, which would resolve, connect and validate one
point at a time. This launcher composes every point's config first, so the controller checks the
whole grid before measuring anything, starts the device once, and records one sweep. It ends the
process with the sweep's exit status (Hydra itself has no way to return one from a multirun).
"""
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# No "from __future__ import annotations" here: Hydra loads plugins without registering them in sys.modules,
# and dataclasses cannot resolve string annotations then.
log = logging.getLogger(__name__)


@dataclass
class GridLauncherConf:
    _target_: str = "hydra_plugins.trt_bench_launcher.grid_launcher.GridLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="grid", node=GridLauncherConf, provider="trt-bench")


class GridLauncher(Launcher):
    def __init__(self) -> None:
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from bench.contract.logs import configure_logging
        from bench.controller.sweep import run_command_line

        folder = Path(str(self.config.hydra.sweep.dir))
        folder.mkdir(parents=True, exist_ok=True)
        configure_logging(log_file=folder / "sweep.log")
        log.info("sweep of %d point(s); log: %s", len(job_overrides), folder / "sweep.log")
        configs = [self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                   for overrides in job_overrides]
        code = run_command_line(configs, [list(overrides) for overrides in job_overrides], multirun=True)
        if code:
            raise SystemExit(code)
        return [JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=code)
                for overrides in job_overrides]
