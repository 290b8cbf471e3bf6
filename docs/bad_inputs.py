"""Writes docs/bad-inputs.md: every bad input tried, run for real, and the line its user sees.

    python docs/bad_inputs.py            # about 3 minutes on a 2-core machine

Each command runs in an empty scratch folder against a store made there; the table records its exit status,
the last line it printed to stderr, and whether anything was left behind in the folder or the store.
tests/test_bad_input.py and tests/test_unattended.py assert the same behaviour; this file is what a reader sees.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model=resnet18", "input=64x64", "timing=quick", "backend=pytorch"]
RUN = [sys.executable, str(ROOT / "run.py"), *SMALL]

# (what the user got wrong, the command after `python`) ; {dir} is the scratch folder, {store} a good store there
CASES = [
    ("unknown model", ["run.py", "model=resnet999"]),
    ("unknown precision", ["run.py", "precision=int4"]),
    ("unknown scenario", ["run.py", "scenario=offline"]),
    ("not an integer", ["run.py", "input.height=abc"]),
    ("typo in a key", ["run.py", "timing.min_iter=5"]),
    ("typo added with +", ["run.py", "+precison=fp16"]),
    ("torchvision model without a name", ["run.py", "model=torchvision"]),
    ("unknown torchvision model", ["run.py", "model=torchvision", "model.name=resnet19"]),
    ("batch size 0", ["run.py", "input.batch_size=0"]),
    ("no processes per point", ["run.py", "timing.repeats=0"]),
    ("an interval level outside (0, 1)", ["run.py", "timing.interval=1.5"]),
    ("negative size", ["run.py", "input.height=-3"]),
    ("input too small for the model", ["run.py", "input.height=16", "input.width=16"]),
    ("one bad point in a grid", ["run.py", "-m", "input.batch_size=1,0,2"]),
    ("bad device", ["run.py", "device=tpu"]),
    ("CUDA on a machine without it", ["run.py", "device=cuda"]),
    ("energy required where there is no sensor", ["run.py", "energy=require"]),
    ("calibration folder not given", ["run.py", "calibration.source=folder", "precision=int8"]),
    ("calibration folder missing", ["run.py", "calibration=folder", "calibration.folder={dir}/nope",
                                    "precision=int8"]),
    ("calibration folder empty", ["run.py", "calibration=folder", "calibration.folder={dir}/empty",
                                  "precision=int8"]),
    ("calibration images that do not decode", ["run.py", "calibration=folder", "calibration.folder={dir}/broken",
                                               "precision=int8"]),
    ("accuracy folder not given", ["run.py", "accuracy=folder"]),
    ("accuracy folder missing", ["run.py", "accuracy=folder", "accuracy.folder={dir}/nope"]),
    ("weights file missing", ["run.py", "model.weights={dir}/nope.pt"]),
    ("weights that are no state dict", ["run.py", "model.weights={dir}/list.pt"]),
    ("weights of another architecture", ["run.py", "model.weights={dir}/resnet34.pt"]),
    ("bad backend option value", ["run.py", "backend=onnxruntime", "backend.calibrate_method=Magic"]),
    ("unknown backend option", ["run.py", "backend=onnxruntime", "+backend.magic=1"]),
    ("TensorRT backend where TensorRT is absent", ["run.py", "backend=tensorrt"]),
    ("SSH executor without a host", ["run.py", "executor=ssh"]),
    ("SSH host that does not resolve", ["run.py", "executor=ssh", "executor.host=nosuchhost.invalid"]),
    ("SSH host that refuses the connection", ["run.py", "executor=ssh", "executor.host=ssh://127.0.0.1:9"]),
    ("resume given to a single run", ["run.py", "resume=0123456789abcdef0123456789abcdef"]),
    ("resume a run that does not exist", ["run.py", "-m", "resume=0123456789abcdef0123456789abcdef",
                                          "tracking.uri={store}"]),
    ("store in a folder that does not exist", ["run.py", "tracking.uri=sqlite:////no/such/dir/mlflow.db"]),
    ("unknown store scheme", ["run.py", "tracking.uri=garbage://x"]),
    ("corrupt store", ["run.py", "tracking.uri=sqlite:///{dir}/corrupt.db"]),
    ("unreachable tracking server", ["run.py", "tracking=server", "tracking.uri=http://127.0.0.1:9",
                                     "tracking.spool_dir=null"]),
    ("report of a sweep that does not exist", ["-m", "analysis.report", "--tracking-uri", "{store}", "--sweep",
                                               "0123456789abcdef0123456789abcdef"]),
    ("--attach to a sweep that does not exist", ["-m", "analysis.report", "--tracking-uri", "{store}", "--sweep",
                                                 "0123456789abcdef0123456789abcdef", "--attach"]),
    ("report of a corrupt store", ["-m", "analysis.report", "--tracking-uri", "sqlite:///{dir}/corrupt.db"]),
    ("report of a store that does not exist", ["-m", "analysis.report", "--tracking-uri",
                                               "sqlite:///{dir}/nope.db"]),
    ("report: a date that is no date", ["-m", "analysis.report", "--tracking-uri", "{store}", "--since",
                                        "yesterday-ish"]),
    ("report: unknown format", ["-m", "analysis.report", "--format", "pdf"]),
    ("regress: threshold that is no number", ["-m", "analysis.regress", "--tracking-uri", "{store}",
                                              "--threshold", "abc"]),
    ("regress: window of 0", ["-m", "analysis.regress", "--tracking-uri", "{store}", "--window", "0"]),
    ("recommend: agreement above 1", ["-m", "analysis.recommend", "--tracking-uri", "{store}",
                                      "--min-agreement", "2"]),
    ("sync: spool folder that does not exist", ["-m", "bench.store.sync", "--spool", "{dir}/nope"]),
    ("nightly: a date that does not exist", ["nightly.py", "--date", "2026-13-40"]),
    ("nightly: unknown grid", ["nightly.py", "--grid", "nosuch"]),
    ("nightly: a budget of no time", ["nightly.py", "--budget", "0"]),
    ("ui: a store that does not exist", ["-m", "bench.store.ui", "--tracking-uri", "sqlite:///{dir}/nope.db"]),
    ("ui: a sweep that does not exist", ["-m", "bench.store.ui", "--tracking-uri", "{store}", "--sweep", "00000000"]),
    ("ui: a port that is no port", ["-m", "bench.store.ui", "--tracking-uri", "{store}", "--port", "70000"]),
]


def stage(folder: Path) -> str:
    """The files the cases point at, and a good store with one sweep in it; returns the store's URI."""
    import torch
    from torchvision.models import resnet34

    (folder / "empty").mkdir()
    (folder / "broken").mkdir()
    (folder / "broken" / "a.jpg").write_bytes(b"this is not a jpeg")
    torch.save([1, 2, 3], folder / "list.pt")
    torch.save(resnet34().state_dict(), folder / "resnet34.pt")
    (folder / "corrupt.db").write_bytes(b"this is not an SQLite database" * 100)
    store = f"sqlite:///{folder / 'good' / 'mlflow.db'}"
    (folder / "good").mkdir()
    subprocess.run([*RUN, f"tracking.uri={store}"], cwd=folder, capture_output=True, check=True, timeout=600)
    return store


def runs_in(store: str) -> int:
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:
        return db.execute("select count(*) from runs").fetchone()[0]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        store = stage(folder)
        before = runs_in(store)
        for number, (what, command) in enumerate(CASES, 1):
            args = [part.format(dir=folder, store=store) for part in command]
            work = folder / f"case{number}"
            work.mkdir()
            print(f"[{number}/{len(CASES)}] {what}", file=sys.stderr, flush=True)
            argv = [sys.executable, *(["-m", args[1], *args[2:]] if args[0] == "-m" else
                                      [str(ROOT / args[0]), *(SMALL if args[0] == "run.py" else []), *args[1:]])]
            proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            lines = proc.stderr.strip().splitlines() or [""]
            said = next((line for line in reversed(lines) if line.startswith("error:")), None) or \
                next((line for line in reversed(proc.stdout.splitlines()) if ": skipped" in line), lines[-1])
            left = sorted(p.name for p in work.iterdir())
            shown = " ".join(args).replace(str(folder), "…")
            if runs_in(store) != before:
                raise SystemExit(f"error: case {number} ({what}) changed the store")
            rows.append((what, f"`python {shown}`", proc.returncode, len(lines), said.replace(str(folder), "…"),
                         ", ".join(left) or "nothing"))
    out = ROOT / "docs" / "bad-inputs.md"
    with open(out, "w") as f:
        f.write("# Bad inputs and what the user sees\n\nWritten by `python docs/bad_inputs.py`, which runs each "
                "command for real (run.py with `" + " ".join(SMALL) + "` before the overrides shown), in an empty "
                "folder, beside a store holding one sweep. *stderr lines* counts every line printed to stderr, "
                "progress logging included; the `error:` line is shown (for a point recorded as skipped, the line "
                "saying so). No case changed the store.\n\n"
                "| mistake | command | exit | stderr lines | what the user is told | left in the folder |\n"
                "|---|---|---|---|---|---|\n")
        for what, command, code, count, last, left in rows:
            shown = last.replace("|", "\\|")
            f.write(f"| {what} | {command} | {code} | {count} | {shown} | {left} |\n")
    print(f"wrote {out} ({len(rows)} inputs)", file=sys.stderr)


if __name__ == "__main__":
    main()
