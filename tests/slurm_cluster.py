"""A real single-node SLURM cluster for the tests: munged, slurmctld and slurmd on localhost, every file
under one folder, the daemons started in the background and stopped by PID.

The node advertises three GPUs (one for each study the SLURM test runs at once) whose "device files" are
empty files, so that SLURM schedules ``--gpus`` requests (a GPU job waits for a free GPU, and sees only its
own through CUDA_VISIBLE_DEVICES) on a machine without one, and a CPU more than the machine has: the
time-limit test's frozen job holds one without using it. Accounting is off, so jobs stay visible to
``squeue`` and ``scontrol`` for a day (MinJobAge) instead of going to ``sacct``.

The configuration is linked from SLURM's default path, /etc/slurm/slurm.conf, for as long as the cluster
runs: the SLURM plugin's job steps call ``srun`` with every SLURM_* variable but a few removed, SLURM_CONF
among them. A machine that has its own /etc/slurm/slurm.conf keeps it, and the cluster does not start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo")
NODE_GPUS = 3
NODE_CPUS = (os.cpu_count() or 1) + 1
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")


def missing_programs() -> list[str]:
    return [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _node_memory_mb() -> int:
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    return total_kb // 1024 - 1024


@dataclass
class SlurmCluster:
    root: Path
    partition: str
    # A name of its own: the jobs of this cluster are told apart by it from any other's on the machine.
    name: str = field(default_factory=lambda: f"peftcode-test-{uuid.uuid4().hex[:8]}")
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str) -> str:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=True).stdout

    def write_config(self) -> None:
        for folder in ("munge", "state", "spool", "log", "dev"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        user = (
            os.environ.get("USER")
            or subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        )
        self.conf.write_text(
            f"""ClusterName={self.name}
SlurmctldHost=localhost
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.root}/munge/munge.sock
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
GresTypes=gpu
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.log
MinJobAge=86400
ReturnToService=2
DefMemPerCPU=1000
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={_node_memory_mb()} \
Gres=gpu:{NODE_GPUS} State=UNKNOWN
PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )
        for index in range(NODE_GPUS):
            (self.root / "dev" / f"nvidia{index}").touch()
        (self.root / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName=localhost Name=gpu File={self.root}/dev/nvidia[0-{NODE_GPUS - 1}]\n"
        )

    def _start(self, *command: str) -> None:
        name = Path(command[0]).name
        log = open(self.root / "log" / f"{name}.out", "w")  # noqa: SIM115 (closed with the process)
        self.processes.append(
            subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def start(self, timeout_s: float = 60) -> None:
        try:
            self._start_daemons(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start_daemons(self, timeout_s: float) -> None:
        self.write_config()
        if DEFAULT_CONF.is_symlink() and not DEFAULT_CONF.exists():
            DEFAULT_CONF.unlink()  # left by a test cluster that did not stop, its folder since deleted
        if DEFAULT_CONF.exists():
            raise RuntimeError(
                f"{DEFAULT_CONF} exists: the test cluster will not replace this machine's SLURM"
            )
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(self.conf)
        munge = self.root / "munge"
        self._start(
            "munged", "--foreground", "--force", f"--socket={munge}/munge.sock",
            f"--key-file={munge}/munge.key", f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/seed",
            f"--log-file={munge}/munged.log",
        )  # fmt: skip
        self._wait(lambda: (munge / "munge.sock").exists(), timeout_s, "munged to open its socket")
        self._start("slurmctld", "-D", "-i")
        self._start("slurmd", "-D", "-N", "localhost")
        self._wait(self._node_idle, timeout_s, "the node to come up idle")

    def _node_idle(self) -> bool:
        try:
            return self.run("sinfo", "--noheader", "--format=%T").strip() == "idle"
        except subprocess.CalledProcessError:
            return False

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {path.name}\n{path.read_text()[-2000:]}"
                    for path in sorted((self.root / "log").iterdir())
                )
                raise RuntimeError(f"SLURM test cluster: gave up waiting for {what} (exited: {dead})\n{logs}")
            time.sleep(0.5)

    def _unfinished_jobs(self) -> list[str]:
        states = "PENDING,CONFIGURING,RUNNING,COMPLETING"
        try:
            return self.run("squeue", "--noheader", "--format=%i", f"--states={states}").split()
        except subprocess.CalledProcessError:
            return []  # no controller to ask: nothing it could still run

    def stop(self) -> None:
        """Cancel what still runs (its job steps would outlive slurmd), then stop the daemons."""
        if self.processes and all(process.poll() is None for process in self.processes):
            subprocess.run(["scancel", "--quiet", f"--partition={self.partition}"], env=self.env, check=False)
            try:
                self._wait(lambda: not self._unfinished_jobs(), 30, "cancelled jobs to end")
            except RuntimeError as error:
                print(error)
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if DEFAULT_CONF.is_symlink() and DEFAULT_CONF.readlink() == self.conf:
            DEFAULT_CONF.unlink()

    def job_processes(self, job: str) -> list[int]:
        """The processes of one of this cluster's running jobs: those whose environment names the job and the
        cluster (slurmstepd gives the batch script both, and what it starts inherits them)."""
        ours = {"SLURM_JOB_ID": job, "SLURM_CLUSTER_NAME": self.name}
        return [
            process.pid
            for process in psutil.process_iter(["environ"])  # None where not ours to read
            if ours.items() <= (process.info["environ"] or {}).items()
        ]

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller knows, finished ones included, as scontrol's key=value fields."""
        jobs = []
        for record in self.run("scontrol", "--oneliner", "show", "job").splitlines():
            if not record.strip() or record.startswith("No jobs"):
                continue
            fields = {}
            for token in record.split():
                key, _, value = token.partition("=")
                fields[key] = value
            jobs.append(fields)
        return jobs
