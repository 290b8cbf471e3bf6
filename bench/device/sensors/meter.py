"""What every sensor shares: the meter's interface, the reason a source is unavailable, and reading sysfs under
a root that tests can point at a recorded tree."""
import os
from typing import List, Optional, Tuple

from bench.device.fingerprint import read_text


# A Jetson meter reads the INA3221 this often (tegrastats' default interval is 1 s: too coarse for a window).
SAMPLE_PERIOD_S = 0.02


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


def read_file(path: str) -> str:
    """A sysfs value, raising OSError (unlike read_text) so a meter can say why it cannot read."""
    with open(path) as handle:
        return handle.read().strip()


def trapezoid_mj(samples: List[Tuple[float, float]]) -> float:
    """Energy in mJ of (seconds, mW) samples: the trapezoid rule."""
    return sum((p0 + p1) / 2.0 * (t1 - t0) for (t0, p0), (t1, p1) in zip(samples, samples[1:]))
