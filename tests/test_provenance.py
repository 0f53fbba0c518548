"""The provenance manifest's git state and versions, on throw-away git repositories."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.analysis import provenance
from tests.conftest import ROOT


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A committed project: code, params and the dvc.lock that DVC rewrites while it runs."""
    (tmp_path / "pipeline").mkdir()
    files = {"pipeline/train.py": "lr = 1e-3\n", "params.yaml": "epochs: 1\n", "dvc.lock": "schema: '2.0'\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "project")
    return tmp_path


def test_a_clean_checkout_gives_its_commit(repo):
    assert provenance.git_state(repo) == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}


@pytest.mark.parametrize("stage", [False, True], ids=["modified", "staged"])
def test_a_modified_tracked_file_makes_it_dirty(repo, stage):
    (repo / "pipeline/train.py").write_text("lr = 1e-2\n")
    if stage:
        git(repo, "add", "pipeline/train.py")
    assert provenance.git_state(repo)["dirty"] is True


def test_dvc_lock_and_untracked_files_do_not_count(repo):
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # as `dvc repro` leaves it mid-run
    (repo / "notes.txt").write_text("untracked\n")
    assert provenance.git_state(repo)["dirty"] is False


def test_a_project_in_a_subfolder_ignores_only_its_own_dvc_lock(repo):
    project = repo / "pipeline"
    (project / "dvc.lock").write_text("schema: '2.0'\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "nested project")
    (project / "dvc.lock").write_text("changed by dvc repro\n")
    assert provenance.git_state(project)["dirty"] is False
    (repo / "params.yaml").write_text("epochs: 2\n")  # outside the project folder, inside the commit
    assert provenance.git_state(project)["dirty"] is True


def test_outside_a_git_checkout_or_without_git_it_says_null(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # do not find a repo above tmp_path
    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None}


def test_versions_are_paddles_own_without_importing_it():
    check = ("import sys; from pipeline.analysis import provenance; provenance.versions(); "
             "print('paddle' in sys.modules)")
    imported = subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True, capture_output=True, text=True)
    assert imported.stdout.strip() == "False"  # it reads paddle/version/__init__.py alone
    versions = provenance.versions()
    from pipeline.hardware import paddle_setup

    paddle = paddle_setup.import_paddle()
    assert versions["paddle"]["version"] == paddle.__version__
    assert versions["paddle"]["commit"] == paddle.version.commit
    cuda = paddle.version.cuda() if paddle.is_compiled_with_cuda() else None  # a CPU build says "False"
    assert versions["paddle"]["cuda"] == cuda
    assert versions["python"] and versions["snakemake"] and versions["dvc"] and versions["papermill"]
