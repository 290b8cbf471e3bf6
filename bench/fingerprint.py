"""What device and software a run is on, so one MLflow store can hold many devices.

Everything is read when asked, never at import time, and without nvidia-smi or NVML
(Jetsons have neither): GPU facts come from torch, the driver from /proc, Jetson facts
from the device tree, /etc/nv_tegra_release and ``nvpmodel -q`` when present.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "torch2trt",
            "torch-tensorrt", "nvidia-modelopt", "mlflow", "hydra-core", "numpy")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[f"sw.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def jetson() -> dict[str, str]:
    """Jetson model, L4T release and power mode; empty elsewhere."""
    release = _read("/etc/nv_tegra_release")
    model = _read("/proc/device-tree/model")
    if not release and not (model and "jetson" in model.lower()):
        return {}
    facts = {"jetson.model": model or "unknown Jetson"}
    if release:
        match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
        facts["jetson.l4t"] = f"{match.group(1)}.{match.group(2)}" if match else release.splitlines()[0]
    if shutil.which("nvpmodel"):
        try:
            query = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10).stdout
            mode = re.search(r"NV Power Mode:\s*(\S+)", query)
            facts["jetson.nvpmodel"] = mode.group(1) if mode else query.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            facts["jetson.nvpmodel"] = "unreadable"
    return facts


def cuda_facts(device: torch.device) -> dict[str, str]:
    props = torch.cuda.get_device_properties(device)
    facts = {
        "device.name": props.name,
        "device.cc": f"{props.major}.{props.minor}",
        "device.memory_gb": f"{props.total_memory / 2**30:.1f}",
        "device.sm_count": str(props.multi_processor_count),
        "device.cuda": str(torch.version.cuda),
        "device.cudnn": str(torch.backends.cudnn.version()),
    }
    driver = _read("/proc/driver/nvidia/version")
    if driver:
        match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", driver)
        facts["device.driver"] = match.group(1) if match else driver.splitlines()[0]
    return facts


def collect(device: torch.device) -> dict[str, str]:
    """Tags that identify the device and software of a run; ``device.label`` names it in tables."""
    facts = {
        "device.kind": device.type,
        "cpu.model": cpu_model(),
        "cpu.count": str(os.cpu_count()),
        "cpu.threads": str(torch.get_num_threads()),
        "host.name": socket.gethostname(),
        "host.os": platform.platform(),
        "host.arch": platform.machine(),
        "sw.python": platform.python_version(),
        **package_versions(),
        **jetson(),
    }
    if device.type == "cuda":
        facts.update(cuda_facts(device))
    else:
        facts["device.name"] = facts["cpu.model"]
    facts["device.label"] = facts.get("jetson.model") or facts["device.name"]
    return facts


def suite_commit() -> dict[str, str]:
    """The suite's git commit (and whether the tree had local changes) when run from a checkout.

    Outside a checkout (a copied tree, an sdist) the commit is "unknown" unless $BENCH_COMMIT
    names it, e.g. when a CI job copies the suite to a device.
    """
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        head = dirty = None
    if head is None or head.returncode != 0 or dirty.returncode != 0:
        return {"bench.commit": os.environ.get("BENCH_COMMIT") or "unknown"}
    return {"bench.commit": head.stdout.strip(), "bench.commit_dirty": str(bool(dirty.stdout.strip())).lower()}
