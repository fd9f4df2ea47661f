"""The flux backend's pure parts, without Flux: the jobspec builder and how a job's end is
described. Everything that needs a broker is in test_flux_real.py, which `make test` runs in
a real Flux instance."""

from __future__ import annotations

import os

import pytest

import remotefn
from remotefn import remote
from remotefn.backends.flux import FluxBackend, build_jobspec, describe_status
from remotefn.options import resolve


class Jobspec:
    """Records what build_jobspec asks of flux.job.JobspecV1."""

    def __init__(self, command, **arguments):
        self.command = command
        self.arguments = arguments
        self.shell_options = {}

    @classmethod
    def from_command(cls, command, num_tasks=1, cores_per_task=1, gpus_per_task=None,
                     num_nodes=None, exclusive=False):
        return cls(command, num_tasks=num_tasks, cores_per_task=cores_per_task,
                   gpus_per_task=gpus_per_task, num_nodes=num_nodes, exclusive=exclusive)

    def setattr_shell_option(self, name, value):
        self.shell_options[name] = value


def jobspec(**options):
    return build_jobspec(Jobspec, resolve(options), ["/py", "-m", "remotefn.worker"],
                         {"A": "1"}, "pmi2")


def test_jobspec_for_a_plain_call():
    spec = jobspec()
    assert spec.command == ["/py", "-m", "remotefn.worker"]
    assert spec.arguments == {"num_tasks": 1, "cores_per_task": 1, "gpus_per_task": None,
                              "num_nodes": None, "exclusive": False}
    assert spec.environment == {"A": "1"} and spec.cwd == os.getcwd()
    assert spec.shell_options == {}


@pytest.mark.parametrize("options, check", [
    ({"cores": 4}, lambda s: s.arguments["num_tasks"] == 4
        and s.shell_options == {"pmi": "pmi2", "exit-timeout": "2s"}),
    ({"threads_per_core": 3}, lambda s: s.arguments["cores_per_task"] == 3),
    ({"gpus": 2}, lambda s: s.arguments["gpus_per_task"] == 2),
    ({"cwd": "/scratch"}, lambda s: s.cwd == "/scratch"),
    ({"extras": {"nodes": 2}}, lambda s: s.arguments["num_nodes"] == 2),
    ({"extras": {"exclusive": True}}, lambda s: s.arguments["exclusive"]),
], ids=["cores", "threads", "gpus", "cwd", "nodes", "exclusive"])
def test_jobspec_for_each_option(options, check):
    assert check(jobspec(**options))


@pytest.mark.parametrize("status, text", [
    (0, "exit code 0"), (3, "exit code 3"),
    (137, "signal 9 (SIGKILL), exit status 137"), (143, "signal 15 (SIGTERM), exit status 143"),
])
def test_exit_status_of_a_job_names_signals(status, text):
    assert describe_status(status) == text


class Hosts:
    """What FluxBackend.address reads of resource_list(...).get(): the nodes' host names."""

    def __init__(self, *hosts):
        self.all = type("Set", (), {"nodelist": list(hosts)})()


def backend_on(interface, *hosts):
    backend = object.__new__(FluxBackend)  # no handle: address() only reads the resources
    backend.interface = interface
    backend.resources = lambda: Hosts(*hosts)
    return backend


@pytest.mark.parametrize("interface", ["127.0.0.1", "127.0.1.1", "::1", "localhost"])
def test_loopback_address_on_several_hosts_is_an_error(interface):
    with pytest.raises(ValueError, match="loopback address .*node1, node2"):
        backend_on(interface, "node1", "node2").address("/run")


@pytest.mark.parametrize("interface, hosts", [
    ("127.0.0.1", ("vm", "vm")), ("10.0.0.5", ("node1", "node2"))])
def test_address_workers_can_reach(interface, hosts):
    assert backend_on(interface, *hosts).address("/run") == f"tcp://{interface}"


# -- no Flux needed --------------------------------------------------------------------------


def test_local_nested_session_is_confined_to_the_workers_share():
    """What nesting promises, shown on the local backend (see docs/flux.md, Nesting)."""

    def inner_capacity():
        with remotefn.session() as inner:
            report = inner.resources()
        return report["backend"], report["cores"]["total"], report["gpus"]["total"]

    with remotefn.session("local", max_cores=4, gpu_ids=[0, 1, 2, 3], forward_output=False):
        handle = remote(inner_capacity, threads_per_core=2, gpus=2)
        assert handle().result(timeout=60) == ("local", 2, 2)
