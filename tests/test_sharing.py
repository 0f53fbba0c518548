"""Sharing results through a DVC remote, as a user does it with the real dvc, git and snakemake:
push, a fresh clone's pull (nothing retrained), metrics, plots and experiments."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import copy_project, run

pytestmark = pytest.mark.e2e
RUNS = ["alexnet-none-s42", "alexnet-na-blog-s42"]
# The default remote of .dvc/config, under the HOME the tests give DVC.
DEFAULT_REMOTE = Path(".cache/na-repro/dvc-remote")


def git(project: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A ci-profile project (one arch, two attentions, one seed) built by `snakemake --cores 2 all`
    (which ends with `dvc commit`), with dvc.lock committed to git as a user does before pushing.
    DVC gets a HOME in the temp folder, so the default remote (~/.cache/...) lands there."""
    root = tmp_path_factory.mktemp("sharing")
    project = copy_project(root / "project", profile="ci", archs="[alexnet]", attentions="[none, na-blog]",
                           seeds="[42]")
    git(project, "config", "user.name", "t")
    git(project, "config", "user.email", "t@t")
    run(["snakemake", "--cores", "2", "all"], cwd=project)
    git(project, "add", "dvc.lock")
    git(project, "commit", "-qm", "results")
    home = root / "home"
    home.mkdir()
    return SimpleNamespace(project=project, root=root, home=home, env={"HOME": str(home)})


@pytest.fixture(scope="module")
def pushed(shared):
    """`shared`, its results pushed to the default remote (so each test that pulls can run alone)."""
    run(["dvc", "push"], cwd=shared.project, env=shared.env)
    return shared


def tracked(project: Path) -> dict[str, str]:
    """sha256 of every file of every output in dvc.lock (Snakemake's directory marker aside)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    digests = {}
    for out in {o["path"] for stage in lock["stages"].values() for o in stage.get("outs", [])}:
        path = project / out
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        for file in files:
            if file.name != ".snakemake_timestamp":
                digests[file.relative_to(project).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def test_the_default_remote_is_a_folder_in_the_users_cache(shared):
    listed = run(["dvc", "remote", "list"], cwd=shared.project, env=shared.env).stdout.split()
    assert listed == ["local-store", str(shared.home / DEFAULT_REMOTE), "(default)"]
    assert "url = ~/.cache/na-repro/dvc-remote" in (shared.project / ".dvc/config").read_text()


def test_push_then_pull_in_a_fresh_clone_restores_every_artifact_and_retrains_nothing(pushed):
    shared = pushed
    original = tracked(shared.project)
    for expected in ["data/prepared/ci/alexnet.npz", "reports/ci/index.html", "reports/ci/comparison.json"] + [
            f"runs/ci/{kind}/{r}/{name}" for r in RUNS for kind, name in (
                ("checkpoints", "best.pdparams"), ("checkpoints", "final.pdopt"), ("train", "summary.json"),
                ("train", "epochs.csv"), ("train", "steps.csv"), ("eval", "metrics.json"),
                ("eval", "predictions.npz"))]:
        assert expected in original

    assert any((shared.home / DEFAULT_REMOTE / "files").rglob("*"))

    clone = shared.root / "clone"
    run(["git", "clone", "-q", str(shared.project), str(clone)], cwd=shared.root)
    assert not any((clone / d).exists() for d in ("data", "runs", "reports"))
    pulled = run(["python", "-m", "pipeline", "pull"], cwd=clone, env=shared.env)
    assert "both engines have nothing to do" in pulled.stdout
    assert tracked(clone) == original
    assert "up to date" in run(["dvc", "status"], cwd=clone).stdout
    dry = run(["snakemake", "-n", "all"], cwd=clone)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    assert "missing provenance/metadata" not in dry.stdout + dry.stderr
    assert tracked(clone) == original  # touched, not rebuilt
    assert not (clone / "runs/ci/resume").exists()  # where a training job keeps its state: none started
    assert not [f for f in (clone / "logs").rglob("*") if f.is_file() and f.stat().st_size]
    assert "up to date" in run(["dvc", "status"], cwd=clone).stdout

    # ...and a parameter change still retrains, as in the project that built the results.
    params = clone / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace("\nepochs: null\n", "\nepochs: 2\n"))
    try:
        planned = run(["snakemake", "-n", "all"], cwd=clone).stdout
        assert planned.count("\nrule train:") == len(RUNS)
    finally:
        params.write_text(text)


@pytest.mark.faults
def test_pull_refuses_to_record_results_that_do_not_match_the_code(pushed):
    """A clone whose training code differs from what built the pushed results."""
    shared = pushed
    clone = shared.root / "stale-clone"
    run(["git", "clone", "-q", str(shared.project), str(clone)], cwd=shared.root)
    with open(clone / "pipeline/train.py", "a") as f:
        f.write("\n# changed\n")
    proc = run(["python", "-m", "pipeline", "pull"], cwd=clone, env=shared.env, check=False)
    last = proc.stderr.strip().splitlines()[-1]  # dvc pull's own output comes before it
    assert proc.returncode == 1 and last.startswith("error: DVC is not clean after the pull (")
    assert "train@ci-alexnet-none-42" in last and "nothing was recorded for Snakemake" in last
    assert not (clone / ".snakemake/metadata").exists()  # nothing recorded for Snakemake


def test_a_local_remote_replaces_the_default_without_editing_the_committed_config(shared, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    run(["dvc", "remote", "add", "-d", "--local", "mine", str(elsewhere)], cwd=shared.project)
    try:
        assert run(["dvc", "remote", "default"], cwd=shared.project).stdout.strip() == "mine"
        run(["dvc", "push"], cwd=shared.project)
        assert "in sync" in run(["dvc", "status", "--cloud"], cwd=shared.project).stdout
        assert any((elsewhere / "files").rglob("*"))
        assert git(shared.project, "status", "--porcelain") == ""  # .dvc/config.local is git-ignored
    finally:
        run(["dvc", "remote", "remove", "--local", "mine"], cwd=shared.project)
    assert run(["dvc", "remote", "default"], cwd=shared.project).stdout.strip() == "local-store"


def test_dvc_metrics_show_reads_every_run(shared):
    (workspace,) = json.loads(run(["dvc", "metrics", "show", "--json"], cwd=shared.project).stdout).values()
    metrics = workspace["data"]
    for r in RUNS:
        assert metrics[f"runs/ci/train/{r}/summary.json"]["data"]["epochs"] == 1
        assert 0 <= metrics[f"runs/ci/train/{r}/summary.json"]["data"]["best_val_acc"] <= 1
        assert 0 <= metrics[f"runs/ci/eval/{r}/metrics.json"]["data"]["val_acc"] <= 1


def test_dvc_plots_show_writes_every_runs_curves(shared, tmp_path):
    proc = run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], cwd=shared.project)
    assert "failed" not in (proc.stdout + proc.stderr).lower()
    page = (tmp_path / "plots/index.html").read_text()
    for r in RUNS:
        assert f'"{r} accuracy"' in page and f'"{r} loss"' in page


def test_exp_run_with_set_param_is_listed_by_exp_show(shared):
    """`dvc exp run -S` in a temporary copy of the workspace (--temp), so the other tests keep theirs."""
    run(["dvc", "exp", "run", "--temp", "-S", "profile=ci", "-S", "epochs=3", "-S", "attentions=[none]"],
        cwd=shared.project)
    experiments = _experiments(shared.project)
    assert any(p["epochs"] == 3 and p["attentions"] == ["none"] for p in experiments.values()), experiments


def _experiments(project: Path) -> dict[str, dict]:
    """name -> params.yaml of every experiment `dvc exp show` lists."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], cwd=project).stdout)
    return {rev["name"]: rev["data"]["params"]["params.yaml"]["data"]
            for baseline in shown for exp in baseline.get("experiments") or [] for rev in exp["revs"]}


def test_exp_run_after_editing_params_then_exp_show_and_metrics_diff(shared):
    """Last: it leaves the experiment's results in the workspace, as `dvc exp run` does."""
    params = shared.project / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace("\nepochs: null\n", "\nepochs: 2\n")
                      .replace("\nattentions: [none, na-blog]\n", "\nattentions: [none]\n"))
    run(["dvc", "exp", "run"], cwd=shared.project)

    experiments = _experiments(shared.project)
    assert any(p["epochs"] == 2 and p["attentions"] == ["none"] for p in experiments.values()), experiments
    changed = json.loads(run(["dvc", "params", "diff", "--json"], cwd=shared.project).stdout)["params.yaml"]
    assert changed["epochs"] == {"old": None, "new": 2}
    # The workspace (the experiment) against HEAD (the built project): two epochs now, twice the steps.
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], cwd=shared.project).stdout)
    summary = diff["runs/ci/train/alexnet-none-s42/summary.json"]
    assert summary["epochs"] == {"old": 1, "new": 2, "diff": 1}
    assert summary["steps"]["new"] == 2 * summary["steps"]["old"]
    table = run(["dvc", "metrics", "diff"], cwd=shared.project).stdout
    assert "runs/ci/train/alexnet-none-s42/summary.json" in table and "epochs" in table

    # Snakemake remembers the parameters it last trained with, so it would retrain what DVC just
    # built; the same command as after a clone tells it the outputs are current.
    assert "\nrule train:" in run(["snakemake", "-n", "all"], cwd=shared.project).stdout
    assert "up to date" in run(["dvc", "status"], cwd=shared.project).stdout
    run(["python", "-m", "pipeline", "pull"], cwd=shared.project, env=shared.env)
    dry = run(["snakemake", "-n", "all"], cwd=shared.project)
    assert "Nothing to be done" in dry.stdout + dry.stderr
