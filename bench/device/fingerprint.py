"""What device and software a measurement was taken on, so one store can hold many devices.

Everything is read when asked, never at import time, and without nvidia-smi or NVML (Jetsons have
neither): GPU facts come from torch, the driver from /proc, Jetson facts from the device tree,
/etc/nv_tegra_release and ``nvpmodel -q``. Only ``cuda_facts`` needs torch (and initialises CUDA,
so the worker calls it in a forked child); the rest runs on a device without torch, so that the
controller can be told what is missing.
"""
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from typing import Dict, Optional, Tuple
from bench.contract.names import CPU_MODEL, DEVICE_CC, DEVICE_KIND, DEVICE_LABEL, DEVICE_NAME, HOST_NAME

# Distribution names whose versions every measurement records.
PACKAGES = ("torch", "torchvision", "numpy", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "tensorrt",
            "torch2trt", "torch-tensorrt", "nvidia-modelopt", "nvidia-ml-py", "pillow")


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, errors="replace") as handle:
            return handle.read().strip("\x00\n ")
    except OSError:
        return None


def distribution_version(name: str) -> Optional[str]:
    """The installed version of a distribution, or None; Python 3.6 has no importlib.metadata."""
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8
        import pkg_resources

        try:
            return pkg_resources.get_distribution(name).version
        except pkg_resources.DistributionNotFound:
            return None
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def torch_version() -> Tuple[int, int]:
    """(major, minor) of the installed torch, e.g. (1, 10)."""
    import torch

    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def package_versions() -> Dict[str, str]:
    """``{"torch": "1.10.0", ...}`` for the packages that are installed."""
    found = {}
    for name in PACKAGES:
        version = distribution_version(name)
        if version:
            found[name] = version
    return found


def cpu_model() -> str:
    info = read_text("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "cpu model"):
        match = re.search(r"^{}\s*:\s*(.+)$".format(key), info, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def jetson() -> Dict[str, str]:
    """Jetson model, L4T release and power mode; empty elsewhere."""
    release = read_text("/etc/nv_tegra_release")
    model = read_text("/proc/device-tree/model")
    if not release and not (model and "jetson" in model.lower()):
        return {}
    facts = {"jetson.model": model or "unknown Jetson"}
    if release:
        match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
        facts["jetson.l4t"] = "{}.{}".format(match.group(1), match.group(2)) if match else release.splitlines()[0]
    if shutil.which("nvpmodel"):
        try:
            query = subprocess.run(["nvpmodel", "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   universal_newlines=True, timeout=10).stdout
            mode = re.search(r"NV Power Mode:\s*(\S+)", query)
            facts["jetson.nvpmodel"] = mode.group(1) if mode else query.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            facts["jetson.nvpmodel"] = "unreadable"
    return facts


def host_facts() -> Dict[str, str]:
    """Tags every measurement on this machine shares, whatever device it used."""
    facts = {
        CPU_MODEL: cpu_model(),
        "cpu.count": str(os.cpu_count()),
        HOST_NAME: socket.gethostname(),
        "host.os": platform.platform(),
        "host.arch": platform.machine(),
        "sw.python": platform.python_version(),
    }
    facts.update({"sw." + name: version for name, version in package_versions().items()})
    facts.update(jetson())
    return facts


def cuda_facts(index: int) -> Dict[str, str]:
    """One CUDA device's tags (initialises CUDA: call it in a process that will not fork afterwards)."""
    import torch

    props = torch.cuda.get_device_properties(index)
    facts = {
        DEVICE_NAME: props.name,
        DEVICE_CC: "{}.{}".format(props.major, props.minor),
        "device.memory_gb": "{:.1f}".format(props.total_memory / 2 ** 30),
        "device.sm_count": str(props.multi_processor_count),
        "device.cuda": str(torch.version.cuda),
        "device.cudnn": str(torch.backends.cudnn.version()),
    }
    driver = read_text("/proc/driver/nvidia/version")
    if driver:
        match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", driver)
        facts["device.driver"] = match.group(1) if match else driver.splitlines()[0]
    return facts


def device_label(host: Dict[str, str], cuda: Optional[Dict[str, str]]) -> str:
    """How tables name a device: the Jetson's model, else the GPU's name, else the CPU's model."""
    return host.get("jetson.model") or (cuda[DEVICE_NAME] if cuda else host[CPU_MODEL])


def device_tags(device: str, host: Dict[str, str], cuda: Optional[Dict[str, str]]) -> Dict[str, str]:
    """The tags of a measurement on ``device`` ("cpu" or "cuda:N"); ``device.label`` names it in tables."""
    tags = dict(host)
    tags[DEVICE_KIND] = "cuda" if device.startswith("cuda") else "cpu"
    if cuda:
        tags.update(cuda)
    else:
        tags[DEVICE_NAME] = host[CPU_MODEL]
    tags[DEVICE_LABEL] = device_label(host, cuda)
    return tags


def interpreter() -> Dict[str, str]:
    """Which Python runs the core: the controller checks it before sending any plan."""
    return {"python": platform.python_version(), "executable": sys.executable,
            "implementation": platform.python_implementation()}
