"""Energy and device state for one timed window of a benchmark.

``energy_meter`` picks the one energy source a device has: NVML's total-energy counter on NVIDIA GPUs
(x86), the INA3221 power monitor on Jetsons (sampled and integrated, as tegrastats reads it), RAPL on
x86 CPUs. ``device_state`` reads the clocks, power mode and throttling that decide whether a window ran
at full speed; ``load_conditions`` turns the states read before and after a window into the reasons it
was not clean. Nothing is read at import time (Jetsons have no NVML, and importing must be free), and
every sysfs path is read under ``root``, so that tests can point it at a recorded tree.
"""
import re
from typing import Dict, List, Optional, Tuple

from bench.device.sensors.cpu import SLOW_GOVERNORS, cpu_state, rapl_meter
from bench.device.sensors.jetson import is_jetson, jetson_meter, jetson_state
from bench.device.sensors.meter import EnergyMeter, Unavailable
from bench.device.sensors.nvml import SLOWDOWN_REASONS, gpu_state, nvml_meter


# A clock that falls by more than this fraction between before and after the window is reported.
CLOCK_DROP = 0.05


def parse_device(device: str) -> Optional[int]:
    """The CUDA index of "cuda:N" ("cuda" is 0), or None for "cpu"."""
    if device == "cpu":
        return None
    match = re.match(r"^cuda(?::(\d+))?$", device)
    if not match:
        raise ValueError("device must be 'cpu' or 'cuda:N', not {!r}".format(device))
    return int(match.group(1) or 0)


# ----- NVIDIA GPUs on x86: NVML -----


# ----- Jetsons: the INA3221 power monitor, devfreq, debugfs, nvpmodel -----


# ----- CPUs on x86 Linux: RAPL -----


# ----- the API -----

def energy_meter(device: str, root: str = "/") -> Tuple[Optional[EnergyMeter], str]:
    """(meter, its source) for ``device`` ("cpu" or "cuda:N"), or (None, "unavailable: <why>").

    A Jetson's meter is its INA3221 whatever the device (the module's input feeds CPU and GPU alike); elsewhere
    a CUDA device reads NVML and the CPU RAPL. NVML reads the live driver, so only with root "/".
    """
    cuda_index = parse_device(device)
    try:
        if is_jetson(root):
            meter = jetson_meter(root)  # type: EnergyMeter
        elif cuda_index is None:
            meter = rapl_meter(root)
        elif root != "/":
            raise Unavailable("nvml: reads the live driver, not a tree under {}".format(root))
        else:
            meter = nvml_meter(cuda_index)
    except Unavailable as why:
        return None, "unavailable: {}".format(why)
    return meter, meter.source


def device_state(device: str, root: str = "/") -> Dict[str, str]:
    """What decides the speed of a window on ``device``, read now: call it before and after the window.

    Only keys that could be read; ``unreadable`` says what could not and why (recorded as ``state.unreadable``).
    """
    cuda_index = parse_device(device)
    state = {}  # type: Dict[str, str]
    unreadable = []  # type: List[str]
    if is_jetson(root):
        state.update(jetson_state(root, unreadable))
    elif cuda_index is not None:
        if root != "/":
            unreadable.append("nvml (reads the live driver, not a tree under {})".format(root))
        else:
            try:
                state.update(gpu_state(cuda_index))
            except Unavailable as why:
                unreadable.append(str(why))
    if cuda_index is None:
        state.update(cpu_state(root, unreadable))
    if unreadable:
        state["unreadable"] = "; ".join(unreadable)
    return state


def as_int(state: Dict[str, str], key: str) -> Optional[int]:
    try:
        return int(float(state[key]))
    except (KeyError, ValueError):
        return None


def load_conditions(before: Dict[str, str], after: Dict[str, str]) -> List[str]:
    """Why the window between two ``device_state`` readings was not clean; [] when it was."""
    both = (before, after)
    reasons = []
    active = set()
    for state in both:
        active.update(state.get("gpu.throttle", "none").split(","))
    slowdowns = [name for name in SLOWDOWN_REASONS if name in active]
    if slowdowns:
        reasons.append("throttled: " + ", ".join(slowdowns))
    others = max(as_int(state, "gpu.other_processes") or 0 for state in both)
    if others:
        reasons.append("shared GPU: {} other process(es)".format(others))
    for key, clock in (("gpu.sm_clock_mhz", "SM"), ("jetson.gpu_freq_mhz", "GPU")):
        first, last = as_int(before, key), as_int(after, key)
        if first and last is not None and last < first * (1 - CLOCK_DROP):
            reasons.append("{} clock fell from {} to {} MHz during the window".format(clock, first, last))
    if "off" in (before.get("jetson.clocks"), after.get("jetson.clocks")):
        reasons.append("jetson_clocks off")
    modes = (before.get("jetson.nvpmodel"), after.get("jetson.nvpmodel"))
    if None not in modes and modes[0] != modes[1]:
        reasons.append("nvpmodel changed from {} to {} during the window".format(*modes))
    governors = sorted({state["cpu.governor"] for state in both if state.get("cpu.governor") in SLOW_GOVERNORS})
    for governor in governors:
        reasons.append("CPU governor " + governor)
    return reasons
