"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd of Debian's `slurm-wlm`,
with four fake GPUs, all under one temporary folder and stopped by their pids.

Only the GPUs are simulated: each is a character device standing in for /dev/nvidiaN, which SLURM
allocates and names in CUDA_VISIBLE_DEVICES as on a real cluster. The node has this machine's real
CPUs and memory. Its configuration goes where SLURM looks by default, /etc/slurm: the executor
plugin's job step drops every SLURM_ variable but a few, SLURM_CONF among them, before it calls srun.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

GPUS = 4
CONF_DIR = Path("/etc/slurm")
MARK = "# na-repro's test cluster (tests/helpers/slurm_cluster.py): replaced and removed by its tests\n"
DAEMONS = ("munged", "slurmctld", "slurmd")
# Jobs leave the queue this long after ending: with no accounting, squeue is how the executor
# plugin (and the tests) learn a job's final state.
MIN_JOB_AGE_S = 3600
# Seconds between the SIGTERM that a time limit or scancel sends and the SIGKILL after it.
KILL_WAIT_S = 10


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [name for name in (*DAEMONS, "sbatch", "squeue", "scontrol") if not shutil.which(name, path=_path())]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} not found): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the SLURM daemons need root"
    conf = CONF_DIR / "slurm.conf"
    if conf.exists() and not conf.read_text().startswith(MARK):
        return f"{conf} configures a SLURM of this machine, which the test cluster will not replace"
    return None


def _path() -> str:
    return f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    pids: dict[str, int] = field(default_factory=dict)

    def command(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(args, env={**os.environ, "PATH": _path()}, capture_output=True, text=True, timeout=60)
        if check and proc.returncode:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as key -> value (the values SLURM holds, not what was asked)."""
        text = self.command("scontrol", "show", "job", "--oneliner", job_id)
        return dict(part.split("=", 1) for part in text.split() if "=" in part)

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller still knows (MinJobAge keeps ended ones)."""
        text = self.command("scontrol", "show", "job", "--oneliner")
        return [dict(p.split("=", 1) for p in line.split() if "=" in p)
                for line in text.splitlines() if "JobId=" in line]

    def queued(self) -> list[str]:
        """Jobs pending or running."""
        return self.command("squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING", "--format=%i").split()

    def log(self, daemon: str) -> str:
        path = self.root / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _config(root: Path, node: str, cpus: int, memory_mb: int, devices: list[Path]) -> str:
    return f"""\
ClusterName=na-repro-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root / 'munge.socket'}
CredType=cred/munge
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'slurmctld.log'}
SlurmdLogFile={root / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge={MIN_JOB_AGE_S}
KillWait={KILL_WAIT_S}
OverTimeLimit=0
InactiveLimit=0
SchedulerParameters=sched_interval=1
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{len(devices)} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def start(root: Path, timeout_s: float = 60) -> Cluster:
    """Start munged, slurmctld and slurmd under `root`; return once the node is idle."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    node = socket.gethostname().split(".")[0]
    devices = [Path(f"/dev/fakegpu{i}") for i in range(GPUS)]
    for dev in devices:
        if not dev.exists():  # a character device like /dev/null (1, 3): SLURM only needs it to exist
            os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))
    cpus = os.cpu_count() or 1
    memory_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20 - 1024
    CONF_DIR.mkdir(exist_ok=True)
    conf = CONF_DIR / "slurm.conf"
    conf.write_text(MARK + _config(root, node, cpus, memory_mb, devices))
    (CONF_DIR / "gres.conf").write_text(MARK + f"NodeName={node} Name=gpu File=/dev/fakegpu[0-{GPUS - 1}]\n")
    cluster = Cluster(root)
    key = root / "munge.key"
    subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, env={"PATH": _path()})
    commands = {
        "munged": ["munged", "--force", f"--key-file={key}", f"--socket={root / 'munge.socket'}",
                   f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
                   f"--seed-file={root / 'munged.seed'}"],
        "slurmctld": ["slurmctld", "-i", "-f", str(conf)],
        "slurmd": ["slurmd", "-f", str(conf)],
    }
    try:
        for daemon in DAEMONS:
            subprocess.run(commands[daemon], check=True, env={**os.environ, "PATH": _path()}, timeout=30,
                           capture_output=True)
            cluster.pids[daemon] = _read_pid(root / f"{daemon}.pid", timeout_s)
        _wait_idle(cluster, timeout_s)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def _read_pid(path: Path, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.1)
    raise RuntimeError(f"{path} never appeared")


def _wait_idle(cluster: Cluster, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = cluster.command("sinfo", "--noheader", "--format=%T", check=False).strip()
        if state == "idle":
            return
        time.sleep(0.5)
    raise RuntimeError(f"the node is {state or 'unknown'}, not idle, after {timeout_s} s;\n"
                       f"slurmctld.log:\n{cluster.log('slurmctld')[-2000:]}\nslurmd.log:\n{cluster.log('slurmd')[-2000:]}")


def stop(cluster: Cluster) -> None:
    """Cancel what is left, then stop the daemons this cluster started, by pid, in reverse order."""
    if "slurmctld" in cluster.pids:
        cluster.command("scancel", "--full", "--user=root", check=False)
    for daemon in reversed(DAEMONS):
        pid = cluster.pids.pop(daemon, None)
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    for name in ("slurm.conf", "gres.conf"):
        path = CONF_DIR / name
        if path.exists() and path.read_text().startswith(MARK):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a daemon that has exited but was not reaped yet lingers as a zombie
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
