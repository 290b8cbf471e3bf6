"""The blog's numbers, recorded as measurements through the suite's own record and store code into a real
MLflow store, come back out of analysis/ cell for cell; Nano's INT8 is a marked cell with its reason; devices
line up."""
from __future__ import annotations

import io
import socket
import time

import pandas as pd
import pytest

from analysis import (Selection, aggregate, blog_table, build_report, cross_device_table, load_latencies, load_runs,
                      series)
from analysis.render import render, table_markdown, table_text
from analysis.report import main
from analysis.cells import sig
from analysis.choose import default_budget, recommend, recommendation_table
from bench.contract.errors import ConfigError
from bench.contract.records import Input
from bench.contract.protocol import FAILED, OK, SKIPPED
from bench.store.address import redact
from bench.store.tracking import Store
from synthetic import measurement, record_sweep, tracking

CLS = ["resnet18", "resnet34", "resnet50"]
SEG = ["fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101"]
# The seed blog's tables (Jetson Xavier, ms): classification at 256x256, segmentation at 512x512.
XAVIER_CLS = {"Raw": ["11", "12", "16"], "FP32": ["3.8", "5.6", "9.9"], "FP16": ["2.1", "3.3", "4.4"],
              "INT8": ["1.7", "2.7", "3.0"]}
XAVIER_SEG = {"Raw": ["200", "344", "281", "426"], "FP32": ["173", "290", "252", "366"],
              "FP16": ["36", "57", "130", "151"], "INT8": ["21", "32", "97", "108"]}
NANO_CLS = {"Raw": ["45", "80", "120"], "FP32": ["21", "36", "60"], "FP16": ["12", "20", "33"]}
NANO_INT8_REASON = "torch2trt int8 needs INT8 tensor cores (compute capability >= 6.1); Jetson Nano has 5.3"
# Third device: no eager fp32 run, so Raw comes from the in-run baseline of the other runs.
H100_RAW = [2.0, 3.1, 4.5]
H100 = {"fp32": [0.9, 1.3, 2.1], "fp16": [0.45, 0.6, 0.85], "int8": [0.35, 0.5, 0.62]}
BF16_ERROR = "RuntimeError: no bf16 kernel for this layer"

XAVIER = {"device.kind": "cuda", "device.name": "Xavier", "device.label": "Jetson Xavier NX", "device.cc": "7.2",
          "jetson.model": "Jetson Xavier NX", "cpu.model": "ARMv8 Processor rev 0 (v8l)", "host.name": "xavier-01"}
NANO = {"device.kind": "cuda", "device.name": "NVIDIA Tegra X1", "device.label": "Jetson Nano Developer Kit",
        "device.cc": "5.3", "jetson.model": "Jetson Nano Developer Kit", "cpu.model": "ARMv8 Processor rev 1 (v8l)",
        "host.name": "nano-01"}
H100_TAGS = {"device.kind": "cuda", "device.name": "NVIDIA H100 80GB HBM3", "device.label": "NVIDIA H100 80GB HBM3",
             "device.cc": "9.0", "cpu.model": "Intel(R) Xeon(R) Platinum 8480+", "host.name": "dgx-07"}
S256, S512 = "1x3x256x256", "1x3x512x512"


def point(device: dict, model: str, backend: str, precision: str, size: int, median: float | None = None,
          raw: float | None = None, status: str = OK, reason: str = "") -> dict:
    made = measurement(device, model, backend, precision, size, median, raw, status, reason)
    time.sleep(0.002)  # distinct start times: "newest" means something
    return made


@pytest.fixture(scope="module")
def seed_store(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("seed")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    xavier = []
    for models, size, blog in ((CLS, 256, XAVIER_CLS), (SEG, 512, XAVIER_SEG)):
        raws = [float(v) for v in blog["Raw"]]
        for model, raw in zip(models, raws):
            xavier.append(point(XAVIER, model, "pytorch", "fp32", size, raw))
        for precision in ("fp32", "fp16", "int8"):
            for model, raw, value in zip(models, raws, blog[precision.upper()]):
                if (model, precision) == ("resnet18", "fp16"):  # two older repeats: 2.5 and 2.3 ms
                    for older in (2.5, 2.3):
                        xavier.append(point(XAVIER, model, "torch2trt", precision, size, older, raw))
                xavier.append(point(XAVIER, model, "torch2trt", precision, size, float(value), raw))
    record_sweep(uri, "xavier", xavier)

    nano = []
    for model, raw, fp32, fp16 in zip(CLS, *NANO_CLS.values()):
        nano += [point(NANO, model, "pytorch", "fp32", 256, float(raw)),
                 point(NANO, model, "torch2trt", "fp32", 256, float(fp32), float(raw)),
                 point(NANO, model, "torch2trt", "fp16", 256, float(fp16), float(raw)),
                 point(NANO, model, "torch2trt", "int8", 256, status=SKIPPED, reason=NANO_INT8_REASON)]
    record_sweep(uri, "nano", nano)

    h100 = []
    for precision, values in H100.items():
        for model, raw, value in zip(CLS, H100_RAW, values):
            h100.append(point(H100_TAGS, model, "torch2trt", precision, 256, value, raw))
    h100.append(point(H100_TAGS, "resnet50", "torch2trt", "bf16", 256, status=FAILED, reason=BF16_ERROR))
    record_sweep(uri, "h100", h100)
    return uri


@pytest.fixture(scope="module")
def report(seed_store):
    return build_report(Selection(), seed_store)


def by_key(report, key: str):
    return next(t for t in report.tables if t.key == key)


def test_xavier_tables_reproduce_the_blog_cell_for_cell(report):
    for key, models, blog in (("latency_jetson-xavier-nx_256", CLS, XAVIER_CLS),
                              ("latency_jetson-xavier-nx_512", SEG, XAVIER_SEG)):
        table = by_key(report, key)
        assert list(table.cells.columns) == models
        assert list(table.cells.index) == list(blog)
        assert table.cells.to_dict("index") == {row: dict(zip(models, cells)) for row, cells in blog.items()}
        assert table.values.loc["INT8", models[-1]] == float(blog["INT8"][-1])
        assert "torch2trt" in table.title and "measured as a point of its own" in table.notes[0]
        markdown = table_markdown(table)
        for row, cells in blog.items():
            assert f"| {row} | {' | '.join(cells)} |" in markdown
    xavier_cls = by_key(report, "latency_jetson-xavier-nx_256")
    assert xavier_cls.title == ("Jetson Xavier NX: median end-to-end latency per call (ms), input 256x256 "
                                "(rows FP32, FP16, INT8: torch2trt)")


def test_nano_int8_is_a_marked_empty_cell_with_the_reason(report):
    table = by_key(report, "latency_jetson-nano-developer-kit_256")
    assert list(table.cells.loc["INT8"]) == ["— [1]"] * 3
    assert table.values.loc["INT8"].isna().all()
    assert f"[1] skipped: {NANO_INT8_REASON}" in table.notes
    assert list(table.cells.loc["FP16"]) == NANO_CLS["FP16"]
    text = table_text(table)
    assert f"[1] skipped: {NANO_INT8_REASON}" in text
    assert list(by_key(report, "speedup_jetson-nano-developer-kit_256").cells.loc["INT8"]) == ["— [1]"] * 3


def test_cross_device_table_puts_the_devices_side_by_side(report):
    table = by_key(report, "cross_latency_fp16_256")
    assert list(table.cells.index) == ["Jetson Nano Developer Kit", "Jetson Xavier NX", "NVIDIA H100 80GB HBM3"]
    assert table.cells.loc["Jetson Xavier NX"].tolist() == XAVIER_CLS["FP16"]
    assert table.cells.loc["Jetson Nano Developer Kit"].tolist() == NANO_CLS["FP16"]
    assert table.cells.loc["NVIDIA H100 80GB HBM3"].tolist() == ["0.45", "0.60", "0.85"]
    assert "backend torch2trt" in table.title
    int8 = by_key(report, "cross_latency_int8_256")
    assert int8.cells.loc["Jetson Nano Developer Kit"].tolist() == ["— [1]"] * 3
    assert int8.cells.loc["Jetson Xavier NX"].tolist() == XAVIER_CLS["INT8"]
    speedup = by_key(report, "cross_speedup_fp16_256")
    assert speedup.values.loc["Jetson Xavier NX", "resnet18"] == pytest.approx(11 / 2.1)
    assert speedup.values.loc["NVIDIA H100 80GB HBM3", "resnet50"] == pytest.approx(4.5 / 0.85)
    raw = by_key(report, "cross_latency_raw_256")
    assert raw.cells.loc["NVIDIA H100 80GB HBM3"].tolist() == ["2.0", "3.1", "4.5"]
    assert raw.notes[0].startswith("Raw: eager fp32 PyTorch, measured as a point of its own (backend=pytorch "
                                   "precision=fp32); for NVIDIA H100 80GB HBM3: eager fp32 as timed beside each "
                                   "variant")
    # Only Xavier measured segmentation: no cross-device table at 512.
    assert not [t for t in report.tables if t.key.startswith("cross_") and t.key.endswith("_512")]


def test_third_device_raw_row_comes_from_the_in_run_baseline_and_failures_are_footnoted(report):
    table = by_key(report, "latency_nvidia-h100-80gb-hbm3_256")
    assert list(table.cells.index) == ["Raw", "FP32", "FP16", "BF16", "INT8"]
    assert table.cells.loc["Raw"].tolist() == ["2.0", "3.1", "4.5"]
    assert table.cells.loc["BF16"].tolist() == ["", "", "— [1]"]  # blank: not run; marked: failed
    assert f"[1] failed: {BF16_ERROR}" in table.notes
    assert "no pytorch fp32 point was selected" in table.notes[0]


def test_speedup_accuracy_and_conversion_tables(report):
    speedup = by_key(report, "speedup_jetson-xavier-nx_512")
    assert speedup.values.loc["INT8", "fcn_resnet50"] == pytest.approx(200 / 21, rel=1e-3)  # recorded to 4 digits
    assert speedup.cells.loc["INT8", "fcn_resnet50"] == "9.52"
    accuracy = by_key(report, "accuracy_jetson-xavier-nx_512")
    assert list(accuracy.cells.columns) == ["median (ms)", "speed-up (×)", "rel. L2 error", "pixel agreement (%)"]
    assert accuracy.cells.loc[("deeplabv3_resnet101", "INT8")].tolist() == ["108", "3.94", "1.0e-03", "99.0"]
    assert "top-1 agreement (%)" in by_key(report, "accuracy_jetson-xavier-nx_256").cells.columns
    convert = by_key(report, "convert_jetson-xavier-nx_256")
    assert convert.values.loc["FP32", "resnet50"] == pytest.approx(19.9)
    assert "Raw" not in convert.cells.index


def test_repeats_newest_by_default_or_the_median(seed_store):
    runs = load_runs(Selection(devices=("xavier",), models=("resnet18",), precisions=("fp16",)), seed_store)
    assert len(runs) == 3
    assert aggregate(runs)["latency_ms_median"].tolist() == [2.1]
    median = aggregate(runs, "median")
    assert median["latency_ms_median"].tolist() == [2.3] and median["repeats"].tolist() == [3]
    history = series(runs, "Jetson Xavier NX", "resnet18", "torch2trt", "fp16", S256)
    assert history["latency_ms_median"].tolist() == [2.5, 2.3, 2.1]  # oldest first
    latencies = load_latencies(history["run_id"].iloc[-1], seed_store)
    assert latencies.tolist() == pytest.approx([2.1 * 0.97, 2.1, 2.1 * 1.05], rel=1e-5)


def test_filters_narrow_the_selection(seed_store):
    runs = load_runs(Selection(devices=("NANO",), precisions=("int8",)), seed_store)
    assert set(runs["device"]) == {"Jetson Nano Developer Kit"} and set(runs["status"]) == {SKIPPED}
    seg = load_runs(Selection(inputs=("512",), backends=("pytorch",)), seed_store)
    assert sorted(seg["model"]) == sorted(SEG)
    points = aggregate(load_runs(Selection(devices=("xavier-01",)), seed_store))
    assert blog_table(points, "Jetson Xavier NX", S256).cells.loc["FP16", "resnet18"] == "2.1"
    one_backend = cross_device_table(aggregate(load_runs(Selection(), seed_store)), "fp16", S256, backend="torch2trt")
    assert len(one_backend.cells) == 3


def test_formats(report):
    markdown, html, csv = report.render("markdown"), report.render("html"), report.render("csv")
    assert "| Raw | 11 | 12 | 16 |" in markdown and "— [1]" in markdown
    assert "<table" in html and "Jetson Xavier NX" in html and html.rstrip().endswith("</html>")
    text = report.render("text")
    assert "52 run(s) -> 50 point(s): 46 ok, 3 skipped, 1 failed; repeated points: newest run." in text
    csv_table = by_key(report, "latency_jetson-xavier-nx_256")
    frame = pd.read_csv(io.StringIO(render([csv_table], "csv")), skiprows=1, index_col=0)
    assert frame.loc["INT8", "resnet50"] == 3.0
    assert "Jetson Nano Developer Kit: median end-to-end latency" in csv and "#" not in csv
    # Aligned text: every body line of a table has the same width as its header.
    lines = table_text(csv_table).splitlines()
    assert len({len(line) for line in lines[2:7]}) == 1


def test_credentials_in_a_uri_are_never_shown():
    assert redact("https://ann:s3cret@mlflow.example:5000/x") == "https://***@mlflow.example:5000/x"
    assert redact("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_rounding_keeps_two_or_three_significant_figures():
    assert [sig(v) for v in (3.8, 3.0, 11.0, 200.0, 12.34, 0.1234, 1234.5, 9.996, 0.0)] == \
        ["3.8", "3.0", "11", "200", "12.3", "0.123", "1230", "10", "0"]


def test_report_folder_and_attach_need_one_sweep(seed_store, tmp_path):
    with pytest.raises(ConfigError, match="exactly one sweep"):
        build_report(Selection(), seed_store, attach_to_sweep=True)
    built = build_report(Selection(devices=("nano",)), seed_store, folder=tmp_path / "out")
    assert built.sweep_run_id is not None
    names = {p.name for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert {"report.txt", "report.md", "report.html", "latency_jetson-nano-developer-kit_256.csv",
            "latency_jetson-nano-developer-kit_256.png", "distribution_jetson-nano-developer-kit_256.png"} <= names


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--experiment", "nope"], "experiment 'nope' not found"),
    (["--model", "resnet181"], "no runs match model=resnet181 (the selection has model: "),
    (["--precision", "fp8"], "precision 'fp8' is not one of"),
    (["--since", "last tuesday"], "time 'last tuesday'"),
    (["--sweep", "0" * 32], "no such sweep"),
])
def test_bad_input_is_one_line_and_exit_2(seed_store, capsys, args, message):
    assert main(["--tracking-uri", seed_store, *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_unreachable_or_missing_store_is_one_line(tmp_path, capsys):
    for uri, message in ((f"http://127.0.0.1:{_closed_port()}", "cannot be reached"),
                         (f"sqlite:///{tmp_path / 'none.db'}", "no MLflow database"),
                         (f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}", "does not exist")):
        assert main(["--tracking-uri", uri]) == 2
        _, err = capsys.readouterr()
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "none.db").exists()


def test_empty_store_and_empty_time_range(seed_store, tmp_path, capsys):
    assert main(["--tracking-uri", seed_store, "--until", "2001-01-01"]) == 2
    assert "no grid-point runs in experiment 'trt-bench', until 2001-01-01" in capsys.readouterr().err
    Store(tracking(f"sqlite:///{tmp_path / 'empty.db'}"))  # the experiment, no runs
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}", "--latest"]) == 2
    assert "has no sweep" in capsys.readouterr().err


def test_energy_per_image_against_the_batch_size_with_its_source(tmp_path):
    """A throughput curve from a device with an energy counter (NVML on an H100, not here): one mJ-per-image cell
    per point, the counter named under the table; a curve measured without a source gets no energy table."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    made = []
    for backend, median in (("pytorch", 4.0), ("inductor", 0.5)):
        for batch, energy in ((1, 600.0 if backend == "pytorch" else 110.0), (8, 45.0)):
            point = measurement(H100_TAGS, "resnet50", backend, "bf16", 224, median=median * batch ** 0.5)
            point.plan = point.plan._replace(scenario="throughput", input=Input(224, 224, batch))
            point.metrics.update(energy_mj_per_image=energy, power_w_mean=300.0)
            point.details["energy.source"] = "nvml total energy: NVIDIA H100 80GB HBM3 (GPU 0)"
            made.append(point)
    record_sweep(uri, "energy", made)
    tables = {t.key: t for t in build_report(Selection(), uri=uri, plots=False).tables}
    energy = tables["energy_nvidia-h100-80gb-hbm3_resnet50_224x224"]
    assert energy.values.loc["BF16 (pytorch)"].tolist() == [600.0, 45.0]
    assert energy.values.loc["BF16 (inductor)"].tolist() == [110.0, 45.0]
    assert energy.notes[-1] == ("energy over each run's timed window from nvml total energy: "
                                "NVIDIA H100 80GB HBM3 (GPU 0)")


def test_every_table_has_a_header_on_every_column_aligned_like_its_cells(report):
    """Figures right-aligned under a right-aligned header, text left-aligned under a left-aligned one, in text and
    Markdown; no unnamed column in any table's CSV (the recommendation's had one)."""
    for table in report.tables:
        frame = table.cells.reset_index()
        assert all(str(name).strip() for name in frame.columns), (table.key, list(frame.columns))
        header = pd.read_csv(io.StringIO(render([table], "csv")), skiprows=1, nrows=0).columns
        assert not [name for name in header if name.startswith("Unnamed")], (table.key, list(header))
        lines = table_text(table).splitlines()
        head, body = lines[2], lines[3:3 + len(frame)]
        for column in frame.columns[table.cells.index.nlevels:]:
            cells = [str(c) for c in frame[column] if str(c)]
            start = head.index(str(column))
            figures = all(c[0].isdigit() or c.startswith("—") for c in cells)
            for line, cell in zip(body, frame[column]):
                if not str(cell):
                    continue
                if figures:  # right edges line up with the header's
                    assert line[:start + len(str(column))].endswith(str(cell)), (table.key, column, line)
                else:  # left edges line up with the header's
                    assert line[start:].startswith(str(cell)), (table.key, column, line)
        rule = table_markdown(table).splitlines()[3]
        assert rule.count("---:") + rule.count(":---") == len(frame.columns)


def test_recommend_without_a_budget_takes_the_datas_and_answers_even_when_every_point_is_unstable(seed_store):
    points = aggregate(load_runs(Selection(devices=("xavier",)), seed_store))
    budget = default_budget(points)
    assert budget.min_agreement == 0.99 and budget.max_top1_drop is None  # no labelled images in this store
    table = recommendation_table(recommend(points, budget), budget)
    assert table.notes[0].startswith("Budget (the default without labelled images")
    noisy = points.assign(unstable="its 3 processes' end-to-end latencies differ by 9.0%")
    answered = [choice for choice in recommend(noisy, budget) if choice.chosen is not None]
    assert answered and all(choice.unstable_taken for choice in answered)
    noisy_table = recommendation_table(answered, budget)
    verdicts = set(noisy_table.cells.index.get_level_values("verdict"))
    assert "recommended, unstable" in verdicts and verdicts <= {"recommended, unstable", "turned down"}
    assert any(note.startswith("recommended, unstable: no stable measurement") for note in noisy_table.notes)
