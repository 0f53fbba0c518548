"""The SLURM profile: a real dry run through Snakemake's slurm executor plugin (no SLURM needed),
checking what each job would ask the scheduler for."""

from __future__ import annotations

import re

import pytest

from tests.conftest import copy_project, run, snakemake_jobs


def resources(job: dict) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=([^,]+)", job["resources"]))


@pytest.fixture(scope="module")
def cluster_project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("cluster") / "project")


@pytest.fixture(scope="module")
def paper_on_slurm(cluster_project):
    return snakemake_jobs(cluster_project, "--profile", "profiles/slurm", "--config", "profile=paper")


def test_slurm_training_jobs_ask_for_one_gpu_memory_and_time_from_params(paper_on_slurm):
    train = {c.split()[4]: resources(j) for c, j in paper_on_slurm.items() if j["rule"] == "train"}
    assert len(train) == 8
    for run_name, r in train.items():
        assert r["gpu"] == "1" and r["mem_mb"] == "16000", run_name
        # train_runtime_min is per architecture in params.yaml.
        assert r["runtime"] == ("15" if run_name.startswith("alexnet") else "90"), run_name


def test_a_training_job_declares_its_process_and_loader_workers_and_splits_them(cluster_project):
    from pipeline import device

    # the paper profile: 4 loader workers beside the training process, train_threads 4
    jobs = snakemake_jobs(cluster_project, "--cores", "8", "--config", "profile=paper")
    assert {j["threads"] for j in jobs.values() if j["rule"] == "train"} == {5}
    assert device.training_threads(5, 1, 4) == 1  # its Paddle threads: what the workers leave
    assert device.training_threads(2, 1, 0) == 2 and device.training_threads(8, 2, 2) == 2
    assert device.training_threads(1, 1, 4) == 1


def test_slurm_light_jobs_stay_small(paper_on_slurm):
    for job in paper_on_slurm.values():
        r = resources(job)
        if job["rule"] in ("train", "evaluate"):
            assert r["gpu"] == "1"
            continue
        assert "gpu" not in r and r["mem_mb"] == "2000" and r["runtime"] == "30", job["rule"]


def test_slurm_resources_follow_the_params(cluster_project):
    """Change a value in params.yaml, not in the profile: the request follows."""
    jobs = snakemake_jobs(cluster_project, "--profile", "profiles/slurm", "--config", "profile=paper", "device=cpu")
    train = [resources(j) for j in jobs.values() if j["rule"] == "train"]
    assert all(r["gpu"] == "0" for r in train)  # a CPU run holds no GPU


def test_local_profile_runs_like_the_plain_command(cluster_project):
    proc = run(["snakemake", "--profile", "profiles/local", "-n", "all"], cwd=cluster_project)
    assert "Using profile profiles/local" in proc.stdout + proc.stderr
    assert len(re.findall(r"^rule train:", proc.stdout, re.M)) == 8
