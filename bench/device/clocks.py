"""Locked GPU clocks for a point (``timing.lock_clocks=true``), where the device allows it, restored after.

The first question asked of a disputed GPU figure is whether the clocks were locked: a GPU that
boosts and throttles moves its figures from run to run. On an x86 GPU, ``nvidia-smi -lgc`` (root)
locks the graphics clock to its default application clock and ``-rgc`` resets it; on a Jetson,
``jetson_clocks`` pins every clock at its maximum and ``--restore`` brings back what ``--store``
saved. Whatever happens is recorded (``state.clocks_locked``); nothing is probed at import time.
"""
import logging
import os
import shutil
import subprocess
import tempfile
from typing import Callable, List, Tuple

log = logging.getLogger(__name__)

TEGRA_RELEASE = "/etc/nv_tegra_release"


def _run(command: List[str]) -> str:
    """Run a clock tool; its output, or RuntimeError with the tool's one-line complaint."""
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=60)
    if done.returncode != 0:
        said = (done.stdout.strip().splitlines() or ["exit code {}".format(done.returncode)])[-1]
        raise RuntimeError("{}: {}".format(" ".join(command[:2]), said))
    return done.stdout


def _nothing() -> None:
    return None


def _jetson() -> Tuple[str, Callable[[], None]]:
    saved = os.path.join(tempfile.mkdtemp(prefix="trt-bench-clocks-"), "clocks.conf")
    _run(["jetson_clocks", "--store", saved])
    _run(["jetson_clocks"])
    return "locked: jetson_clocks (maximum clocks), restored after the point", \
        lambda: _run(["jetson_clocks", "--restore", saved])


def _nvidia_smi(index: str) -> Tuple[str, Callable[[], None]]:
    query = _run(["nvidia-smi", "-i", index, "--query-gpu=clocks.default_applications.graphics",
                  "--format=csv,noheader,nounits"]).strip()
    _run(["nvidia-smi", "-i", index, "-lgc", "{0},{0}".format(query)])
    return "locked: nvidia-smi -lgc {0},{0} MHz, reset after the point".format(query), \
        lambda: _run(["nvidia-smi", "-i", index, "-rgc"])


def _nvidia_smi_id(ordinal: int) -> str:
    """The GPU that CUDA calls ``ordinal``, as nvidia-smi -i takes it: through CUDA_VISIBLE_DEVICES (indices or
    UUIDs) where it is set. nvidia-smi counts in PCI bus order, CUDA fastest first unless
    CUDA_DEVICE_ORDER=PCI_BUS_ID: on a machine of unlike GPUs set that, or name the GPUs by UUID. (The worker
    that locks the clocks never initialises CUDA, so it cannot ask CUDA for the UUID itself.)"""
    visible = [item.strip() for item in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if item.strip()]
    return visible[ordinal] if ordinal < len(visible) else str(ordinal)


def lock(device: str) -> Tuple[str, Callable[[], None]]:
    """(what was done, in words, and how to undo it) for the point's device."""
    if not device.startswith("cuda"):
        return "not locked: a CPU point (the CPU's governor is recorded in state.*)", _nothing
    try:
        if os.path.exists(TEGRA_RELEASE):
            if shutil.which("jetson_clocks") is None:
                return "not locked: jetson_clocks is not on PATH", _nothing
            return _jetson()
        if shutil.which("nvidia-smi") is None:
            return "not locked: nvidia-smi is not on PATH", _nothing
        return _nvidia_smi(_nvidia_smi_id(int(device.split(":")[1]) if ":" in device else 0))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return "not locked: {}".format(exc), _nothing


def restore(undo: Callable[[], None]) -> None:
    try:
        undo()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        log.warning("the GPU's clocks could not be restored: %s", exc)
