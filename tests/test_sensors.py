"""Energy meters and device state (bench/device/sensors.py), tested against STAND-INS for hardware that cannot
exist on this machine.

tests/data/sysfs/ holds hand-made trees, NOT recordings of real devices, that imitate what these expose: a Jetson
Nano on L4T R32 (INA3221 through the iio driver), a Jetson Xavier NX on L4T R35 (INA3221 through hwmon), a Jetson
AGX Xavier on L4T R32 (two INA3221, no whole-module rail) and an x86 host with RAPL. Each tree's README says which
device and release it imitates and which of its files mirror which real paths. The tests copy a tree and write
the values they need into the copy. NVML is imitated in one test only, by ``FakeNvml`` (an object with pynvml's
function names), to check the decoding of its clock-reason bitmask and the counting of other processes; the rest
of the NVML code runs for real only on an NVIDIA GPU.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.device.sensors import cpu, jetson, nvml
from bench.device.sensors.meter import Unavailable
from bench.device.sensors import device_state, energy_meter, load_conditions
from conftest import ROOT

SYSFS = Path(__file__).resolve().parent / "data" / "sysfs"
NANO_INA = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
NX_INA = "sys/bus/i2c/drivers/ina3221/7-0040/hwmon/hwmon6"
RAPL = "sys/class/powercap/intel-rapl:0"


def tree(name: str, tmp_path: Path) -> Path:
    """A writable copy of a stand-in tree."""
    return Path(shutil.copytree(SYSFS / name, tmp_path / name))


def write(path: Path, value) -> None:
    """Replace a sysfs value at once, so a sampling thread never reads half a file."""
    part = path.with_name(path.name + ".part")
    part.write_text(f"{value}\n")
    os.replace(part, path)


def set_module_power(root: Path, milliwatts: int) -> None:
    """The whole-module rail's power: in mW on R32's iio layout, as 5 V x current on R35's hwmon layout."""
    if (root / NANO_INA).exists():
        write(root / NANO_INA / "in_power0_input", milliwatts)
    else:
        write(root / NX_INA / "in1_input", 5000)
        write(root / NX_INA / "curr1_input", milliwatts // 5)


@pytest.mark.parametrize("name", ["jetson-nano-l4t32", "xavier-nx-l4t35"])
def test_a_jetson_meter_integrates_a_constant_power(name, tmp_path):
    root = tree(name, tmp_path)
    set_module_power(root, 5000)
    meter, source = energy_meter("cuda:0", root=str(root))
    assert meter is not None, source
    began = time.perf_counter()
    meter.start()
    time.sleep(0.3)
    energy_mj, mean_w = meter.stop()
    elapsed = time.perf_counter() - began
    assert energy_mj == pytest.approx(5000 * elapsed, rel=0.15)
    assert mean_w == pytest.approx(5.0, rel=0.15)
    assert len(meter.samples) >= 5  # sampled through the window, not only at its ends


def test_a_jetson_meter_follows_a_power_that_changes_during_the_window(tmp_path):
    root = tree("jetson-nano-l4t32", tmp_path)
    set_module_power(root, 2000)
    meter, _ = energy_meter("cuda:0", root=str(root))
    changed = []

    def raise_power():
        time.sleep(0.3)
        set_module_power(root, 8000)
        changed.append(time.perf_counter())

    began = time.perf_counter()
    meter.start()
    thread = threading.Thread(target=raise_power)
    thread.start()
    time.sleep(0.6)
    energy_mj, mean_w = meter.stop()
    ended = time.perf_counter()
    thread.join()
    expected_mj = 2000 * (changed[0] - began) + 8000 * (ended - changed[0])
    assert energy_mj == pytest.approx(expected_mj, rel=0.15)
    assert mean_w == pytest.approx(expected_mj / 1000 / (ended - began), rel=0.15)
    assert 4.0 < mean_w < 6.0
    assert {power for _, power in meter.samples} == {2000.0, 8000.0}


def test_both_l4t_layouts_are_found_and_the_whole_module_rail_is_chosen(tmp_path):
    nano, nx, agx = (str(tree(name, tmp_path)) for name in ("jetson-nano-l4t32", "xavier-nx-l4t35", "agx-xavier-l4t32"))
    assert [rail.name for rail in jetson.ina3221_rails(nano)] == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]
    assert [rail.name for rail in jetson.ina3221_rails(nx)] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]  # not in7
    assert energy_meter("cuda:0", root=nano)[1] == "jetson INA3221: POM_5V_IN (whole module)"
    meter, source = energy_meter("cuda:0", root=nx)
    assert source == "jetson INA3221: VDD_IN (whole module)"
    assert meter.read_mw() == pytest.approx(5008 * 984 / 1000)  # mV x mA
    meter, source = energy_meter("cuda:0", root=agx)
    assert source == "jetson INA3221: sum of GPU, CPU, SOC, CV, VDDRQ, SYS5V (no whole-module input rail)"
    assert meter.read_mw() == 5000
    # The module's input feeds the CPU too: a CPU measured on a Jetson has the same meter.
    assert energy_meter("cpu", root=nano)[1] == "jetson INA3221: POM_5V_IN (whole module)"


def test_rapl_sums_package_and_dram_across_a_counter_wraparound(tmp_path):
    root = tree("rapl-x86", tmp_path)
    package, dram = root / RAPL / "energy_uj", root / RAPL / "intel-rapl:0:1" / "energy_uj"
    write(package, 262143328850 - 1000000)  # 1 J before the package counter wraps
    write(dram, 1000)
    meter, source = energy_meter("cpu", root=str(root))
    assert source == "rapl: package-0, dram"  # core is part of the package: not counted twice
    meter.start()
    write(package, 2000000)
    write(dram, 1001000)
    time.sleep(0.05)
    energy_mj, mean_w = meter.stop()
    assert energy_mj == pytest.approx((1000000 + 2000000 + 1000000) / 1000)
    assert 0 < mean_w < 4.0 / 0.05
    assert cpu.rapl_delta(10, 30, 100) == 20 and cpu.rapl_delta(90, 5, 100) == 15


def test_an_absent_source_is_unavailable_and_says_why(tmp_path, monkeypatch):
    empty = str(tmp_path)
    meter, source = energy_meter("cpu", root=empty)
    assert meter is None and source.startswith("unavailable: rapl: no package zone under ")
    meter, source = energy_meter("cuda:0", root=empty)
    assert meter is None and source.startswith("unavailable: nvml: reads the live driver")
    # This machine, as it is: a real RAPL reading where the VM has RAPL, else unavailable with the reason.
    meter, source = energy_meter("cpu")
    if meter is None:
        assert source.startswith("unavailable: rapl: ") and len(source) > len("unavailable: rapl: ")
    else:
        assert source.startswith("rapl: package")
        meter.start()
        time.sleep(0.05)
        energy_mj, mean_w = meter.stop()
        assert energy_mj >= 0 and mean_w >= 0
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if nvidia-ml-py were not installed
    assert energy_meter("cuda:0") == (None, ("unavailable: nvml: the pynvml module (pip install nvidia-ml-py) is "
                                             "not installed"))
    with pytest.raises(ValueError):
        energy_meter("gpu0")


def test_device_state_reads_each_recorded_tree(tmp_path):
    nano = device_state("cuda:0", root=str(tree("jetson-nano-l4t32", tmp_path)))
    unreadable = nano.pop("unreadable")
    assert nano == {"jetson.nvpmodel": "MAXN", "jetson.gpu_freq_mhz": "230", "jetson.gpu_freq_max_mhz": "921",
                    "jetson.gpu_temperature_c": "31", "jetson.emc_activity": "96000", "jetson.clocks": "off"}
    assert unreadable.startswith("EMC rate (none of /sys/kernel/debug/bpmp/debug/clk/emc/rate")
    assert unreadable.endswith("jetson.clocks judged by the GPU alone")
    root = tree("xavier-nx-l4t35", tmp_path)
    assert device_state("cuda:0", root=str(root)) == {
        "jetson.nvpmodel": "MODE_20W_6CORE", "jetson.gpu_freq_mhz": "1109", "jetson.gpu_freq_max_mhz": "1109",
        "jetson.gpu_temperature_c": "38", "jetson.emc_freq_mhz": "1866", "jetson.emc_activity": "120000",
        "jetson.clocks": "on"}
    cpu = device_state("cpu", root=str(root))
    assert cpu["cpu.governor"] == "schedutil" and cpu["cpu.freq_mhz"] == "1907" and cpu["jetson.clocks"] == "on"
    # jetson_clocks pins the EMC at nvpmodel's cap where there is one; an EMC below it means the clocks are not pinned.
    write(root / "sys/kernel/nvpmodel_emc_cap/emc_iso_cap", 1600000000)
    write(root / "sys/kernel/debug/bpmp/debug/clk/emc/rate", 1600000000)
    assert device_state("cuda:0", root=str(root))["jetson.clocks"] == "on"
    write(root / "sys/kernel/debug/bpmp/debug/clk/emc/rate", 204000000)
    assert device_state("cuda:0", root=str(root))["jetson.clocks"] == "off"
    assert device_state("cpu", root=str(tree("rapl-x86", tmp_path))) == {"cpu.governor": "powersave",
                                                                        "cpu.freq_mhz": "2400"}
    assert device_state("cpu", root=str(tmp_path / "nothing")) == {
        "unreadable": "cpufreq (no /sys/devices/system/cpu/cpu0/cpufreq)"}


def test_load_conditions_name_each_reason_and_nothing_for_a_clean_window():
    h100 = {"gpu.sm_clock_mhz": "1980", "gpu.throttle": "gpu_idle,applications_clocks_setting",
            "gpu.other_processes": "0"}
    pinned = {"jetson.clocks": "on", "jetson.gpu_freq_mhz": "921", "jetson.nvpmodel": "MAXN"}
    cpu = {"cpu.governor": "performance", "cpu.freq_mhz": "3000"}
    for clean in (h100, pinned, cpu, {}):
        assert load_conditions(clean, dict(clean)) == []
    assert load_conditions(h100, {**h100, "gpu.throttle": "sw_thermal_slowdown"}) == ["throttled: sw_thermal_slowdown"]
    assert load_conditions({**h100, "gpu.throttle": "sw_power_cap,hw_slowdown"}, h100) == [
        "throttled: hw_slowdown"]
    assert load_conditions({**h100, "gpu.throttle": "sw_power_cap"}, h100) == []  # at its power limit, by design
    assert load_conditions(h100, {**h100, "gpu.other_processes": "2"}) == ["shared GPU: 2 other process(es)"]
    assert load_conditions(h100, {**h100, "gpu.sm_clock_mhz": "1410"}) == [
        "SM clock fell from 1980 to 1410 MHz during the window"]
    assert load_conditions(h100, {**h100, "gpu.sm_clock_mhz": "1965"}) == []  # boost jitter, under CLOCK_DROP
    assert load_conditions({**pinned, "jetson.clocks": "off"}, pinned) == ["jetson_clocks off"]
    assert load_conditions(pinned, {**pinned, "jetson.gpu_freq_mhz": "614"}) == [
        "GPU clock fell from 921 to 614 MHz during the window"]
    assert load_conditions(pinned, {**pinned, "jetson.nvpmodel": "5W"}) == [
        "nvpmodel changed from MAXN to 5W during the window"]
    assert load_conditions({**cpu, "cpu.governor": "powersave"}, cpu) == ["CPU governor powersave"]


def test_cuda_indices_map_to_nvml_through_torch_uuids_and_cuda_visible_devices():
    uuids = ["GPU-aaaa1111-0000", "GPU-bbbb2222-0000", "GPU-bbbc3333-0000"]
    assert nvml.nvml_index(1, uuids) == 1
    assert nvml.nvml_index(0, uuids, visible="2,0") == 2
    assert nvml.nvml_index(0, uuids, visible="GPU-bbbb2222-0000") == 1
    assert nvml.nvml_index(1, uuids, visible="GPU-aaaa,GPU-bbbc") == 2  # unique UUID prefixes
    assert nvml.nvml_index(0, uuids, visible="0", torch_uuid="bbbc3333-0000") == 2  # torch knows best
    for index, visible in ((0, "GPU-bbb"), (1, "0"), (0, "")):
        with pytest.raises(Unavailable):
            nvml.nvml_index(index, uuids, visible=visible)
    with pytest.raises(Unavailable):
        nvml.nvml_index(3, uuids)


class FakeNvml:
    """A STAND-IN for the pynvml module (nvidia-ml-py): two H100s, the second one busy and hot. Only the functions
    sensors.py calls, with pynvml's names and units (mJ, mW, MHz)."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class NVMLError(Exception):
        pass

    def __init__(self, pids, energy_supported=True):
        self.pids = pids
        self.energy_supported = energy_supported
        self.energy_mj = 10 ** 9
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.inits -= 1

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{'ab'[handle] * 8}-1111-2222-3333-444455556666".encode()  # bytes, as older pynvml returns

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.energy_supported:
            raise self.NVMLError("Not Supported")
        self.energy_mj += 7000  # 7 J between two readings
        return self.energy_mj

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return {self.NVML_CLOCK_SM: 1755, self.NVML_CLOCK_MEM: 2619}[clock]

    def nvmlDeviceGetMaxClockInfo(self, handle, clock):
        return 1980

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 84

    def nvmlDeviceGetPowerUsage(self, handle):
        return 699123

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700000

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return 0x1 | 0x4 | 0x20 | 0x1000  # gpu_idle, sw_power_cap, sw_thermal_slowdown, and a bit NVML may add

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [type("Process", (), {"pid": pid, "usedGpuMemory": 1 << 30}) for pid in self.pids]


def test_nvml_through_a_stand_in_decodes_clock_reasons_and_counts_other_processes(monkeypatch):
    fake = FakeNvml(pids=[os.getpid(), os.getppid(), 4242, 4343])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbbbbbb")  # torch's cuda:0 is NVML's GPU 1
    state = device_state("cuda:0")
    assert state == {"gpu.sm_clock_mhz": "1755", "gpu.sm_clock_max_mhz": "1980", "gpu.mem_clock_mhz": "2619",
                     "gpu.temperature_c": "84", "gpu.power_w": "699.1", "gpu.power_limit_w": "700.0",
                     "gpu.throttle": "gpu_idle,sw_power_cap,sw_thermal_slowdown,unknown_0x1000",
                     "gpu.other_processes": "2", "gpu.other_pids": "4242,4343"}
    assert fake.inits == 0  # device_state shut NVML down again
    assert load_conditions(state, state) == ["throttled: sw_thermal_slowdown",
                                             "shared GPU: 2 other process(es)"]
    meter, source = energy_meter("cuda:0")
    assert source == "nvml total energy: NVIDIA H100 80GB HBM3 (GPU 1, GPU-bbbbbbbb-1111-2222-3333-444455556666)"
    meter.start()
    time.sleep(0.05)
    energy_mj, mean_w = meter.stop()
    assert energy_mj == 7000 and 0 < mean_w < 7 / 0.05
    fake.energy_supported = False
    assert energy_meter("cuda:0")[1] == ("unavailable: nvml total energy on NVIDIA H100 80GB HBM3 (GPU 1, "
                                         "GPU-bbbbbbbb-1111-2222-3333-444455556666): Not Supported")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert energy_meter("cuda:0") == (None, "unavailable: nvml: NVML sees 2 GPU(s), no GPU 3")


# Run by the Jetsons' Pythons: import must be free (no NVML, no torch), the meter's thread must work on 3.6.
ON_DEVICE = """
import json, sys, time
import bench.device.sensors as sensors
assert "pynvml" not in sys.modules and "torch" not in sys.modules
cpu = sensors.energy_meter("cpu")
meter, source = sensors.energy_meter("cuda:0", root=sys.argv[1])
began = time.perf_counter()
meter.start()
time.sleep(0.2)
energy, mean = meter.stop()
print(json.dumps({"cpu": cpu[1], "source": source, "energy": energy, "mean": mean,
                  "elapsed": time.perf_counter() - began, "state": sensors.device_state("cuda:0", root=sys.argv[1]),
                  "conditions": sensors.load_conditions({}, {"jetson.clocks": "off"})}))
"""


@pytest.mark.parametrize("which", ["py36", "py38"])
def test_the_jetsons_pythons_import_and_meter(which, request, tmp_path):
    python = request.getfixturevalue(which)
    root = tree("jetson-nano-l4t32", tmp_path)
    set_module_power(root, 5000)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    done = subprocess.run([python, "-c", ON_DEVICE, str(root)], capture_output=True, text=True, cwd="/",
                          env={**env, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    assert found["cpu"].startswith(("unavailable: rapl: ", "rapl: package"))
    assert found["source"] == "jetson INA3221: POM_5V_IN (whole module)"
    assert found["energy"] == pytest.approx(5000 * found["elapsed"], rel=0.15)
    assert found["mean"] == pytest.approx(5.0, rel=0.15)
    assert found["state"]["jetson.nvpmodel"] == "MAXN" and found["conditions"] == ["jetson_clocks off"]
