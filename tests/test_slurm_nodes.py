"""Allocations of several nodes: the address workers connect to, the allocation's shape."""

from __future__ import annotations

import ipaddress

import pytest

import remotefn
from remotefn import remote
from remotefn.backends.addresses import pick_address
from remotefn.testing import probe
from test_slurm import job, needs_cluster, node_of_rank  # noqa: F401 (job: a fixture)


@pytest.mark.parametrize("resolved, interfaces, expected", [
    (["10.1.2.3"], ["127.0.0.1", "10.1.2.3"], "10.1.2.3"),
    (["127.0.1.1"], ["127.0.0.1", "192.0.2.2"], "192.0.2.2"),  # Debian's /etc/hosts entry
    (["127.0.0.1", "10.0.0.7"], ["127.0.0.1"], "10.0.0.7"),
    ([], ["127.0.0.1", "172.16.0.4"], "172.16.0.4"),
])
def test_workers_connect_to_an_address_that_is_not_loopback(resolved, interfaces, expected):
    assert pick_address("node7", resolved, interfaces) == expected


def test_a_host_with_only_loopback_addresses_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"'node7' resolves only to loopback \(127\.0\.1\.1\)"):
        pick_address("node7", ["127.0.1.1"], ["127.0.0.1"])


@needs_cluster
def test_a_slurm_session_listens_on_an_address_other_nodes_reach(job):
    with remotefn.session("slurm", job_id=job, forward_output=False) as session:
        host = probe(session).address.split("://")[1].rsplit(":", 1)[0]
        assert not ipaddress.ip_address(host).is_loopback
        nodes = remote(node_of_rank, cores=3, extras={"nodes": 3})().result(timeout=60)
        assert sorted(nodes) == ["n1", "n2", "n3"]
