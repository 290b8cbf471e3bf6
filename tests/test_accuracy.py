"""Accuracy on real photographs (scikit-image's), pretrained weights as torchvision users get them, and the
recommendation within an accuracy budget. Every accuracy number is recomputed here from the predictions the
run logged, independently of the suite's own arithmetic."""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import ROOT, SMALL, free_port, parents, points, run_cli

# ImageNet class index -> photographs of scikit-image's data folder that show one.
CLASSES = {"281": ["chelsea.png"],  # tabby cat
           "967": ["coffee.png"],  # espresso
           "670": ["motorcycle_left.png", "motorcycle_right.png"],  # motor scooter
           "744": ["rocket.jpg"],  # projectile, missile
           "892": ["clock_motion.png"],  # wall clock
           "409": ["astronaut.png", "hubble_deep_field.jpg", "retina.jpg", "coins.png", "moon.png", "camera.png"]}


def skimage_data() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """An ImageFolder of real photographs, class folders named by ImageNet class index."""
    root = tmp_path_factory.mktemp("photos")
    for label, files in CLASSES.items():
        (root / label).mkdir()
        for name in files:
            shutil.copy(skimage_data() / name, root / label / name)
    return root


def read_csv(client: MlflowClient, run_id: str, name: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(open(client.download_artifacts(run_id, name)).read())))


def test_accuracy_on_labelled_photographs_with_a_calibration_split(photos, tmp_path, cache_dir):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli("-m", *SMALL, "input.batch_size=2", "backend=pytorch,onnxruntime", "precision=fp32,int8",
                   "accuracy=folder", f"accuracy.folder={photos}", "calibration=folder",
                   f"calibration.folder={photos}", "calibration.num_batches=2", f"tracking.uri={store}",
                   f"cache_dir={cache_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    by_name = {r.info.run_name: r for r in points(store)}
    int8 = by_name["resnet18/int8/onnxruntime/64/b2"]
    m, tags = int8.data.metrics, int8.data.tags
    assert tags["accuracy.labelled"] == "true" and tags["accuracy.folder"] == str(photos)
    assert "labels from imagefolder (class index)" in tags["accuracy.inputs"]
    rows = read_csv(client, int8.info.run_id, "predictions.csv")
    assert len(rows) == m["acc_images"] and 0 < len(rows) < 13  # the accuracy part of the folder
    # Recomputed from the logged predictions: accuracy against the labels, and agreement with eager fp32 (the
    # metrics are recorded to 4 significant digits: 2/3 is 0.6667).
    assert m["acc_top1"] == pytest.approx(sum(r["converted_top1"] == r["label"] for r in rows) / len(rows), rel=1e-3)
    assert m["ref_top1"] == pytest.approx(sum(r["reference_top1"] == r["label"] for r in rows) / len(rows), rel=1e-3)
    assert m["acc_top5"] == pytest.approx(sum(r["label"] in r["converted_top5"].split() for r in rows) / len(rows),
                                          rel=1e-3)
    assert m["acc_top1_agreement"] == pytest.approx(
        sum(r["converted_top1"] == r["reference_top1"] for r in rows) / len(rows), rel=1e-3)
    assert {r["label"] for r in rows} <= set(CLASSES)
    # Calibration and accuracy never saw the same photograph; every precision judged on the same ones.
    calibrated = open(client.download_artifacts(int8.info.run_id, "calibration_images.txt")).read().split()
    assert calibrated and not set(calibrated) & {r["image"] for r in rows}
    fp32 = by_name["resnet18/fp32/onnxruntime/64/b2"]
    assert [r["image"] for r in read_csv(client, fp32.info.run_id, "predictions.csv")] == [r["image"] for r in rows]
    assert "shared with accuracy: its calibration part, disjoint" in tags["calibration.inputs"]
    # The sweep's report and the recommendation judge it on labelled data.
    (parent,) = parents(store)
    assert "Recommendation: the fastest variant within the accuracy budget" in parent.data.tags["mlflow.note.content"]
    report = subprocess.run([sys.executable, "-m", "analysis.report", "--tracking-uri", store, "--latest"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "top-1 vs fp32 (points)" in report.stdout and "labels from imagefolder" in report.stdout
    recommend = subprocess.run([sys.executable, "-m", "analysis.recommend", "--tracking-uri", store, "--latest",
                                "--max-top1-drop", "100", "--allow-unstable"], cwd=ROOT, capture_output=True,
                               text=True, timeout=300)
    assert recommend.returncode == 0, recommend.stderr
    fastest = min((r for r in by_name.values() if r.data.tags["bench.status"] == "ok"),
                  key=lambda r: r.data.metrics["latency_ms_median"])
    recommended = next(line for line in recommend.stdout.splitlines() if "recommended" in line)
    label = {"fp32": "FP32", "int8": "INT8"}[fastest.data.params["precision"]]
    assert f"{label} {fastest.data.params['backend']}" in recommended  # a budget of 100 points takes the fastest


def test_a_flat_folder_and_images_that_do_not_decode(tmp_path, cache_dir):
    """Unlabelled images give agreement only; a broken file is skipped with a count, all broken is one line."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        shutil.copy(skimage_data() / name, flat / name)
    (flat / "broken.jpg").write_bytes(b"not a jpeg at all")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(*SMALL, "backend=onnxruntime", "accuracy=folder", f"accuracy.folder={flat}",
                   f"tracking.uri={store}", f"cache_dir={cache_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = points(store)
    assert run.data.metrics["acc_images"] == 3 and "acc_top1" not in run.data.metrics
    assert "3 image(s), 1 skipped (did not decode), no labels" in run.data.tags["accuracy.inputs"]
    assert run.data.tags["accuracy.labelled"] == "false"

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"no")
    (broken / "b.png").write_bytes(b"neither")
    proc = run_cli(*SMALL, "accuracy=folder", f"accuracy.folder={broken}", cwd=tmp_path / "broken")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: accuracy.folder {str(broken)!r}: none of its 2 image " \
                                                   "file(s) decodes"


@pytest.mark.parametrize("layout, message", [
    ({}, "has no images"),
    ({"cats": ["chelsea.png"]}, "class folder 'cats' is not a known label (name class folders by ImageNet class "
                                "index"),
    ({"1234": ["chelsea.png"]}, "class folder '1234' is not one of ImageNet's 1000 classes"),
    ({"n02123045": ["chelsea.png"], "n99999999": ["coffee.png"]},
     "class folder 'n99999999' is not one of ImageNet's 1000 classes (it looks like a wnid, but is not in "
     "ILSVRC-2012's 1000 wnids)"),
])
def test_a_folder_that_cannot_be_labelled_is_one_line_before_any_work(layout, message, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for label, files in layout.items():
        (folder / label).mkdir()
        for name in files:
            shutil.copy(skimage_data() / name, folder / label / name)
    proc = run_cli(*SMALL, "accuracy=folder", f"accuracy.folder={folder}", cwd=tmp_path)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: accuracy.folder") and message in last, proc.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists()


def test_wnid_folders_take_their_class_order_from_the_synset_file(tmp_path):
    """ImageNet's LOC_synset_mapping.txt lists the wnids in class-index order; a stand-in file with that layout."""
    from bench.device import images

    folder = tmp_path / "wnids"
    for wnid in ("n02123045", "n07920052"):
        (folder / wnid).mkdir(parents=True)
        shutil.copy(skimage_data() / "chelsea.png", folder / wnid / f"{wnid}.png")
    order = [f"n{index:08d}" for index in range(1000)]
    order[281], order[967] = "n02123045", "n07920052"
    (folder / "LOC_synset_mapping.txt").write_text("".join(f"{wnid} class {i}\n" for i, wnid in enumerate(order)))
    found = images.scan(str(folder), "accuracy.folder")
    assert found.labels == [281, 967] and found.layout == "imagefolder (wnid, order from LOC_synset_mapping.txt)"


def test_the_shipped_class_order_is_ilsvrc_2012s_sorted_wnids():
    from bench.device.imagenet_wnids import WNIDS

    assert len(WNIDS) == len(set(WNIDS)) == 1000 and list(WNIDS) == sorted(WNIDS)
    assert all(len(wnid) == 9 and wnid[0] == "n" and wnid[1:].isdigit() for wnid in WNIDS)
    assert (WNIDS[0], WNIDS[281], WNIDS[999]) == ("n01440764", "n02123045", "n15075141")  # tench, tabby, tissue


def test_wnid_folders_without_a_synset_file_measure_against_ilsvrc_2012s_order(tmp_path, cache_dir):
    """Real photographs under wnid folders, no synset file: labelled by the shipped order, measured end to end."""
    from PIL import Image

    from bench.device import images

    wnids = {"n02123045": ("chelsea.png", 281), "n07920052": ("coffee.png", 967),
             "n03791053": ("motorcycle_left.png", 670), "n04008634": ("rocket.jpg", 744)}
    folder = tmp_path / "wnids"
    for wnid, (name, _) in wnids.items():
        (folder / wnid).mkdir(parents=True)
        with Image.open(skimage_data() / name) as photo:
            photo.convert("RGB").save(folder / wnid / f"{Path(name).stem}.jpg", quality=90)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(*SMALL, "backend=pytorch", "input.batch_size=2", "accuracy=folder", f"accuracy.folder={folder}",
                   f"tracking.uri={store}", f"cache_dir={cache_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = points(store)
    m, tags = run.data.metrics, run.data.tags
    assert tags["bench.status"] == "ok" and tags["accuracy.labelled"] == "true"
    assert "labels from imagefolder (wnid, order from ILSVRC-2012's 1000 wnids)" in tags["accuracy.inputs"]
    rows = read_csv(MlflowClient(store), run.info.run_id, "predictions.csv")
    expected = {f"{wnid}/{Path(name).stem}.jpg": str(index) for wnid, (name, index) in wnids.items()}
    assert {Path(r["image"]).parent.name + "/" + Path(r["image"]).name: r["label"] for r in rows} == expected
    assert m["acc_images"] == 4
    assert m["acc_top1"] == pytest.approx(sum(r["converted_top1"] == r["label"] for r in rows) / len(rows), rel=1e-3)
    assert m["ref_top1"] == pytest.approx(sum(r["reference_top1"] == r["label"] for r in rows) / len(rows), rel=1e-3)
    # A synset file in the folder still gives the order.
    order = sorted(wnids) + [f"n{i:08d}" for i in range(996)]
    (folder / "LOC_synset_mapping.txt").write_text("".join(f"{wnid} class\n" for wnid in order))
    found = images.scan(str(folder), "accuracy.folder")
    assert sorted(set(found.labels)) == [0, 1, 2, 3] and "order from LOC_synset_mapping.txt" in found.layout


def test_pretrained_weights_come_from_the_torch_cache_and_offline_the_error_names_the_file(tmp_path, cache_dir):
    """No weights can be downloaded here: a state dict saved where torchvision keeps resnet18's stands for them,
    and with an empty cache the download fails (every connection refused) with one line naming file and folder."""
    import torchvision

    cache = tmp_path / "torch-home"
    checkpoints = cache / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    torch.save(torchvision.models.resnet18().state_dict(), checkpoints / os.path.basename(url))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    offline = {"TORCH_HOME": str(cache), "https_proxy": f"http://127.0.0.1:{free_port()}",
               "HTTPS_PROXY": f"http://127.0.0.1:{free_port()}"}
    proc = run_cli(*SMALL, "backend=pytorch", "model.weights=pretrained", f"tracking.uri={store}",
                   f"cache_dir={cache_dir}", cwd=tmp_path, env=offline)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = points(store)
    assert run.data.params["model.weights"] == "pretrained" and run.data.tags["bench.status"] == "ok"

    empty = tmp_path / "empty-torch-home"
    proc = run_cli(*SMALL, "model.weights=pretrained", cwd=tmp_path, env={**offline, "TORCH_HOME": str(empty)})
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    expected = empty / "hub" / "checkpoints" / os.path.basename(url)
    assert last.startswith("error: model.weights=pretrained: resnet18's weights are not in the torch cache and "
                           "could not be downloaded") and f"copy it to {expected}" in last, proc.stderr[-2000:]
    assert url in last


def test_a_top1_budget_needs_labelled_runs(small_sweep):
    proc = subprocess.run([sys.executable, "-m", "analysis.recommend", "--tracking-uri", small_sweep.store, "--latest",
                           "--max-top1-drop", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no selected run was measured on labelled images") and \
        proc.stderr.count("\n") == 1
    agreement = subprocess.run([sys.executable, "-m", "analysis.recommend", "--tracking-uri", small_sweep.store,
                                "--latest", "--min-agreement", "0.5", "--allow-unstable"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert agreement.returncode == 0 and "(noise inputs)" in agreement.stdout
