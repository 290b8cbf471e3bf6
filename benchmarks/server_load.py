"""What one team server holds: eight devices' sweeps started at the same moment against the deploy recipe's
server (PostgreSQL, basic auth, several workers), with analysts reading the store while they write.

Prints points recorded per second, the time to record one point seen from the device (from the end of its
measurement to the sweep's "recorded as MLflow run" line: the upload and the parent's heartbeat), the CPU and
memory of the server's workers and of PostgreSQL, and what the store grew by per point. Everything runs on
this machine, so the sweeps measure on the same cores the server uses: the figures are a floor.

    python benchmarks/server_load.py --devices 8 --points 2 --workers 4
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout; the test suite's PostgreSQL and deploy-script server

from conftest import SMALL, descendants  # noqa: E402
from postgres import Postgres, TeamServer, as_user, enrol  # noqa: E402

RECORDED = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*recorded as MLflow run (\w+)", re.M)


@dataclass
class Usage:
    """CPU seconds and peak resident memory of a process tree, sampled while the load runs."""
    root: int
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    _start: dict[int, float] = field(default_factory=dict)

    def sample(self, first: bool = False) -> None:
        total_cpu, rss = 0.0, 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in [self.root, *descendants(self.root)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError):
                continue
            if first:
                self._start[pid] = cpu
            total_cpu += cpu - self._start.get(pid, 0.0)
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        self.cpu_s = max(self.cpu_s, total_cpu)
        self.peak_rss_mb = max(self.peak_rss_mb, rss)


@dataclass
class Load:
    sweeps: list[subprocess.CompletedProcess]
    reads: list[subprocess.CompletedProcess]
    record_s: list[float]  # per point: end of its measurement -> recorded, seen from the device
    span_s: float  # first point recorded -> last
    server: Usage
    database: Usage


def device_env(server: TeamServer, user: str, password: str, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "XDG_STATE_HOME": str(home / "state"),
            **as_user(user, password)}


def start_sweeps(server: TeamServer, devices: dict[str, str], folder: Path, grid: list[str]) -> list[subprocess.Popen]:
    """One ``run.py -m`` per device, each with its own label, account, spool and state, started together."""
    procs = []
    for user, password in devices.items():
        home = folder / user
        env = device_env(server, user, password, home)
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "-m", *grid, f"label={user}", "tracking=server",
             f"tracking.spool_dir={home / 'spool'}"], cwd=home, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    return procs


def read_while(server: TeamServer, reader: tuple[str, str], folder: Path, busy) -> list[subprocess.CompletedProcess]:
    """An analyst's report and regression check, over and over while ``busy()``; at least once each."""
    env = device_env(server, *reader, folder / "analyst")
    done: list[subprocess.CompletedProcess] = []
    while busy() or len(done) < 2:
        for module in ("analysis.report", "analysis.regress"):
            done.append(subprocess.run([sys.executable, "-m", module, "--tracking-uri", server.uri], cwd=ROOT, env=env,
                                       capture_output=True, text=True, timeout=300))
        time.sleep(5)  # an analyst refreshing now and then, not a tight loop on the two cores the sweeps share
    return done


def run_load(server: TeamServer, devices: dict[str, str], reader: tuple[str, str], folder: Path,
             grid: list[str]) -> Load:
    """The sweeps and the reader at once; afterwards the record times from the sweeps' own log lines."""
    from mlflow.tracking import MlflowClient

    usage = [Usage(server.process.pid), Usage(postmaster(server.postgres))]
    for u in usage:
        u.sample(first=True)
    procs = start_sweeps(server, devices, folder, grid)
    reads: list[subprocess.CompletedProcess] = []
    reader_thread = threading.Thread(target=lambda: reads.extend(
        read_while(server, reader, folder, lambda: any(p.poll() is None for p in procs))))
    reader_thread.start()
    while any(p.poll() is None for p in procs):
        for u in usage:
            u.sample()
        time.sleep(0.5)
    outputs = [subprocess.CompletedProcess(p.args, p.returncode, p.stdout.read(), "") for p in procs]
    reader_thread.join()
    for u in usage:
        u.sample()
    os.environ.update(as_user(*reader))  # this process reads the runs as the analyst
    client = MlflowClient(server.uri)
    seen: list[tuple[float, float]] = []  # (recorded at, record time)
    for out in outputs:
        for stamp, run_id in RECORDED.findall(out.stdout):
            at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            seen.append((at, at - client.get_run(run_id).info.end_time / 1000))
    span = max(a for a, _ in seen) - min(a for a, _ in seen) if seen else 0.0
    return Load(outputs, reads, [s for _, s in seen], span, *usage)


def postmaster(cluster: Postgres) -> int:
    return int((cluster.folder / "data" / "postmaster.pid").read_text().split()[0])


def store_size(server: TeamServer) -> tuple[int, int]:
    """(bytes of the runs database, bytes of the artifacts) as they stand."""
    env = {**os.environ, **server.postgres.env()}
    size = subprocess.run(["psql", "-At", "-d", "postgres", "-c", "SELECT pg_database_size('mlflow')"], env=env,
                          capture_output=True, text=True, check=True).stdout
    artifacts = sum(p.stat().st_size for p in (server.folder / "artifacts").rglob("*") if p.is_file())
    return int(size), artifacts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--points", type=int, default=2, help="points per sweep (batch sizes 1..N)")
    parser.add_argument("--workers", type=int, default=4, help="the server's uvicorn workers")
    parser.add_argument("--auth-cache-ttl", type=int, default=60,
                        help="seconds a worker trusts a checked password (0: a PBKDF2 check on every request)")
    args = parser.parse_args()
    os.environ["MLFLOW_AUTH_CACHE_TTL_S"] = str(args.auth_cache_ttl)
    with tempfile.TemporaryDirectory(prefix="trt-bench-pg-") as pg_dir, tempfile.TemporaryDirectory() as work:
        cluster = Postgres(Path(pg_dir))
        cluster.init()
        cluster.start()
        server = TeamServer(Path(work) / "server", admin_password=secrets.token_urlsafe(16), postgres=cluster,
                            workers=args.workers)
        try:
            server.init()
            server.start()
            devices = {f"device-{i:02d}": secrets.token_urlsafe(16) for i in range(args.devices)}
            enrol(server, devices)
            enrol(server, {"analyst": (analyst := secrets.token_urlsafe(16))}, "READ")
            before = store_size(server)
            grid = [*SMALL, "backend=pytorch", "raw_baseline=false",
                    "input.batch_size=" + ",".join(str(b) for b in range(1, args.points + 1))]
            load = run_load(server, devices, ("analyst", analyst), Path(work), grid)
            after = store_size(server)
            report(load, args, [a - b for a, b in zip(after, before)])
        finally:
            server.stop()
            cluster.stop()
    return 0


def report(load: Load, args: argparse.Namespace, grew: list[int]) -> None:
    points = len(load.record_s)
    print(f"{args.devices} sweeps x {args.points} points, server with {args.workers} workers and a "
          f"{args.auth_cache_ttl} s password cache, on {os.cpu_count()} cores")
    print(f"sweeps exit 0: {sum(s.returncode == 0 for s in load.sweeps)}/{len(load.sweeps)}; "
          f"analyst reads exit 0: {sum(r.returncode == 0 for r in load.reads)}/{len(load.reads)}")
    for read in load.reads:
        if read.returncode:
            print(f"  {read.args[2]} exit {read.returncode}: {(read.stderr.strip().splitlines() or [''])[-1]}")
    print(f"points recorded: {points} in {load.span_s:.1f} s ({points / max(load.span_s, 1e-9):.2f} points/s)")
    print(f"time to record one point (device): p50 {np.percentile(load.record_s, 50):.2f} s, "
          f"p95 {np.percentile(load.record_s, 95):.2f} s, max {max(load.record_s):.2f} s")
    for name, usage in (("mlflow server", load.server), ("postgresql", load.database)):
        print(f"{name}: {usage.cpu_s:.1f} CPU s ({usage.cpu_s / points:.2f} per point), "
              f"peak {usage.peak_rss_mb:.0f} MiB resident")
    print(f"store grew by {grew[0] / points / 1024:.1f} KiB of database and {grew[1] / points / 1024:.1f} KiB "
          "of artifacts per point")
    # Each side's ceiling if it had every core of this machine to itself: the lower one limits first.
    ceilings = {name: os.cpu_count() * points / max(usage.cpu_s, 1e-9)
                for name, usage in (("the mlflow server's workers", load.server), ("postgresql", load.database))}
    print("ceiling on these cores: " + ", ".join(f"{name} {rate:.1f} points/s" for name, rate in ceilings.items())
          + f"; limits first: {min(ceilings, key=ceilings.get)}")


if __name__ == "__main__":
    sys.exit(main())
