"""The SLURM backend: each worker is an ``srun`` job step inside the session's allocation."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from ..errors import MissingDependency
from ..options import CallOptions, check_int
from .addresses import is_loopback, reachable_address
from .base import Backend, Capacity, LaunchedWorker, Node, WorkerSpec, worker_environment

#: Inherited from salloc/sbatch, these would make every step take the whole allocation.
_INHERITED = re.compile(r"^SLURM_(NTASKS.*|NPROCS|NNODES|TASKS_PER_NODE|CPUS_PER_TASK|GPUS.*|"
                        r"GPU_.*|TRES_PER_TASK|MEM_PER.*|DISTRIBUTION|NTASKS_PER_.*|"
                        r"CPU_BIND.*|EXCLUSIVE|OVERCOMMIT|STEP_.*|SRUN_.*|EXACT|"
                        r"JOB_CPUS_PER_NODE_ALL)$")

#: The extras this backend understands: name -> (type, meaning).
EXTRAS: dict[str, tuple[type, str]] = {
    "nodes": (int, "nodes the step spreads over (--nodes)"),
    "ntasks_per_node": (int, "ranks per node (--ntasks-per-node)"),
    "exclusive": (bool, "the step's nodes run nothing else (--exclusive)"),
    "partition": (str, "partition (--partition); the allocation's by default"),
    "slurm_args": (list, "further srun arguments, as a list of strings"),
}


@dataclass(frozen=True)
class SlurmJob:
    """What SLURM granted the job the session runs in."""

    job_id: str
    nodes: int
    cpus: int
    gpus: int
    #: Memory the job holds as a consumable resource, in MiB (0: memory is not consumable).
    memory: int = 0
    #: Node by node, where ``scontrol show job -d`` says (CPUs, GPUs and memory differ).
    shape: tuple[Node, ...] = ()

    @property
    def memory_per_cpu(self) -> int:
        """A step's share of the job's memory per CPU, in MiB (0: none to share): the
        smallest node's share where nodes differ, so that every CPU can be used."""
        if not self.memory or not self.cpus:
            return 0
        shares = [node.memory // node.cpus for node in self.shape if node.memory and node.cpus]
        return min(shares) if shares else self.memory // self.cpus


def expand_hostlist(text: str) -> list[str]:
    """``n[1-3,7],gpu01`` -> ``['n1', 'n2', 'n3', 'n7', 'gpu01']`` (a pure function)."""
    names = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", text):
        if plain:
            names.append(plain)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            for number in range(int(low), int(high or low) + 1):
                names.append(f"{prefix}{number:0{len(low)}d}")
    return names


def _count_ids(text: str) -> int:
    """``0-3,8`` -> 5."""
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        if low.isdigit():
            count += int(high or low) - int(low) + 1
    return count


def parse_nodes(text: str) -> tuple[Node, ...]:
    """Each node's CPUs, GPUs and memory from the ``Nodes=... CPU_IDs=...`` lines of
    ``scontrol show job -d`` (a pure function); empty where there are none."""
    nodes = []
    for line in re.findall(r"^\s+Nodes=(\S+) (CPU_IDs=.*)$", text, re.MULTILINE):
        names, rest = line
        cpus = re.search(r"CPU_IDs=(\S+)", rest)
        memory = re.search(r"\bMem=(\d+)", rest)
        gpus = re.search(r"\bGRES=\S*?gpu(?::[^:(,\s]+)?:(\d+)", rest)
        for name in expand_hostlist(names):
            nodes.append(Node(name, _count_ids(cpus.group(1)) if cpus else 0,
                              tuple(range(int(gpus.group(1)))) if gpus else (),
                              int(memory.group(1)) if memory else 0))
    return tuple(nodes)


def read_allocation(job_id: str) -> SlurmJob:
    """Ask ``scontrol`` what job ``job_id`` holds; raises ``RuntimeError`` with its message."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-d", job_id], capture_output=True,
                             text=True, timeout=60)
    except FileNotFoundError:
        raise MissingDependency("the slurm backend needs SLURM's client commands "
                                "(scontrol, srun) on PATH") from None
    if out.returncode != 0:
        raise RuntimeError(f"scontrol show job {job_id} failed: {out.stderr.strip()}")
    return parse_allocation(job_id, out.stdout)


def parse_allocation(job_id: str, text: str) -> SlurmJob:
    """The allocation from ``scontrol show job -d`` output (a pure function)."""
    def field(name: str, default: str | None = None) -> str:
        match = re.search(rf"\b{name}=(\S+)", text)
        if match is None:
            if default is None:
                raise RuntimeError(f"scontrol shows no {name} for job {job_id}")
            return default
        return match.group(1)

    gres = re.search(r"\bJOB_GRES=\S*?gpu(?::[^:,\s]+)?:(\d+)", text)
    memory = re.search(r"\bTRES=\S*?\bmem=(\d+(?:\.\d+)?)([KMGT]?)", text)
    megabytes = 0
    if memory:
        scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[memory.group(2)]
        megabytes = int(float(memory.group(1)) * scale)
    return SlurmJob(job_id, int(field("NumNodes")), int(field("NumCPUs")),
                    int(gres.group(1)) if gres else 0, megabytes, parse_nodes(text))


class SrunWorker(LaunchedWorker):
    """An srun process: a kill first asks srun to end the step (SIGTERM, which srun forwards
    to its tasks), and only a second one kills srun itself."""

    def __init__(self, popen: subprocess.Popen[bytes], job_id: str,
                 nodes: Sequence[str] = ()) -> None:
        super().__init__(popen)
        self.job_id = job_id
        self.nodes = tuple(nodes)
        self._terminating = False

    def describe(self) -> dict[str, Any]:
        return {"pid": self.pid, "nodes": list(self.nodes)}

    def describe_exit(self, code: int | None) -> str:
        where = f" (its step on {', '.join(self.nodes)})" if self.nodes else ""
        return f"{super().describe_exit(code)}{where}"

    def held(self) -> str | None:
        """Whether SLURM holds this srun's step pending (``scontrol show step`` lists a step
        ``<job>.TDB`` with ``State=PENDING`` and this srun's host and pid)."""
        shown = show_steps(self.job_id)
        return pending_step(shown, socket.gethostname().split(".")[0], self.popen.pid) \
            if shown else None


#: The last ``scontrol show step`` of each job and when it was read: one answers for every
#: starting worker that asks within STEPS_FRESH seconds.
_STEPS: dict[str, tuple[float, str]] = {}
STEPS_FRESH = 0.5


def show_steps(job_id: str) -> str | None:
    """``scontrol show step <job>`` (at most STEPS_FRESH seconds old); None if it failed."""
    now = time.monotonic()
    last = _STEPS.get(job_id)
    if last is not None and now - last[0] < STEPS_FRESH:
        return last[1]
    try:
        shown = subprocess.run(["scontrol", "show", "step", job_id], capture_output=True,
                               text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    _STEPS[job_id] = (now, shown)
    return shown

    def signal(self, signum: int) -> None:
        if self.popen.returncode is not None:
            return
        if signum == signal.SIGKILL and not self._terminating:
            self._terminating = True
            signum = signal.SIGTERM
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass


class SlurmBackend(Backend):
    """Workers as ``srun`` steps with exactly their resources.

    Settings: ``job_id`` (default: ``SLURM_JOB_ID``), ``mpi`` (the ``srun --mpi`` plugin for
    MPI functions: ``"pmi2"`` for the mpich wheel, the default, or ``"pmix"`` for Open MPI),
    ``python`` (the workers' interpreter), ``srun`` (its path), ``interface`` (the address the
    session listens on; default: this node's first address that is not loopback) and
    ``max_cores`` (use fewer cores than the allocation has).
    """

    name = "slurm"

    def __init__(self, *, job_id: str | int | None = None, mpi: str = "pmi2",
                 python: str | None = None, srun: str = "srun", interface: str | None = None,
                 max_cores: int | None = None) -> None:
        job = str(job_id) if job_id is not None else os.environ.get("SLURM_JOB_ID")
        if not job:
            raise ValueError("the slurm backend runs inside a SLURM allocation: start the "
                             "script with salloc or sbatch, or pass job_id=")
        if mpi not in ("pmi2", "pmix", "pmi1", "none"):
            raise ValueError(f"mpi must be 'pmi2', 'pmix', 'pmi1' or 'none', got {mpi!r}")
        if max_cores is not None:
            check_int("max_cores", max_cores, 1)
        if shutil.which(srun) is None:
            raise MissingDependency(f"the slurm backend needs {srun!r} on PATH")
        self.job_id = job
        self.mpi = mpi
        self.python = python or sys.executable
        self.srun = srun
        self.job = read_allocation(job)
        if interface is not None and is_loopback(interface) and self.job.nodes > 1:
            raise ValueError(f"interface={interface!r} is a loopback address, which workers on "
                             f"the other {self.job.nodes - 1} nodes of job {job} cannot reach")
        self.interface = interface or reachable_address()
        self.max_cores = max_cores

    def describe(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "nodes": self.job.nodes,
                "cpus": self.job.cpus, "gpus": self.job.gpus}

    def capacity(self) -> Capacity:
        """The allocation node by node (``max_cores`` takes CPUs from the first nodes)."""
        cores = min(self.job.cpus, self.max_cores or self.job.cpus)
        nodes, left = [], cores
        for node in self.job.shape:
            if left:
                nodes.append(replace(node, cpus=min(node.cpus, left)))
                left -= nodes[-1].cpus
        return Capacity(cpus=cores, gpu_ids=tuple(range(self.job.gpus)), nodes=tuple(nodes),
                        memory_per_cpu=self.job.memory_per_cpu)

    def address(self, runtime_dir: str) -> str:
        return f"tcp://{self.interface}"

    def command(self, spec: WorkerSpec) -> list[str]:
        return srun_command(spec.options, job_id=self.job_id, mpi=self.mpi, srun=self.srun,
                            python=self.python, name=f"remotefn-{spec.worker_id}",
                            memory_per_cpu=self.job.memory_per_cpu, nodes=spec.nodes)

    def failed_nodes(self, stderr: str) -> list[str]:
        """srun says ``srun: error: Node failure on n2`` when a node of its step goes down."""
        return list(dict.fromkeys(re.findall(r"Node failure on (\S+)", stderr)))

    def check_extras(self, extras: Sequence[tuple[str, Any]]) -> None:
        for name, value in extras:
            if name not in EXTRAS:
                raise ValueError(f"unknown slurm extra {name!r}; valid: {', '.join(EXTRAS)}")
            kind = EXTRAS[name][0]
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)
                                or value < 1):
                raise ValueError(f"extras[{name!r}] must be an int >= 1, got {value!r}")
            if not isinstance(value, kind):
                raise TypeError(f"extras[{name!r}] must be {kind.__name__}, got {value!r}")
            if name == "slurm_args" and not (isinstance(value, list)
                                             and all(isinstance(a, str) for a in value)):
                raise TypeError(f"extras['slurm_args'] must be a list of str, got {value!r}")

    def check_options(self, options: CallOptions) -> None:
        if options.nested:
            raise ValueError("nested=True is supported by the flux and local backends, not "
                             "slurm; on SLURM, run `flux start` in the step")
        if options.cores > 1 and self.mpi == "none":
            raise ValueError(f"cores={options.cores} needs MPI, but the session has mpi='none'")

    def launch(self, spec: WorkerSpec) -> LaunchedWorker:
        # srun sets CUDA_VISIBLE_DEVICES itself, per task.
        spec = replace(spec, gpu_ids=())
        environment = sanitize(worker_environment(spec, os.environ))
        popen = subprocess.Popen(self.command(spec), env=environment, stdin=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, start_new_session=True)
        return SrunWorker(popen, self.job_id, spec.nodes)


def pending_step(shown: str, host: str, pid: int) -> str | None:
    """From ``scontrol show step`` output, why the step of srun ``pid`` on ``host`` waits, or
    None when it is not pending (a pure function)."""
    for block in shown.split("\n\n"):
        if re.search(rf"\bSrunHost:Pid={re.escape(host)}:{pid}\b", block) and \
                "State=PENDING" in block:
            step = re.search(r"StepId=(\S+)", block)
            return (f"SLURM holds step {step.group(1) if step else '?'} pending: the CPUs, GPUs "
                    "or memory it asks for are busy in the job (steps this session did not "
                    "start, or more than it counted)")
    return None


def sanitize(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` without the SLURM variables a step must not inherit."""
    return {k: v for k, v in environment.items() if not _INHERITED.match(k)}


def srun_command(options: CallOptions, *, job_id: str, mpi: str, srun: str, python: str,
                 name: str, memory_per_cpu: int = 0, nodes: Sequence[str] = ()) -> list[str]:
    """The srun command line of one worker (a pure function).

    The step holds exactly what the call asked for: no GPUs unless it asked for some (a step
    that names none would get all of the job's), and, where memory is consumable, its CPUs'
    share of the job's memory (one that names none would get all of it), unless
    ``slurm_args`` name the memory themselves (``--mem``, ``--mem-per-cpu`` or
    ``--mem-per-gpu``: srun takes only one of them). ``slurm_args`` come last. ``nodes``,
    where the session placed the worker, pins the step there.
    """
    extras = dict(options.extras)
    command = [srun, f"--jobid={job_id}", f"--job-name={name}", "--exact",
               f"--ntasks={options.cores}", f"--cpus-per-task={options.threads_per_core}",
               f"--mpi={mpi if options.cores > 1 else 'none'}", "--kill-on-bad-exit=1",
               "--quiet"]
    if nodes:
        command += [f"--nodes={len(nodes)}", f"--nodelist={','.join(nodes)}"]
    elif "nodes" in extras:
        command.append(f"--nodes={extras['nodes']}")
    else:
        command.append(f"--nodes=1-{options.cores}")
    if "ntasks_per_node" in extras:
        command.append(f"--ntasks-per-node={extras['ntasks_per_node']}")
    if options.gpus:
        command.append(f"--gpus-per-task={options.gpus}")
    else:
        command.append("--gres=none")
    slurm_args = extras.get("slurm_args", [])
    if memory_per_cpu and not any(_MEMORY_OPTION.match(arg) for arg in slurm_args):
        command.append(f"--mem-per-cpu={memory_per_cpu}M")
    if options.cwd:
        command.append(f"--chdir={options.cwd}")
    if extras.get("exclusive"):
        command.append("--exclusive")
    if "partition" in extras:
        command.append(f"--partition={extras['partition']}")
    command.extend(slurm_args)
    command.extend([python, "-m", "remotefn.worker"])
    return command


#: srun's memory options, of which a step may name one.
_MEMORY_OPTION = re.compile(r"--mem(-per-cpu|-per-gpu)?(=|$)")


BACKEND = SlurmBackend
