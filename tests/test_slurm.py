"""The pipeline through a real SLURM controller (tests/helpers/slurm_cluster.py): the slurm profile end to end,
GPUs as SLURM allocates them, a training that SLURM ends and Snakemake retries.

What each job asked for is read back from the controller (`scontrol show job`); that every job ran
its command through a job step, from slurmd's log. The GPUs are character devices and Paddle
computes on the CPU (tests/helpers/simulated_gpu); everything else is the real scheduler.
"""

from __future__ import annotations

import collections
import csv
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, command_env, copy_project, layout, run
from tests.helpers import slurm_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SMALL_MATRIX = ("attentions=[none,na-blog]", "seeds=[42]")
# The executor plugin's options for this cluster: no accounting, so job states come from squeue
# (which MinJobAge keeps them in); a first status check after 1 s rather than 40.
STATUS_BY_SQUEUE = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
                    "--latency-wait", "5")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.missing()
    if reason:
        pytest.skip(reason)
    started = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    yield started
    slurm_cluster.stop(started)


def through_slurm(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run(["snakemake", "--profile", "profiles/slurm", *args, *STATUS_BY_SQUEUE], cwd=project, env=env,
               timeout=1200)


def jobs_of(cluster, project: Path) -> list[dict[str, str]]:
    """The controller's record of every job submitted from `project`, oldest first."""
    return sorted((j for j in cluster.jobs() if j["WorkDir"] == str(project)), key=lambda j: int(j["JobId"]))


def rule_of(job: dict) -> str:
    """The rule of a job, from the plugin's --comment (rule_train_wildcards_alexnet-none-s42)."""
    return job["Comment"].removeprefix("rule_").split("_wildcards_")[0]


def simulated_gpus(root: Path) -> tuple[dict, Path]:
    """The environment that makes jobs run the GPU path on the CPU (tests/helpers/simulated_gpu), and the
    file where each of them records the devices it was given."""
    log = root / "gpus.jsonl"
    log.touch()
    return {"PYTHONPATH": str(ROOT / "tests" / "helpers" / "simulated_gpu"), "SIMULATED_GPU_LOG": str(log),
            "NA_REPRO_GPU_LOCKS": str(root / "locks")}, log


def gpu_uses(log: Path) -> list[dict]:
    """One row per process that ran on a (simulated) GPU: its job, devices, start and end."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    ends = {r["pid"]: r["end"] for r in rows if "end" in r}
    return [{**r, "end": ends.get(r["pid"])} for r in rows if "start" in r]


# ---- The ci profile end to end -------------------------------------------------------------------

@pytest.fixture(scope="module")
def ci_on_slurm(cluster, tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("slurm-ci") / "project", profile="ci")
    started = time.monotonic()
    proc = through_slurm(project, "all", "--config", *SMALL_MATRIX)
    return project, proc, jobs_of(cluster, project), time.monotonic() - started


def test_every_job_but_the_login_node_rules_is_one_sbatch_job_run_through_its_job_step(cluster, ci_on_slurm):
    project, proc, jobs, seconds = ci_on_slurm
    print(f"ci profile through SLURM: {len(jobs)} jobs in {seconds:.0f} s")
    assert collections.Counter(rule_of(j) for j in jobs) == {
        "train": 4, "evaluate": 4, "notebook_learning_curves": 1, "notebook_predictions": 1,
        "notebook_comparison": 1, "notebook_diagnostics": 1, "report": 1}
    assert "localrule data:" in proc.stderr  # the download runs where snakemake does
    assert all(j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0" for j in jobs)
    steps = cluster.log("slurmd")
    assert all(f"launch task StepId={j['JobId']}.0 " in steps for j in jobs)
    assert (project / layout(project, *SMALL_MATRIX).report).is_file()


def test_nothing_is_left_in_the_queue(cluster, ci_on_slurm):
    _, _, jobs, _ = ci_on_slurm
    assert not set(cluster.queued()) & {j["JobId"] for j in jobs}


def test_each_job_holds_what_the_controller_was_asked_for(ci_on_slurm):
    """The ci profile's train_mem_mb (4000) and train_runtime_min (AlexNet 15, ResNet18 90 min),
    one CPU (train_threads 1, no loader workers), no GPU on this CPU run; evaluations 8000 MB
    (profiles/slurm), light jobs the profile's defaults."""
    _, _, jobs, _ = ci_on_slurm
    for job in jobs:
        rule, name = rule_of(job), job["Comment"]
        assert (job["NumTasks"], job["NumCPUs"], job.get("TresPerJob")) == ("1", "1", None), name
        if rule == "train":
            limit = "00:15:00" if "alexnet" in name else "01:30:00"
            assert (job["MinMemoryNode"], job["TimeLimit"]) == ("4000M", limit), name
        elif rule == "evaluate":
            assert (job["MinMemoryNode"], job["TimeLimit"]) == ("8000M", "00:30:00"), name
        else:
            assert (job["MinMemoryNode"], job["TimeLimit"]) == ("2000M", "00:30:00"), name


def test_trainings_and_evaluations_record_their_memory_and_cpu_time(ci_on_slurm):
    project, _, jobs, _ = ci_on_slurm
    where = layout(project, *SMALL_MATRIX)
    for job in jobs:
        if rule_of(job) in ("train", "evaluate"):
            run_name = job["Comment"].split("_wildcards_")[1]
            with open(project / where.benchmark(rule_of(job), run_name)) as f:
                (row,) = csv.DictReader(f, delimiter="\t")
            assert float(row["max_rss"]) > 100 and float(row["cpu_time"]) > 0, run_name


# ---- GPUs as SLURM allocates them -----------------------------------------------------------------

GPU_RUNS = ("device=gpu", "archs=[alexnet]", "attentions=[none,na-blog]", "seeds=[42]")


def test_each_gpu_job_runs_on_the_device_slurm_gave_it(cluster, tmp_path):
    """The slurm profile on GPUs: every training and evaluation is its own allocation of one GPU
    (gpu=1), and runs on that device, whichever SLURM picked."""
    project = copy_project(tmp_path / "project", profile="ci")
    env, log = simulated_gpus(tmp_path)
    through_slurm(project, "all", "--until", "evaluate", "--config", *GPU_RUNS, env=env)
    jobs = {j["JobId"]: j for j in jobs_of(cluster, project)}
    assert collections.Counter(rule_of(j) for j in jobs.values()) == {"train": 2, "evaluate": 2}
    uses = gpu_uses(log)
    assert sorted(u["job"] for u in uses) == sorted(jobs)  # one process per job set a GPU
    for use in uses:  # SLURM_STEP_GPUS: the device SLURM gave the job step, which it names as it pleases
        assert jobs[use["job"]]["TresPerJob"] == "gres:gpu:1"
        assert use["visible"] == use["slurm_gpus"] and len(use["visible"].split(",")) == 1, use


def test_a_job_given_two_gpus_takes_both(cluster, tmp_path):
    """A data-parallel training (devices_per_job 2) in `sbatch --gpus=2` claims the two devices of
    its allocation for its workers, before Paddle starts."""
    env, _ = simulated_gpus(tmp_path)
    claim = ("import os, sys; given = os.environ['SLURM_JOB_GPUS']; "
             "sys.argv = ['', 'alexnet-none-s42', '--set', 'profile=ci', '--set', 'device=gpu', "
             "'--set', 'devices_per_job=2']; "
             "from pipeline.hardware import job; job.prepare(training=True); "  # what the training stage does first
             "print(given, os.environ['CUDA_VISIBLE_DEVICES'])")
    out = tmp_path / "out.txt"
    submitted = run(["sbatch", "--parsable", "--wait", "--gpus=2", "--mem=1000", f"--output={out}",
                     f"--wrap=python -c \"{claim}\""], cwd=ROOT, env=env, timeout=300).stdout.strip()
    assert cluster.job(submitted)["TresPerJob"] == "gres:gpu:2"
    given, claimed = out.read_text().split()[-2:]
    assert claimed == given and len(given.split(",")) == 2


def test_two_jobs_inside_one_allocation_run_at_once_on_distinct_devices(cluster, tmp_path):
    """`snakemake --resources gpu=2` inside `sbatch --gpus=2`: SLURM sets CUDA_VISIBLE_DEVICES once for
    the allocation, and the two trainings that run at once split it (the bug of the second GPU
    reading: both ran on its first device)."""
    project = copy_project(tmp_path / "project", profile="ci")
    env, log = simulated_gpus(tmp_path)
    inner = f"snakemake all --cores 2 --resources gpu=2 --until train --config {' '.join(GPU_RUNS)}"
    submitted = run(["sbatch", "--parsable", "--wait", "--gpus=2", "--cpus-per-task=2", "--mem=8000",
                     f"--output={tmp_path / 'allocation.log'}", f"--wrap={inner}"], cwd=project, env=env,
                    timeout=600, check=False)
    assert submitted.returncode == 0, (tmp_path / "allocation.log").read_text()[-3000:]
    job = cluster.job(submitted.stdout.strip())
    first, second = gpu_uses(log)
    assert first["job"] == second["job"] == job["JobId"] and job["TresPerJob"] == "gres:gpu:2"
    assert first["start"] < second["end"] and second["start"] < first["end"], "the trainings never overlapped"
    given = first["slurm_gpus"].split(",")  # SLURM_JOB_GPUS: the allocation's two devices
    assert sorted([first["visible"], second["visible"]]) == sorted(given) and len(given) == 2


# ---- A training that SLURM ends -------------------------------------------------------------------

def test_a_training_ended_by_slurm_is_retried_with_a_longer_limit_and_resumes(cluster, tmp_path):
    """scancel in the second epoch, as a time limit or preemption would: SIGTERM reaches the
    training, which writes nothing under a final name; Snakemake resubmits it with twice the
    time limit, and the retry goes on after the first epoch."""
    project = copy_project(tmp_path / "project", profile="ci")
    config = ("archs=[alexnet]", "attentions=[none]", "seeds=[42]", "epochs=3", "train_subset=1024")
    name = "alexnet-none-s42"
    where = layout(project, *config)
    state = project / where.resume_dir(name) / "state.pdckpt"
    snakemake = subprocess.Popen(
        ["snakemake", "--profile", "profiles/slurm", "all", "--until", "train", "--config", *config, *STATUS_BY_SQUEUE],
        cwd=project, env=command_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not state.exists() and time.monotonic() < deadline and snakemake.poll() is None:
            time.sleep(0.2)
        assert state.exists(), "the first epoch never completed"
        (first,) = [j for j in jobs_of(cluster, project) if j["JobState"] == "RUNNING"]
        cluster.command("scancel", first["JobId"])
        output, _ = snakemake.communicate(timeout=600)
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
    assert snakemake.returncode == 0, output[-3000:]
    attempts = [j for j in jobs_of(cluster, project) if rule_of(j) == "train"]
    assert [(j["JobState"], j["TimeLimit"]) for j in attempts] == [("CANCELLED", "00:15:00"), ("COMPLETED", "00:30:00")]
    assert "stopped by SIGTERM" in Path(attempts[0]["StdOut"]).read_text()
    assert "resuming after epoch" in (project / where.log("train", name)).read_text()
    with open(project / where.train_epochs(name)) as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2", "3"]
    assert not [p for p in project.rglob(".*") if ".tmp" in p.name]  # no temp file left behind
