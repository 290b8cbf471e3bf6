"""Hydra's submitit launcher: a real sweep in parallel local jobs (``submitit_local``) into one fresh SQLite
store, and the SLURM config (``hydra/launcher=slurm``) turned into the sbatch script submitit would submit."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import ROOT, SMALL, run_cli, runs


def test_submitit_local_runs_a_sweep_as_parallel_jobs_into_one_fresh_sqlite_store(tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # does not exist yet: the jobs race to create it
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *SMALL, "backend=pytorch",
                   "input.batch_size=1,2", f"tracking.uri={store}", f"cache_dir={cache_dir}",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                   env={"PYTHONPATH": str(ROOT)})  # jobs unpickle bench.*: as after `pip install -e .`
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    job_logs = list((sweep / ".submitit").rglob("*_log.err"))
    assert len(job_logs) == 2  # two submitit jobs, not points run in this process
    all_runs = runs(store)
    (parent,) = [r for r in all_runs if r.data.tags["bench.role"] == "parent"]
    children = [r for r in all_runs if r.data.tags["bench.role"] == "point"]
    assert sorted(c.info.run_name for c in children) == ["resnet18/fp32/pytorch/64", "resnet18/fp32/pytorch/64/b2"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all(c.data.tags["bench.status"] == "ok" for c in children)
    assert parent.info.status == "FINISHED"


def test_slurm_launcher_asks_for_one_gpu_per_job(tmp_path):
    """No SLURM here: the launcher is instantiated as Hydra does, and its settings are rendered by
    submitit's own sbatch writer, which is what a cluster would be sent."""
    from submitit.slurm import slurm

    from bench.controller.config import register_configs

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert type(instantiate(launcher)).__name__ == "SlurmLauncher"
    params = OmegaConf.to_container(launcher, resolve=True)
    for name in ("_target_", "submitit_folder", "max_num_timeout"):  # executor settings, not sbatch ones
        params.pop(name)
    names = slurm.SlurmExecutor._equivalence_dict()  # submitit's generic -> sbatch names
    sbatch = {names.get(k, k): v for k, v in params.items() if v is not None}
    sbatch["mem"] = slurm._convert_mem(sbatch["mem"])
    script = slurm._make_sbatch_string(command="python -u -m submitit.core._submit folder", folder=Path(tmp_path),
                                       **sbatch)
    lines = set(script.splitlines())
    assert {"#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --nodes=1",
            "#SBATCH --partition=gpu"} <= lines, script
    assert not any("--gres" in line or "--gpus-per-task" in line or "--overcommit" in line for line in lines)
