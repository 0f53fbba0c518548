"""The `ci` profile end to end with the real snakemake, dvc, papermill and Paddle, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from pipeline import device
from tests.conftest import copy_project, run

pytestmark = pytest.mark.e2e
RUNS = ["alexnet-none-s42", "alexnet-na-blog-s42", "resnet18-none-s42", "resnet18-na-blog-s42"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A fresh project copy on the ci profile after `snakemake --cores 4 all`."""
    project = copy_project(tmp_path_factory.mktemp("e2e") / "project", profile="ci")
    run(["snakemake", "--cores", "4", "all"], cwd=project)
    return project


def test_report_shows_every_configuration_beside_the_claim(built):
    page = (built / "reports/index.html").read_text()
    assert "CI PROFILE: NOT THE PAPER" in page
    for experiment in ("alexnet-none", "alexnet-na-blog", "resnet18-none", "resnet18-na-blog"):
        assert f"<td>{experiment}</td>" in page
    assert "0.7967" in page and "0.8458" in page  # the post's claimed val accuracies, labelled as the claim
    assert page.count('src="data:image/png;base64,') == 2  # learning curves and prediction grid
    # Self-contained: nothing to fetch, so it opens offline.
    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:)?//|url\(|@import""", page)
    for name in ("learning_curves", "predictions", "comparison"):
        assert f'href="notebooks/{name}.html"' in page
        assert (built / f"reports/notebooks/{name}.html").exists()


def test_every_number_comes_from_artifacts(built):
    table = json.loads((built / "reports/comparison.json").read_text())
    row = next(r for r in table["rows"] if r["experiment"] == "alexnet-na-blog")
    evaluation = json.loads((built / "runs/eval/alexnet-na-blog-s42/metrics.json").read_text())
    assert row["ours"]["val_acc"] == evaluation["val_acc"]
    assert f"{evaluation['val_acc']:.4f}" in (built / "reports/index.html").read_text()


def test_notebooks_were_executed_by_papermill_with_parameters(built):
    notebook = json.loads((built / "reports/notebooks/comparison.ipynb").read_text())
    tags = [tag for cell in notebook["cells"] for tag in cell["metadata"].get("tags", [])]
    assert "parameters" in tags and "injected-parameters" in tags
    injected = next(c for c in notebook["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert "alexnet-na-blog-s42" in "".join(injected["source"])
    assert notebook["metadata"]["papermill"]["exception"] is None


def test_training_logged_what_the_post_logs(built):
    summary = json.loads((built / "runs/train/resnet18-na-blog-s42/summary.json").read_text())
    assert summary["train_images"] == 256 and summary["val_images"] == 128
    assert summary["device"] == f"CPU ({min(4, device.available_cores())} threads)"  # threads from Snakemake
    header = (built / "runs/train/resnet18-na-blog-s42/epochs.csv").read_text().splitlines()[0]
    assert header == "epoch,lr,train_loss,train_acc,val_loss,val_acc,seconds"
    for run_name in RUNS:
        assert {p.name for p in (built / "runs/checkpoints" / run_name).iterdir()} - {".snakemake_timestamp"} == {
            "best.pdparams", "best.pdopt", "final.pdparams", "final.pdopt"}


def test_outputs_are_recorded_in_dvc_and_nothing_reruns(built):
    assert "up to date" in run(["dvc", "status"], cwd=built).stdout
    again = run(["snakemake", "--cores", "4", "all"], cwd=built)
    assert "Nothing to be done" in again.stdout + again.stderr
    repro = run(["dvc", "repro"], cwd=built)
    assert "Running stage" not in repro.stdout and "didn't change" in repro.stdout
    assert "up to date" in run(["dvc", "status"], cwd=built).stdout


def test_dvc_metrics_and_plots_read_our_files(built):
    metrics = run(["dvc", "metrics", "show", "--json"], cwd=built).stdout
    assert "val_acc" in metrics and "best_val_acc" in metrics
    run(["dvc", "plots", "show", "--json"], cwd=built)


@pytest.mark.skipif(not shutil.which("chromedriver") and not os.environ.get("CI"),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_report_renders_in_headless_chromium(built):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get((built / "reports/index.html").as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) == 2 and all(ok and w > 100 and h > 100 for ok, w, h in images)
        assert "NA" in driver.title
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()


def test_fresh_clone_dvc_repro_builds_the_report(tmp_path):
    project = copy_project(tmp_path / "clone", profile="ci")
    run(["dvc", "repro"], cwd=project)
    assert "CI PROFILE" in (project / "reports/index.html").read_text()
    assert "up to date" in run(["dvc", "status"], cwd=project).stdout


def test_paper_profile_offline_stops_at_the_fetch_with_a_clear_message(project):
    blocked = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    proc = run(["snakemake", "--cores", "2", "all", "--config", "profile=paper"], cwd=project, check=False,
               env=blocked)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "error: could not download cifar-10-python.tar.gz" in output
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in output and "data/raw" in output
    assert not (project / "data/prepared").exists() and not (project / "runs").exists()
