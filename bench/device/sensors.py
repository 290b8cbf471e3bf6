"""Energy and device state for one timed window of a benchmark.

``energy_meter`` picks the one energy source a device has: NVML's total-energy counter on NVIDIA GPUs
(x86), the INA3221 power monitor on Jetsons (sampled and integrated, as tegrastats reads it), RAPL on
x86 CPUs. ``device_state`` reads the clocks, power mode and throttling that decide whether a window ran
at full speed; ``load_conditions`` turns the states read before and after a window into the reasons it
was not clean. Nothing is read at import time (Jetsons have no NVML, and importing must be free), and
every sysfs path is read under ``root``, so that tests can point it at a recorded tree.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

from bench.device.fingerprint import read_text

# A Jetson meter reads the INA3221 this often (tegrastats' default interval is 1 s: too coarse for a window).
SAMPLE_PERIOD_S = 0.02

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

# The INA3221 rails that feed a whole Jetson module: POM_5V_IN on the Nano, VDD_IN on TX1, TX2, Xavier NX
# and Orin NX/Nano. AGX Xavier (GPU, CPU, SOC, CV, VDDRQ, SYS5V) and AGX Orin have none: their rails are
# parallel branches of the module's input, so their sum is the module's power (what jtop reports).
INPUT_RAILS = ("POM_5V_IN", "VDD_IN")
IIO_LABELS = "sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_*"      # L4T R32 (JetPack 4)
HWMON_LABELS = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in*_label"      # L4T R35, R36 (JetPack 5, 6)

# Where a Jetson's GPU devfreq lives: Nano; TX2; Xavier; Orin (R35, R36); else any devfreq named like a GPU.
GPU_DEVFREQ = ("sys/devices/57000000.gpu/devfreq/*", "sys/devices/17000000.gp10b/devfreq/*",
               "sys/devices/gpu.0/devfreq/*", "sys/devices/17000000.gv11b/devfreq/*",
               "sys/devices/platform/17000000.ga10b/devfreq/*", "sys/devices/platform/bus@0/17000000.gpu/devfreq/*",
               "sys/class/devfreq/*gpu*", "sys/class/devfreq/*gv11b*", "sys/class/devfreq/*ga10b*",
               "sys/class/devfreq/*gp10b*")
# The EMC (memory) clock in Hz, all in debugfs, which only root can read: Xavier and Orin (BPMP); Nano, TX2.
EMC_RATE = ("sys/kernel/debug/bpmp/debug/clk/emc/rate", "sys/kernel/debug/clk/emc/clk_rate",
            "sys/kernel/debug/clk/override.emc/clk_rate")
EMC_MAX = ("sys/kernel/debug/bpmp/debug/clk/emc/max_rate", "sys/kernel/debug/tegra_bwmgr/emc_max_rate")
EMC_CAP = "sys/kernel/nvpmodel_emc_cap/emc_iso_cap"  # nvpmodel's EMC ceiling (0: none); jetson_clocks honours it
EMC_ACTIVITY = "sys/kernel/actmon_avg_activity/mc_all"  # memory activity, what tegrastats' EMC_FREQ % comes from

CPUFREQ = "sys/devices/system/cpu/cpu0/cpufreq"
# Governors that hold CPU clocks low. (With intel_pstate, "powersave" is its dynamic default: still flagged,
# since a CPU measurement under it varies with load.)
SLOW_GOVERNORS = ("powersave",)
# A clock that falls by more than this fraction between before and after the window is reported.
CLOCK_DROP = 0.05


class Unavailable(Exception):
    """Why a source cannot be read here: the text that follows "unavailable: "."""


class EnergyMeter:
    """One source of energy readings for one device; ``source`` says what it reads and goes with every result."""

    source = ""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> Tuple[float, float]:
        """(energy in mJ, mean power in W) since ``start``."""
        raise NotImplementedError


def parse_device(device: str) -> Optional[int]:
    """The CUDA index of "cuda:N" ("cuda" is 0), or None for "cpu"."""
    if device == "cpu":
        return None
    match = re.match(r"^cuda(?::(\d+))?$", device)
    if not match:
        raise ValueError("device must be 'cpu' or 'cuda:N', not {!r}".format(device))
    return int(match.group(1) or 0)


def under(root: str, relative: str) -> str:
    return os.path.join(root, relative)


def read_int(path: str) -> Optional[int]:
    text = read_text(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def first_readable(root: str, candidates: Tuple[str, ...]) -> Tuple[Optional[int], str]:
    """The first of ``candidates`` that reads as an integer, or (None, why none did)."""
    denied = []
    for relative in candidates:
        try:
            with open(under(root, relative)) as handle:
                return int(handle.read().split()[0]), ""
        except PermissionError:
            denied.append("/" + relative)
        except (OSError, ValueError, IndexError):
            pass
    if denied:
        return None, "permission denied on {} (debugfs is root-only)".format(denied[0])
    return None, "none of {} exists".format(", ".join("/" + c for c in candidates))


def mhz(hz: int) -> str:
    return str(hz // 1000000)


# ----- NVIDIA GPUs on x86: NVML -----

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


# ----- Jetsons: the INA3221 power monitor, devfreq, debugfs, nvpmodel -----

class Rail:
    """One INA3221 channel: R32's iio driver gives its power in mW, R35's hwmon driver volts (mV) and amps (mA)."""

    def __init__(self, name: str, power: str = "", volts: str = "", amps: str = "") -> None:
        self.name = name
        self.power = power
        self.volts = volts
        self.amps = amps

    def read_mw(self) -> float:
        if self.power:
            return float(read_file(self.power))
        return float(read_file(self.volts)) * float(read_file(self.amps)) / 1000.0


def read_file(path: str) -> str:
    """A sysfs value, raising OSError (unlike read_text) so a meter can say why it cannot read."""
    with open(path) as handle:
        return handle.read().strip()


def ina3221_rails(root: str) -> List[Rail]:
    """Every labelled INA3221 channel under ``root``, in either driver's layout."""
    rails = []
    for label in sorted(glob.glob(under(glob.escape(root), IIO_LABELS))):
        name, channel = read_text(label), label.rsplit("_", 1)[1]
        if name:
            rails.append(Rail(name, power=os.path.join(os.path.dirname(label), "in_power{}_input".format(channel))))
    for label in sorted(glob.glob(under(glob.escape(root), HWMON_LABELS))):
        folder, channel = os.path.dirname(label), os.path.basename(label)[2:-len("_label")]
        name, amps = read_text(label), os.path.join(folder, "curr{}_input".format(channel))
        # "NC": an unconnected channel (AGX Orin); in7 ("sum of shunt voltages") has no curr7_input.
        if name and name != "NC" and os.path.exists(amps):
            rails.append(Rail(name, volts=os.path.join(folder, "in{}_input".format(channel)), amps=amps))
    return rails


def module_rails(rails: List[Rail]) -> Tuple[List[Rail], str]:
    """The rails whose power is the module's, and how ``source`` names them."""
    for wanted in INPUT_RAILS:
        for rail in rails:
            if rail.name == wanted:
                return [rail], "{} (whole module)".format(wanted)
    return rails, "sum of {} (no whole-module input rail)".format(", ".join(rail.name for rail in rails))


def trapezoid_mj(samples: List[Tuple[float, float]]) -> float:
    """Energy in mJ of (seconds, mW) samples: the trapezoid rule."""
    return sum((p0 + p1) / 2.0 * (t1 - t0) for (t0, p0), (t1, p1) in zip(samples, samples[1:]))


class JetsonMeter(EnergyMeter):
    """Samples the module's power in a background thread every ``period_s`` and integrates it over the window.
    The INA3221 reports power, not energy, so a sampled integral is the best there is (as tegrastats does)."""

    def __init__(self, rails: List[Rail], source: str, period_s: float = SAMPLE_PERIOD_S) -> None:
        self.rails = rails
        self.source = source
        self.period_s = period_s
        self.samples = []  # type: List[Tuple[float, float]]
        self._done = threading.Event()
        self._thread = None  # type: Optional[threading.Thread]

    def read_mw(self) -> float:
        return sum(rail.read_mw() for rail in self.rails)

    def _sample(self) -> None:
        try:
            power = self.read_mw()
        except (OSError, ValueError):  # a read racing a sysfs update: skip it, the next one comes soon
            return
        self.samples.append((time.perf_counter(), power))

    def _run(self) -> None:
        while not self._done.wait(self.period_s):
            self._sample()

    def start(self) -> None:
        self.samples = []
        self._done.clear()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="jetson-power", daemon=True)
        self._thread.start()

    def stop(self) -> Tuple[float, float]:
        if self._thread is None:
            raise RuntimeError("stop() without start()")
        self._done.set()
        self._thread.join()
        self._thread = None
        self._sample()
        if len(self.samples) < 2:
            raise RuntimeError("{}: fewer than two readings in the window".format(self.source))
        energy_mj = trapezoid_mj(self.samples)
        return energy_mj, energy_mj / 1000.0 / (self.samples[-1][0] - self.samples[0][0])


def jetson_meter(root: str) -> JetsonMeter:
    rails = ina3221_rails(root)
    if not rails:
        raise Unavailable("jetson: no INA3221 power monitor under {} (the Jetson Nano 2GB has none)".format(
            under(root, "sys/bus/i2c/drivers/ina3221[x]")))
    chosen, label = module_rails(rails)
    meter = JetsonMeter(chosen, "jetson INA3221: " + label)
    try:
        meter.read_mw()
    except (OSError, ValueError) as error:
        raise Unavailable("jetson INA3221: {}".format(error))
    return meter


def gpu_devfreq(root: str) -> Optional[str]:
    """The folder of the Jetson GPU's devfreq (cur_freq, min_freq, max_freq in Hz), or None."""
    for pattern in GPU_DEVFREQ:
        for folder in sorted(glob.glob(under(glob.escape(root), pattern))):
            if os.path.exists(os.path.join(folder, "max_freq")):
                return folder
    return None


def is_jetson(root: str) -> bool:
    """L4T's release file, or an INA3221 (not devfreq alone: some x86 hosts have a devfreq GPU too)."""
    return os.path.exists(under(root, "etc/nv_tegra_release")) or bool(ina3221_rails(root))


def nvpmodel(root: str) -> Optional[str]:
    """The power mode's name: ``nvpmodel -q`` on the live system, else nvpmodel's status file and its config."""
    if root == "/" and shutil.which("nvpmodel"):
        try:
            query = subprocess.run(["nvpmodel", "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   universal_newlines=True, timeout=10).stdout
            match = re.search(r"NV Power Mode:\s*(\S+)", query)
            if match:
                return match.group(1)
        except (OSError, subprocess.SubprocessError):
            pass
    status = read_text(under(root, "var/lib/nvpmodel/status")) or ""  # "pmode:0000" as nvpmodel -m left it
    match = re.search(r"pmode:(\d+)", status)
    if not match:
        return None
    mode = int(match.group(1))
    conf = read_text(under(root, "etc/nvpmodel.conf")) or ""  # "< POWER_MODEL ID=0 NAME=MAXN >"
    name = re.search(r"<\s*POWER_MODEL\s+ID={}\s+NAME=(\S+)\s*>".format(mode), conf)
    return name.group(1) if name else "mode {}".format(mode)


def gpu_temperature(root: str) -> Optional[str]:
    """The GPU's thermal zone (type GPU-therm on R32, gpu-thermal on R35+), in degrees C."""
    for zone in sorted(glob.glob(under(glob.escape(root), "sys/class/thermal/thermal_zone*"))):
        if (read_text(os.path.join(zone, "type")) or "").lower().startswith("gpu"):
            milli = read_int(os.path.join(zone, "temp"))
            if milli is not None:
                return str(milli // 1000)
    return None


def jetson_state(root: str, unreadable: List[str]) -> Dict[str, str]:
    """Power mode, whether jetson_clocks pinned the clocks, GPU and EMC frequencies."""
    state = {}
    mode = nvpmodel(root)
    if mode:
        state["jetson.nvpmodel"] = mode
    else:
        unreadable.append("nvpmodel (no nvpmodel on PATH, no /var/lib/nvpmodel/status)")
    low = high = None
    folder = gpu_devfreq(root)
    if folder:
        current, low, high = (read_int(os.path.join(folder, name)) for name in ("cur_freq", "min_freq", "max_freq"))
        if current is not None:
            state["jetson.gpu_freq_mhz"] = mhz(current)
        if high is not None:
            state["jetson.gpu_freq_max_mhz"] = mhz(high)
    else:
        unreadable.append("GPU devfreq (none found under /sys/devices)")
    temperature = gpu_temperature(root)
    if temperature:
        state["jetson.gpu_temperature_c"] = temperature
    emc, why = first_readable(root, EMC_RATE)
    emc_max, _ = first_readable(root, EMC_MAX)
    cap = read_int(under(root, EMC_CAP))
    if emc_max and cap:
        emc_max = min(emc_max, cap)
    if emc is not None:
        state["jetson.emc_freq_mhz"] = mhz(emc)
    else:
        unreadable.append("EMC rate ({}): jetson.clocks judged by the GPU alone".format(why))
    activity = read_text(under(root, EMC_ACTIVITY))
    if activity:
        state["jetson.emc_activity"] = activity
    # jetson_clocks sets the GPU's min_freq to its max_freq and the EMC to its (capped) maximum.
    if low is not None and high is not None:
        pinned = low == high and (emc is None or not emc_max or emc >= emc_max)
        state["jetson.clocks"] = "on" if pinned else "off"
    return state


# ----- CPUs on x86 Linux: RAPL -----

def rapl_delta(before: int, after: int, max_range: int) -> int:
    """Counter difference in uJ; the counter wraps to 0 past max_energy_range_uj (at most once in a window:
    a 200 W package wraps about every 20 minutes)."""
    return after - before if after >= before else after + max_range - before


def rapl_zones(root: str) -> List[Tuple[str, str, int]]:
    """(name, energy_uj path, max_energy_range_uj) of each package and DRAM zone. core and uncore are parts of
    a package, and psys overlaps the packages, so they are left out."""
    zones = []
    top = sorted(path for path in glob.glob(under(glob.escape(root), "sys/class/powercap/intel-rapl:*"))
                 if re.search(r"intel-rapl:\d+$", path))
    for zone in top:
        for path in [zone] + sorted(glob.glob(os.path.join(glob.escape(zone), "intel-rapl:*:*"))):
            name = read_text(os.path.join(path, "name")) or ""
            if name.startswith("package") or name == "dram":
                zones.append((name, os.path.join(path, "energy_uj"),
                              read_int(os.path.join(path, "max_energy_range_uj")) or 0))
    return zones


class RaplMeter(EnergyMeter):
    """RAPL's energy counters of the CPU packages (and their DRAM), one reading at each end of the window."""

    def __init__(self, zones: List[Tuple[str, str, int]]) -> None:
        self.zones = zones
        self.source = "rapl: " + ", ".join(name for name, _, _ in zones)
        self._start = None  # type: Optional[Tuple[float, List[int]]]

    def read_uj(self) -> List[int]:
        return [int(read_file(path)) for _, path, _ in self.zones]

    def start(self) -> None:
        self._start = (time.perf_counter(), self.read_uj())

    def stop(self) -> Tuple[float, float]:
        counters, now = self.read_uj(), time.perf_counter()
        if self._start is None:
            raise RuntimeError("stop() without start()")
        began, first = self._start
        energy_mj = sum(rapl_delta(a, b, zone[2]) for a, b, zone in zip(first, counters, self.zones)) / 1000.0
        return energy_mj, energy_mj / 1000.0 / (now - began)


def rapl_meter(root: str) -> RaplMeter:
    zones = rapl_zones(root)
    if not zones:
        raise Unavailable("rapl: no package zone under {} (not an x86 Linux host, or a VM that hides RAPL)".format(
            under(root, "sys/class/powercap")))
    meter = RaplMeter(zones)
    try:
        meter.read_uj()
    except PermissionError as error:
        raise Unavailable("rapl: cannot read {}: permission denied (recent kernels let only root read it)".format(
            error.filename))
    except (OSError, ValueError) as error:
        raise Unavailable("rapl: {}".format(error))
    return meter


def cpu_state(root: str, unreadable: List[str]) -> Dict[str, str]:
    state = {}
    governor = read_text(under(root, CPUFREQ + "/scaling_governor"))
    if governor:
        state["cpu.governor"] = governor
    khz = read_int(under(root, CPUFREQ + "/scaling_cur_freq"))
    if khz is not None:
        state["cpu.freq_mhz"] = str(khz // 1000)
    if not state:
        unreadable.append("cpufreq (no /{})".format(CPUFREQ))
    return state


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
