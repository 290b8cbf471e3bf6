"""x86 CPUs: RAPL's energy counters and the frequency governor, from sysfs."""
import glob
import os
import re
import time
from typing import Dict, List, Tuple

from bench.device.fingerprint import read_text

from bench.device.sensors.meter import EnergyMeter, Unavailable, read_file, read_int, under


CPUFREQ = "sys/devices/system/cpu/cpu0/cpufreq"


# Governors that hold CPU clocks low. (With intel_pstate, "powersave" is its dynamic default: still flagged,
# since a CPU measurement under it varies with load.)
SLOW_GOVERNORS = ("powersave",)


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
