"""The `ci` profile end to end with the real snakemake, dvc, papermill and Paddle, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from tests.conftest import assert_nothing_lost, copy_project, run

pytestmark = pytest.mark.e2e
CONFIGURATIONS = [f"{a}-{t}" for a in ("alexnet", "resnet18") for t in ("none", "na-blog", "gate", "half")]
RUNS = [f"{c}-s{seed}" for c in CONFIGURATIONS for seed in (42, 43)]
FIGURES = 4  # learning curves, prediction grid, where each variant starts, attention diagnostics


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A fresh project copy on the ci profile, its default matrix (the gate control, two seeds) and
    the half control, after `snakemake --cores 4 all`: enough runs for every statistic and finding."""
    project = copy_project(tmp_path_factory.mktemp("e2e") / "project", profile="ci",
                           attentions="[none, na-blog, gate, half]")
    terminal = run(["snakemake", "--cores", "4", "all"], cwd=project)
    (project.parent / "terminal.txt").write_text(terminal.stdout + terminal.stderr)
    return project


def test_jobs_side_by_side_keep_their_progress_bars_in_their_logs(built):
    terminal = (built.parent / "terminal.txt").read_text()
    assert "batch/s" not in terminal and "it/s" not in terminal  # no tqdm bar reached the terminal
    for run_name in RUNS:  # one line per finished epoch per run; the live bar is in the run's log
        assert f"{run_name} epoch 1/1: lr " in terminal, run_name
        assert "batch/s" in (built / f"logs/ci/train/{run_name}.log").read_text(), run_name
    assert "type promotion" not in terminal  # Paddle's C++ warning: its cause is gone (models.channel_std)


def test_report_shows_every_configuration_beside_the_claim(built):
    page = (built / "reports/ci/index.html").read_text()
    assert "CI PROFILE: NOT THE PAPER" in page
    for experiment in CONFIGURATIONS:
        assert f"<td>{experiment}</td>" in page
    assert "0.7967" in page and "0.8458" in page  # the post's claimed val accuracies, labelled as the claim
    assert page.count('src="data:image/png;base64,') == FIGURES
    # one glance per claim at the top, then how to rebuild this very report
    glance = page[page.index("<h2>At a glance</h2>"):page.index("<h2>Reproduce this report</h2>")]
    assert glance.count("Claimed: ") == 2 and "+4.91 points (79.67% → 84.58%)" in glance and "Verdict: " in glance
    commit = run(["git", "rev-parse", "HEAD"], cwd=built).stdout.strip()
    assert f"git checkout {commit}" in page and "snakemake --cores 4 all\n" in page and "dvc repro" in page
    # throughput compares as a ratio between configurations, ours beside the post's (1629 / 1598)
    assert "img/s over the baseline's" in page and "1.02x" in page
    for section in ("Every variant: which module, at what price", "Where each variant starts",
                    "paired by seed", "detectable at 80% power", "seeds the claim needs"):
        assert section in page, section
    # Self-contained: nothing to fetch, so it opens offline.
    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:)?//|url\(|@import""", page)
    for name in ("learning_curves", "predictions", "comparison", "diagnostics"):
        assert f'href="notebooks/{name}.html"' in page
        assert (built / f"reports/ci/notebooks/{name}.html").exists()


def test_every_number_comes_from_artifacts(built):
    table = json.loads((built / "reports/ci/comparison.json").read_text())
    row = next(r for r in table["rows"] if r["experiment"] == "alexnet-na-blog")
    evaluation = json.loads((built / "runs/ci/eval/alexnet-na-blog-s42/metrics.json").read_text())
    other_seed = json.loads((built / "runs/ci/eval/alexnet-na-blog-s43/metrics.json").read_text())
    assert row["ours"]["val_acc"] == pytest.approx((evaluation["val_acc"] + other_seed["val_acc"]) / 2)
    assert f"{row['ours']['val_acc']:.4f}" in (built / "reports/ci/index.html").read_text()
    # where training started, from each run's own summary
    summaries = [json.loads((built / f"runs/ci/train/alexnet-na-blog-s{seed}/summary.json").read_text())
                 for seed in (42, 43)]
    start = next(r for r in table["initial_scale"] if r["experiment"] == "alexnet-na-blog")
    assert start["loss"] == pytest.approx(sum(s["initial"]["loss"] for s in summaries) / 2)
    variant = next(v for v in table["variants"] if (v["arch"], v["attention"]) == ("alexnet", "na-blog"))
    assert variant["params_added"] == 10 and variant["mean"] == pytest.approx(row["ours"]["val_acc"])


def test_provenance_lists_every_artifact_with_its_digest_commit_versions_and_wall_times(built):
    import hashlib

    from pipeline.hardware import paddle_setup

    paddle = paddle_setup.import_paddle()
    manifest = json.loads((built / "reports/ci/provenance.json").read_text())
    listed = {a["path"]: a for a in manifest["artifacts"]}
    for path, artifact in listed.items():
        with open(built / path, "rb") as f:
            assert artifact["sha256"] == hashlib.file_digest(f, "sha256").hexdigest(), path
        assert artifact["size"] == (built / path).stat().st_size, path
    assert "data/prepared/ci/alexnet.npz" in listed and "runs/ci/checkpoints/resnet18-gate-s43/best.pdparams" in listed
    assert all(f"runs/ci/eval/{r}/metrics.json" in listed and f"runs/ci/train/{r}/steps.csv" in listed for r in RUNS)
    assert "reports/ci/notebooks/comparison.ipynb" in listed and "reports/ci/figures/diagnostics.png" in listed
    assert not {"reports/ci/index.html", "reports/ci/provenance.json"} & set(listed)
    commit = run(["git", "rev-parse", "HEAD"], cwd=built).stdout.strip()
    assert manifest["git"] == {"commit": commit, "dirty": False}
    assert manifest["versions"]["paddle"]["version"] == paddle.__version__
    assert manifest["versions"]["paddle"]["commit"] == paddle.version.commit
    assert manifest["params"]["profile"] == "ci" and manifest["params"]["settings"]["epochs"] == 1
    assert manifest["devices"]["train"] == ["CPU (1 thread)"]
    wall_time = manifest["wall_time"]
    for stage, targets in (("data", ["alexnet", "resnet18"]), ("train", RUNS), ("evaluate", RUNS),
                           ("notebook", ["learning_curves", "predictions", "comparison", "diagnostics"])):
        seconds = wall_time[stage]["seconds"]
        assert sorted(seconds) == sorted(targets) and all(s > 0 for s in seconds.values()), (stage, seconds)
    page = (built / "reports/ci/index.html").read_text()
    assert "<h2>Appendix: provenance</h2>" in page and commit in page
    assert listed["runs/ci/checkpoints/resnet18-gate-s43/best.pdparams"]["sha256"][:16] in page


def test_statistics_and_findings_come_from_the_runs(built):
    table = json.loads((built / "reports/ci/comparison.json").read_text())
    gain = next(g for g in table["gains"] if g["arch"] == "alexnet" and g["attention"] == "na-blog")
    test = gain["test"]
    assert test["n_variant"] == test["n_baseline"] == 2 and test["ci_low"] <= test["diff"] <= test["ci_high"]
    assert 0 <= test["p_value"] <= 1
    assert gain["verdict"].startswith("not comparable")  # ci data is not CIFAR
    # every variant against each control: na-blog and half against the gate, na-blog and the gate against half
    assert {(g["arch"], g["attention"]) for g in table["gate_controls"]} == {
        (arch, variant) for arch in ("alexnet", "resnet18") for variant in ("na-blog", "half")}
    degeneracy = table["na_blog"]
    assert degeneracy["layers"] == 2 * (5 + 8) and degeneracy["g_spread_max"] < 1e-5
    assert {(g["arch"], g["attention"]) for g in table["half_controls"]} == {
        (arch, variant) for arch in ("alexnet", "resnet18") for variant in ("na-blog", "gate")}
    findings = " ".join(table["findings"])
    assert "ci profile" in findings and "na-blog against the scalar gate control" in findings
    assert "na-blog against half (y = 0.5 x, its value at initialisation)" in findings
    assert "with half" in findings and "No half control ran" not in findings
    assert f"{degeneracy['g_spread_max']:.1e}" in findings
    page = (built / "reports/ci/index.html").read_text()
    assert "<h2>Findings</h2>" in page and "95% CI" in page and "Welch" in page


def test_notebooks_were_executed_by_papermill_with_parameters(built):
    notebook = json.loads((built / "reports/ci/notebooks/comparison.ipynb").read_text())
    tags = [tag for cell in notebook["cells"] for tag in cell["metadata"].get("tags", [])]
    assert "parameters" in tags and "injected-parameters" in tags
    injected = next(c for c in notebook["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert "alexnet-na-blog-s42" in "".join(injected["source"])
    assert notebook["metadata"]["papermill"]["exception"] is None


def test_training_logged_what_the_post_logs(built):
    summary = json.loads((built / "runs/ci/train/resnet18-na-blog-s42/summary.json").read_text())
    assert summary["train_images"] == 256 and summary["val_images"] == 128
    assert summary["device"] == "CPU (1 thread)"  # the ci profile's train_threads, through Snakemake
    assert summary["amp"] == summary["precision"] == "fp32"
    header = (built / "runs/ci/train/resnet18-na-blog-s42/epochs.csv").read_text().splitlines()[0]
    assert header == "epoch,lr,train_loss,train_acc,val_loss,val_acc,seconds"
    for run_name in RUNS:
        assert {p.name for p in (built / "runs/ci/checkpoints" / run_name).iterdir()} - {".snakemake_timestamp"} == {
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


def test_snakemakes_own_report_holds_ours_the_figures_tables_and_curves(built, tmp_path):
    out = tmp_path / "snakemake-report.html"
    log = run(["snakemake", "--report", str(out)], cwd=built)
    added = log.stdout + log.stderr
    for name in ("index.html", "comparison.json", *(f"{n}.png" for n in
                                                    ("learning_curves", "predictions", "comparison", "diagnostics"))):
        assert f"Adding {name}" in added, name
    assert added.count("Adding epochs.csv") == len(RUNS)
    page = out.read_text()
    assert all(f'"{category}"' in page for category in ("Report", "Figures", "Tables", "Training runs"))


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
        driver.set_window_size(1280, 1000)
        driver.get((built / "reports/ci/index.html").as_uri())
        # at a laptop's width the page never scrolls sideways: wide tables scroll in their own box
        widths = driver.execute_script("return [document.documentElement.scrollWidth, "
                                       "document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], widths
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) == FIGURES and all(ok and w > 100 and h > 100 for ok, w, h in images)
        assert "NA" in driver.title
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()


def test_benchmark_runs_and_the_report_shows_it(built):
    """Last of the `built` tests: it rebuilds the report, which DVC then sees as changed."""
    out = run(["python", "-m", "pipeline", "bench", "--quick"], cwd=built).stdout
    result = json.loads((built / "reports/bench/bench.json").read_text())
    for key in ("eval_speedup", "data_speedup", "thread_speedup", "intra_op_speedup", "noop_seconds"):
        assert isinstance(result[key], float) and result[key] > 0, key
    from pipeline.models import ATTENTIONS

    assert set(result["na_overhead"]) == set(ATTENTIONS) - {"none"}  # every variant's cost, peers included
    assert len(result["training"]) == 4 * len(ATTENTIONS) and "| eval_speedup" in out
    assert result["host_device"]["val_seconds_prepared_once"] > 0 and "read back every step" in out
    run(["python", "-m", "pipeline.report"], cwd=built)
    page = (built / "reports/ci/index.html").read_text()
    assert "Appendix: benchmark" in page and f"<td>{result['eval_speedup']}x</td>" in page


def test_fresh_clone_dvc_repro_builds_the_report(tmp_path):
    project = copy_project(tmp_path / "clone", profile="ci", archs="[alexnet]", attentions="[none, na-blog]",
                           seeds="[42]")
    run(["dvc", "repro"], cwd=project)
    assert "CI PROFILE" in (project / "reports/ci/index.html").read_text()
    assert "up to date" in run(["dvc", "status"], cwd=project).stdout


@pytest.mark.faults
def test_paper_profile_offline_stops_at_the_fetch_with_a_clear_message(project):
    blocked = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    proc = run(["snakemake", "--cores", "2", "all", "--config", "profile=paper"], cwd=project, check=False,
               env=blocked)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "error: could not download cifar-10-python.tar.gz" in output
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in output and "data/raw" in output
    assert_nothing_lost(project / "data/prepared/paper", project / "runs")


def _start_and_kill(project, kill_snakemake: bool):
    """Start `snakemake all`, wait for the first saved epoch, SIGKILL the training job (or
    Snakemake with all its jobs, as a power loss would) in the middle of the next epoch."""
    import signal
    import subprocess
    import time

    from tests.conftest import command_env

    state = project / "runs/ci/resume/alexnet-none-s42/state.pdckpt"
    proc = subprocess.Popen(["snakemake", "--cores", "2", "all"], cwd=project, env=command_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    if kill_snakemake:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        # only in this Snakemake's session: another test may train the same run at the same time
        run(["pkill", "-KILL", "--session", str(proc.pid), "-f", "pipeline.train alexnet-none-s42"], cwd=project)
    proc.wait()
    assert proc.returncode != 0, "the pipeline finished before it could be killed"
    logs = project / "runs/ci/train/alexnet-none-s42"  # Snakemake may have made the (empty) folder
    assert_nothing_lost(project / "runs/ci/checkpoints/alexnet-none-s42", logs / "summary.json", logs / "epochs.csv",
                        logs / "steps.csv")


@pytest.mark.faults
@pytest.mark.parametrize("kill_snakemake, recover", [
    (False, [["snakemake", "--cores", "2", "all"]]),  # the job died (OOM killer, kill -9): a plain rerun
    (True, [["snakemake", "--unlock"], ["snakemake", "--cores", "2", "all", "--rerun-incomplete"]]),  # power loss
])
def test_a_killed_pipeline_resumes_training_on_rerun(tmp_path, kill_snakemake, recover):
    project = copy_project(tmp_path / "project", profile="ci", archs="[alexnet]", attentions="[none]", seeds="[42]",
                           epochs="3", train_subset="512", batch_size="16")
    _start_and_kill(project, kill_snakemake)
    outputs = [run(cmd, cwd=project) for cmd in recover]
    assert "resuming after epoch" in outputs[-1].stdout + outputs[-1].stderr
    summary = json.loads((project / "runs/ci/train/alexnet-none-s42/summary.json").read_text())
    epochs = (project / "runs/ci/train/alexnet-none-s42/epochs.csv").read_text().split()
    assert summary["epochs"] == 3 and len(epochs) == 4
    assert "up to date" in run(["dvc", "status"], cwd=project).stdout


# The first whole-file write of each stage kind, in pipeline order, and the final name it makes.
STAGE_WRITES = [
    ("data", "data/prepared/ci/alexnet.npz"),
    ("train", "runs/ci/checkpoints/alexnet-none-s42"),
    ("evaluate", "runs/ci/eval/alexnet-none-s42/predictions.npz"),
    ("notebook", "reports/ci/notebooks/learning_curves.ipynb"),
    ("report", "reports/ci/provenance.json"),  # then reports/index.html
]


@pytest.mark.faults
@pytest.mark.parametrize("power_loss", [False, True], ids=["job-killed", "power-loss"])
def test_every_stage_killed_mid_write_leaves_no_partial_output_and_recovers(tmp_path, power_loss):
    """SIGKILL each stage kind with its output written to a temp file but not yet renamed: the
    job alone (then a plain rerun), or Snakemake with all its jobs (then --unlock and
    --rerun-incomplete). Each rerun recovers the earlier stage and is killed at the next one."""
    from pipeline.core.atomic import KILL_BEFORE_RENAME

    project = copy_project(tmp_path / "project", profile="ci", archs="[alexnet]", attentions="[none]", seeds="[42]")
    rerun = ["snakemake", "--cores", "2", "all"] + (["--rerun-incomplete"] if power_loss else [])
    for stage, final_name in STAGE_WRITES:
        kill = f"{final_name}:group" if power_loss else final_name
        proc = run(rerun, cwd=project, check=False, env={KILL_BEFORE_RENAME: kill})
        assert proc.returncode != 0, f"the {stage} stage was not killed"
        assert_nothing_lost(project / final_name)
        if stage != "data":
            assert (project / "data/prepared/ci/alexnet.npz").exists(), "the rerun did not recover the data stage"
        if power_loss:
            run(["snakemake", "--unlock"], cwd=project)
    run(rerun, cwd=project)
    assert "CI PROFILE" in (project / "reports/ci/index.html").read_text()
    leftovers = [p for folder in ("data", "runs", "reports") for p in (project / folder).rglob("*.tmp*")]
    assert not leftovers, f"temp files left behind: {leftovers}"
    assert "up to date" in run(["dvc", "status"], cwd=project).stdout
