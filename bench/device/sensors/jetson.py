"""Jetsons: the INA3221 power monitor (sampled and integrated, as tegrastats reads it), the GPU's and memory's
clocks, the power mode (nvpmodel) and temperatures, all from sysfs."""
import glob
import os
import re
import shutil
import subprocess
import threading
import time
from typing import Dict, List, Optional, Tuple

from bench.device.fingerprint import read_text
from bench.device.sensors.meter import SAMPLE_PERIOD_S, EnergyMeter, Unavailable, first_readable, mhz, read_file, \
    read_int, trapezoid_mj, under


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
