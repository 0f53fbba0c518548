"""Each job on GPUs runs on device ids no running job holds: real processes and real lock files,
with the visible devices simulated through CUDA_VISIBLE_DEVICES (no GPU here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, command_env

CLAIM = ("import sys, time; from pipeline.hardware import gpu_locks; ids = gpu_locks.claim(int(sys.argv[1]), 0.05); "
         "import os; print('claimed', os.environ['CUDA_VISIBLE_DEVICES'], flush=True); time.sleep(120)")


@pytest.fixture
def start(tmp_path):
    """start(count, **env) -> a running process that claims `count` GPUs of simulated devices."""
    started = []

    def _start(count: int, visible: str = "0,1,2,3", **env):
        proc = subprocess.Popen([sys.executable, "-c", CLAIM, str(count)], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=command_env({"CUDA_VISIBLE_DEVICES": visible,
                                                 "NA_REPRO_GPU_LOCKS": str(tmp_path / "locks"), **env}))
        started.append(proc)
        return proc

    yield _start
    for proc in started:
        proc.kill()
        proc.wait()


def claimed(proc, timeout: float = 30) -> list[str]:
    line = proc.stdout.readline()  # blocks until the claim (or a waiting note) is printed
    deadline = time.time() + timeout
    while not line.startswith("claimed") and time.time() < deadline:
        line = proc.stdout.readline()
    assert line.startswith("claimed"), line
    return line.split()[1].split(",")


def test_four_jobs_started_together_get_four_distinct_devices(start):
    jobs = [start(1) for _ in range(4)]
    ids = [claimed(j) for j in jobs]
    assert sorted(i for held in ids for i in held) == ["0", "1", "2", "3"]


def test_a_fifth_job_waits_and_gets_the_device_a_killed_job_frees(start):
    jobs = [start(1) for _ in range(4)]
    ids = {j: claimed(j)[0] for j in jobs}
    fifth = start(1)
    assert fifth.stdout.readline().startswith("waiting for 1 free GPU(s) of 0,1,2,3")
    victim = jobs[2]
    os.kill(victim.pid, signal.SIGKILL)  # a crash or kill -9: the kernel drops its lock
    victim.wait()
    assert claimed(fifth) == [ids[victim]]


def test_a_data_parallel_job_gets_two_devices_no_other_job_holds(start):
    singles = [claimed(start(1)) for _ in range(2)]
    pair = claimed(start(2))
    assert len(set(pair)) == 2 and not set(pair) & {i for held in singles for i in held}


def test_the_users_own_visible_devices_are_honoured(start):
    assert sorted(claimed(start(1, visible="5,7")) + claimed(start(1, visible="5,7"))) == ["5", "7"]


def test_jobs_inside_one_slurm_allocation_share_out_its_devices(start):
    """`snakemake --resources gpu=2` inside `sbatch --gpus=2`: SLURM sets CUDA_VISIBLE_DEVICES for the
    allocation once, and its two jobs must not both run on its first device."""
    jobs = [start(1, visible="0,1", SLURM_JOB_ID="42") for _ in range(2)]
    assert sorted(claimed(j)[0] for j in jobs) == ["0", "1"]
    third = start(1, visible="0,1", SLURM_JOB_ID="42")
    assert third.stdout.readline().startswith("waiting for 1 free GPU(s) of 0,1")


def test_separate_slurm_allocations_on_one_node_never_wait_for_each_other(start):
    """Each allocation numbers its devices from 0: two one-GPU jobs of the slurm profile both see "0"."""
    assert claimed(start(1, visible="0", SLURM_JOB_ID="42")) == ["0"]
    assert claimed(start(1, visible="0", SLURM_JOB_ID="43")) == ["0"]
    assert claimed(start(2, visible="0,1", SLURM_JOB_ID="44")) == ["0", "1"]  # a job takes all it was given


@pytest.mark.faults
def test_too_few_visible_devices_is_one_clear_line(tmp_path):
    proc = subprocess.run([sys.executable, "-c", CLAIM, "3"], cwd=ROOT, capture_output=True, text=True,
                          env=command_env({"CUDA_VISIBLE_DEVICES": "0,1", "NA_REPRO_GPU_LOCKS": str(tmp_path)}))
    assert proc.returncode == 1 and "this job needs 3 GPU(s) and 2 are visible (0,1)" in proc.stderr
