"""NVIDIA GPUs through NVML (x86, not Jetsons): the energy counter, clocks, throttle reasons, other processes.
pynvml is imported when asked for, never at import time."""
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

from bench.device.sensors.meter import EnergyMeter, Unavailable


# NVML's clocks-event (formerly clocks-throttle) reason bits, from nvml.h. Named here because pynvml renamed
# its constants (nvmlClocksThrottleReason* became nvmlClocksEventReason*).
CLOCK_REASONS = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clocks_setting"),
)


# The reasons that mean the GPU ran slower than it was set up to: heat, a hardware slowdown, a power brake.
# gpu_idle, applications clocks, sync boost and display clocks are settings or idleness; sw_power_cap is the
# GPU holding its configured power limit, which a loaded H100 does on every heavy run (700 W: 699.5 W drawn
# under a bf16 matmul), so it is recorded in gpu.throttle but is no condition of its own.
SLOWDOWN_REASONS = ("hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")


def clock_reasons(mask: int) -> List[str]:
    """NVML's clocks-event bitmask as names, e.g. 0x24 -> ["sw_power_cap", "sw_thermal_slowdown"]."""
    names = [name for bit, name in CLOCK_REASONS if mask & bit]
    rest = mask & ~sum(bit for bit, _ in CLOCK_REASONS)
    if rest:
        names.append("unknown_{:#x}".format(rest))
    return names


def bare_uuid(uuid: str) -> str:
    """NVML says "GPU-8f1e...", torch "8f1e...": compare them without the prefix."""
    uuid = uuid.strip().lower()
    return uuid[4:] if uuid.startswith("gpu-") else uuid


def nvml_index(cuda_index: int, uuids: List[str], visible: Optional[str] = None,
               torch_uuid: Optional[str] = None) -> int:
    """NVML's index of torch's CUDA device ``cuda_index``.

    By torch's UUID of the device where known; else through CUDA_VISIBLE_DEVICES (indices, or UUIDs and their
    unique prefixes); else the same index. CUDA numbers devices fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID,
    NVML by PCI bus: without a UUID the two agree only on a host whose GPUs are all alike (or in that order).
    """
    if torch_uuid:
        for index, uuid in enumerate(uuids):
            if bare_uuid(uuid) == bare_uuid(torch_uuid):
                return index
    if visible is not None:
        entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
        if cuda_index >= len(entries):
            raise Unavailable("cuda:{} is not among CUDA_VISIBLE_DEVICES={}".format(cuda_index, visible))
        entry = entries[cuda_index]
        if entry.isdigit():
            cuda_index = int(entry)
        else:
            matches = [index for index, uuid in enumerate(uuids) if bare_uuid(uuid).startswith(bare_uuid(entry))]
            if len(matches) != 1:
                raise Unavailable("CUDA_VISIBLE_DEVICES entry {} matches {} NVML GPUs".format(entry, len(matches)))
            return matches[0]
    if cuda_index >= len(uuids):
        raise Unavailable("NVML sees {} GPU(s), no GPU {}".format(len(uuids), cuda_index))
    return cuda_index


def torch_uuid(cuda_index: int) -> Optional[str]:
    """torch's UUID of a CUDA device, only where torch already initialised CUDA (initialising it here would break
    a process that forks afterwards) and is new enough to know it (``props.uuid``)."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_initialized():
            return None
        uuid = getattr(torch.cuda.get_device_properties(cuda_index), "uuid", None)
        return str(uuid) if uuid is not None else None
    except Exception:  # optional: any failure falls back to CUDA_VISIBLE_DEVICES and the index
        return None


def text(value) -> str:
    """Older pynvml returns bytes where newer returns str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_device(cuda_index: int):
    """(pynvml, handle, "NAME (GPU i, UUID)") of torch's CUDA device ``cuda_index``, NVML initialised (or raises
    Unavailable)."""
    try:
        import pynvml
    except ImportError:
        raise Unavailable("nvml: the pynvml module (pip install nvidia-ml-py) is not installed")
    try:
        pynvml.nvmlInit()
        uuids = [text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i)))
                 for i in range(pynvml.nvmlDeviceGetCount())]
        index = nvml_index(cuda_index, uuids, os.environ.get("CUDA_VISIBLE_DEVICES"), torch_uuid(cuda_index))
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = text(pynvml.nvmlDeviceGetName(handle))
    except (pynvml.NVMLError, Unavailable) as error:
        raise Unavailable("nvml: {}".format(error))
    return pynvml, handle, "{} (GPU {}, {})".format(name, index, uuids[index])


class NvmlMeter(EnergyMeter):
    """NVML's total energy counter (mJ since the driver loaded; Volta and newer): one reading at each end.
    The driver updates it every few tens of milliseconds, so windows should be much longer than that."""

    def __init__(self, pynvml, handle, source: str) -> None:
        self.pynvml = pynvml
        self.handle = handle
        self.source = source
        self._start = None  # type: Optional[Tuple[float, int]]

    def start(self) -> None:
        self._start = (time.perf_counter(), self.pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def stop(self) -> Tuple[float, float]:
        energy, now = self.pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle), time.perf_counter()
        if self._start is None:
            raise RuntimeError("stop() without start()")
        began, first = self._start
        energy_mj = float(energy - first)
        return energy_mj, energy_mj / 1000.0 / (now - began)


def nvml_meter(cuda_index: int) -> NvmlMeter:
    pynvml, handle, label = nvml_device(cuda_index)
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as error:
        raise Unavailable("nvml total energy on {}: {}".format(label, error))
    return NvmlMeter(pynvml, handle, "nvml total energy: " + label)


def gpu_state(cuda_index: int) -> Dict[str, str]:
    """Clocks, temperature, power, clocks-event reasons and other processes of one GPU, through NVML."""
    pynvml, handle, _ = nvml_device(cuda_index)
    # Newer pynvml names it ClocksEvent; older has only ClocksThrottle (the same call).
    reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
    reads = (
        ("gpu.sm_clock_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        ("gpu.sm_clock_max_mhz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        ("gpu.mem_clock_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)),
        ("gpu.temperature_c", lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
        ("gpu.power_w", lambda: "{:.1f}".format(pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)),
        ("gpu.power_limit_w", lambda: "{:.1f}".format(pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0)),
        ("gpu.throttle", lambda: ",".join(clock_reasons(reasons(handle))) or "none"),
    )
    state = {}
    try:
        for key, read in reads:
            try:
                state[key] = str(read())
            except pynvml.NVMLError:
                pass
        try:
            mine = (os.getpid(), os.getppid())
            others = [proc.pid for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if proc.pid not in mine]
            state["gpu.other_processes"] = str(len(others))
            if others:
                state["gpu.other_pids"] = ",".join(str(pid) for pid in others)
        except pynvml.NVMLError:
            pass
    finally:
        pynvml.nvmlShutdown()
    return state
