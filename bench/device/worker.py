"""The measuring side of every executor: answer protocol requests, a fresh child process per request.

The worker imports torch once and forks a child for every request, so a point starts in a
fraction of a second, CUDA is only ever initialised in a child (it does not survive a fork), and
a crash in a converter costs one point, not the sweep. The worker dies with its controller: when
its input ends (the controller exited, or the SSH connection dropped) it kills the child it waits
for, and every child is killed by the kernel if the worker itself dies (PR_SET_PDEATHSIG).

Replies go to the process's original stdout; everything else printed to stdout (a library's
chatter) is sent to stderr, where logs go, so it can never corrupt the protocol.
"""
import ctypes
import logging
import os
import select
import signal
import sys
from typing import Callable, Optional, Tuple

from bench.device import fingerprint
from bench.contract.errors import ConfigError
from bench.contract.logs import LOG_FORMAT
from bench.contract.protocol import OK, POINT_FAILURE, PROTOCOL, PlanError, decode, encode, error_reply, now_ms
from bench.contract.records import Measurement, Plan, failed_measurement
from bench.contract.names import DEVICE_CC, DEVICE_KIND, DEVICE_LABEL, LATENCY_MS

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
# A worker's stderr is relayed into the controller's log, which adds the time: the level and the logger suffice.
WORKER_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class ControllerGone(Exception):
    """The worker's input ended while a child was working: nobody waits for the answer any more."""


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def configure_logging(format: str = LOG_FORMAT) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=format)
    for chatty in ("onnx_ir", "onnxscript", "torch.onnx", "torch._dynamo", "torch._inductor"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


class LineInput:
    """Lines from a file descriptor, read with os.read so that select() sees exactly what is pending."""

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.buffer = b""
        self.ended = False

    def _fill(self) -> None:
        chunk = os.read(self.descriptor, 65536)
        if chunk:
            self.buffer += chunk
        else:
            self.ended = True

    def readline(self) -> Optional[bytes]:
        """The next line, or None at the end of input."""
        while b"\n" not in self.buffer and not self.ended:
            self._fill()
        if b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            return line
        return None

    def check_alive(self) -> None:
        """Raise ControllerGone if the input has ended (data that arrives meanwhile is kept)."""
        if not self.ended and select.select([self.descriptor], [], [], 0)[0]:
            self._fill()
        if self.ended:
            raise ControllerGone()


def run_in_child(work: Callable[[], dict], controller: Optional[LineInput]) -> Tuple[Optional[dict], str]:
    """``work()`` in a forked child: (its reply, "") or (None, how the child died).

    While the child works, ``controller`` is watched: if it ends, the child is killed and
    ControllerGone raised.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: do the work, send the reply, leave without running the parent's cleanup
        os.close(read_end)
        code = 0
        try:
            die_with_parent()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            data = encode(work())
            while data:
                data = data[os.write(write_end, data):]
        except BaseException:  # noqa: BLE001 - the work reports its own failures; this is a last resort
            logging.getLogger(__name__).exception("the worker's child failed")
            code = 70
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(code)
    os.close(write_end)
    chunks = []
    try:
        while True:
            watched = [read_end] + ([controller.descriptor] if controller and not controller.ended else [])
            ready = select.select(watched, [], [], 1.0)[0]
            if controller is not None and controller.descriptor in ready:
                controller.check_alive()
            if read_end in ready:
                chunk = os.read(read_end, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    if data:
        return decode(data), ""
    if os.WIFSIGNALED(status):
        return None, "signal " + signal.Signals(os.WTERMSIG(status)).name
    return None, "exit code {}".format(os.WEXITSTATUS(status))


def collect_facts() -> dict:
    """What this device is and has: interpreter, host, packages, backends and devices (needs no torch)."""
    host = fingerprint.host_facts()
    facts = dict(fingerprint.interpreter(), protocol=PROTOCOL, host=host, packages=fingerprint.package_versions())
    try:
        import torch
        import torchvision  # noqa: F401 - the core needs it; its absence is what this reports
    except ImportError as exc:
        facts["missing"] = "{} ({})".format(exc.name or "torch", exc)
        return facts
    from bench.device import backends

    facts["backends"] = backends.availability()
    devices = [{"device": "cpu", "label": fingerprint.device_label(host, None)}]
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        cuda = fingerprint.cuda_facts(index)
        devices.append({"device": "cuda:{}".format(index), "label": fingerprint.device_label(host, cuda),
                        "cc": cuda[DEVICE_CC]})
    facts["devices"] = devices
    facts["clock_ms"] = now_ms()  # the controller compares it with its own clock
    return facts


def resolve_plans(plans: list) -> dict:
    """Resolve every plan of a grid; each point is its resolved plan or the one-line error that stops it."""
    from bench.device import resolve

    labels = {device["device"]: device["label"] for device in collect_facts()["devices"]}
    points = []
    for plan in plans:
        try:
            points.append({"plan": resolve.resolve(plan, labels).to_json()})
        except (ConfigError, PlanError) as exc:
            points.append({"error": str(exc)})
    return {"op": "resolved", "points": points}


def measure_plan(plan: Plan, controller: Optional[LineInput]) -> Measurement:
    """One point: ``timing.repeats`` fresh processes (the first also checks the outputs; the others convert from
    the cache and time), summarised into one measurement. A process that dies unannounced, or a repeat that
    fails, makes the point failed with the reason."""
    from bench.device import clocks

    locked, undo = clocks.lock(plan.device) if plan.timing.lock_clocks else \
        ("not locked: timing.lock_clocks=false", None)
    try:
        measurement = _measure_repeats(plan, controller)
    finally:
        if undo is not None:
            clocks.restore(undo)
    measurement.details["state.clocks_locked"] = locked
    return measurement


def _measure_repeats(plan: Plan, controller: Optional[LineInput]) -> Measurement:
    from bench.device import point, repeats

    total = plan.timing.repeats
    done = []
    for index in range(1, total + 1):
        if total > 1:
            log.info("process %d of %d for this point", index, total)
        first = index == 1
        reply, death = run_in_child(lambda: {"op": "measured", "measurement": point.measure(plan, first).to_json()},
                                    controller)
        if reply is None:
            # The child took the device's fingerprint with it; what the worker knows without CUDA stands in.
            tags = dict(fingerprint.host_facts(), **{DEVICE_KIND: plan.device.split(":")[0],
                                                     DEVICE_LABEL: plan.resolution.device_label})
            return failed_measurement(plan, "{}the point's process died with {} before reporting a result".format(
                _which(index, total), death), POINT_FAILURE, tags)
        measurement = Measurement.from_json(reply["measurement"])
        if measurement.status != OK:
            if not first:
                measurement.reason = _which(index, total) + measurement.reason
            return measurement
        done.append(measurement)
        if total > 1:
            log.info("process %d of %d: median %.4g ms", index, total, measurement.metrics[LATENCY_MS])
    return repeats.combine(done, plan.timing)


def _which(index: int, total: int) -> str:
    return "process {} of {}: ".format(index, total) if total > 1 else ""


def preload() -> None:
    """Import what every point needs once, so each forked child starts with it (and never touches CUDA)."""
    try:
        import torchvision  # noqa: F401
        from bench.device import point  # noqa: F401
    except ImportError:
        return


def serve(descriptor_in: int, descriptor_out: int) -> int:
    """Answer requests from ``descriptor_in`` on ``descriptor_out`` until "bye" or the end of input."""
    controller = LineInput(descriptor_in)
    preload()
    while True:
        line = controller.readline()
        if line is None:
            return 0
        try:
            request = decode(line)
            op = request["op"]
            if op == "bye":
                return 0
            if op == "facts":
                reply, death = run_in_child(lambda: {"op": "facts", "facts": collect_facts()}, controller)
            elif op == "resolve":
                reply, death = run_in_child(lambda: resolve_plans(request["plans"]), controller)
            elif op == "measure":
                measured = measure_plan(Plan.from_json(request["plan"]), controller)
                reply, death = {"op": "measured", "measurement": measured.to_json()}, ""
            else:
                reply, death = error_reply("unknown request {!r}".format(op), user_error=False), ""
            if reply is None:
                reply = error_reply("the worker's child died with {} while answering {!r}".format(death, op),
                                    user_error=False)
        except ControllerGone:
            log.warning("the controller went away; stopping")
            return 1
        except (ValueError, KeyError) as exc:
            reply = error_reply("bad request: {}".format(exc), user_error=False)
        data = encode(reply)
        while data:
            data = data[os.write(descriptor_out, data):]


def serve_stdio() -> int:
    """``serve`` on stdin/stdout, with stdout kept for the protocol alone."""
    protocol_out = os.dup(1)
    os.dup2(2, 1)  # anything printed from here on goes to stderr
    sys.stdout = sys.stderr
    configure_logging(WORKER_LOG_FORMAT)
    return serve(0, protocol_out)

