"""The test doubles of the agent-sandbox backend, driven by the real ``k8s-agent-sandbox`` client: the fake Kubernetes
API (tools/fakes/kube.py) creates, watches and deletes the CRDs' objects and readies a claim with a pod
IP; the stand-in pod (tools/fakes/standin_pod.py) serves the runtime's file REST API and gRPC ProcessService
and runs what it is given in bubblewrap. What the backend's own tests stand on must behave as the client expects."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from k8s_agent_sandbox import AsyncSandboxClient
from k8s_agent_sandbox.commands._process_stubs import process_pb2, process_pb2_grpc
from k8s_agent_sandbox.exceptions import SandboxWarmPoolNotFoundError
from k8s_agent_sandbox.models import SandboxdInClusterConnectionConfig
from kubernetes_asyncio.client import ApiClient, Configuration

from tests.support.agent_sandbox import NAMESPACE, FakeCluster, fake_cluster

pytestmark = [pytest.mark.asyncio, pytest.mark.store_free]  # the test doubles alone: no sidecar, no store
CLAIMS = ("extensions.agents.x-k8s.io", "sandboxclaims")
SANDBOXES = ("agents.x-k8s.io", "sandboxes")


def client_for(cluster: FakeCluster) -> AsyncSandboxClient[Any]:
    configuration = Configuration(host=cluster.api_url)
    return AsyncSandboxClient(
        connection_config=SandboxdInClusterConnectionConfig(mode="in-cluster-pod-ip",
                                                            rest_port=cluster.pods.rest_port,
                                                            grpc_port=cluster.pods.grpc_port),
        api_client=ApiClient(configuration), cleanup=False)


async def test_a_claim_becomes_a_ready_pod_whose_files_and_processes_the_client_reaches() -> None:
    async with fake_cluster() as cluster:
        client = client_for(cluster)
        try:
            sandbox = await client.create_sandbox("bridge-1g", namespace=NAMESPACE, sandbox_ready_timeout=10,
                                                  shutdown_after_seconds=60)
            assert cluster.kube.live(CLAIMS) == [sandbox.claim_name]
            assert cluster.kube.live(SANDBOXES) == [sandbox.sandbox_id]
            assert sandbox.files is not None and sandbox.commands is not None
            await sandbox.files.write("data/in/hello.txt", b"hello from the bridge")
            listing = await sandbox.files.list("data/in")
            assert [(entry.name, entry.size, entry.type) for entry in listing] == [("hello.txt", 21, "file")]
            ran = await sandbox.commands.run("cat in/hello.txt; echo; echo err >&2; id -u; exit 3", cwd="data")
            assert ran.stdout.splitlines()[0] == "hello from the bridge"
            assert ran.stdout.splitlines()[1] != "0"  # never the host's root
            assert (ran.stderr, ran.exit_code) == ("err\n", 3)
            await sandbox.commands.run("echo made > out.txt", cwd="data")
            assert await sandbox.files.read("data/out.txt") == b"made\n"
            assert await sandbox.files.exists("data/missing") is False  # paths are the runtime root's (/mnt)
            with pytest.raises(Exception, match="sandbox"):  # the runtime's 403: outside the sandbox's root
                await sandbox.files.read("data/../../../../etc/passwd")

            # the streamed process API: output as it comes, stdin written, a signal ends it
            stub = process_pb2_grpc.ProcessServiceStub(await sandbox.connector.grpc_channel())
            stream = stub.Start(process_pb2.StartRequest(config=process_pb2.ProcessConfig(
                command=["/bin/sh", "-c", "echo first; read line; echo got $line; sleep 60"], cwd="data")))
            events = stream.__aiter__()
            process_id = (await events.__anext__()).init.process_id
            assert (await events.__anext__()).stdout == b"first\n"  # before stdin was written: streamed
            await stub.WriteStdin(process_pb2.WriteStdinRequest(process_id=process_id, input=b"line\n"))
            assert (await events.__anext__()).stdout == b"got line\n"
            await stub.SendSignal(process_pb2.SendSignalRequest(process_id=process_id,
                                                                signal=process_pb2.SIGNAL_SIGKILL))
            last = await asyncio.wait_for(events.__anext__(), 10)
            assert last.WhichOneof("event") == "exit" and last.exit.exit_code == -1  # Go's ExitCode() for a signal

            await client.delete_sandbox(sandbox.claim_name, namespace=NAMESPACE)
            assert cluster.kube.live(CLAIMS) == [] and cluster.kube.live(SANDBOXES) == []
            assert not cluster.pods.started[0].root.exists()  # the pod and its files are gone with the claim
        finally:
            await client.close()
            await client.k8s_helper.injected_api_client.close()


async def test_a_missing_pool_is_the_clients_own_error_and_a_stalled_pool_times_out() -> None:
    async with fake_cluster() as cluster:
        client = client_for(cluster)
        try:
            with pytest.raises(SandboxWarmPoolNotFoundError):
                await client.create_sandbox("no-such-pool", namespace=NAMESPACE, sandbox_ready_timeout=5)
            cluster.kube.stalled.add("bridge-1g")
            with pytest.raises(TimeoutError):
                await client.create_sandbox("bridge-1g", namespace=NAMESPACE, sandbox_ready_timeout=1)
            assert cluster.kube.live(CLAIMS) == []  # the client rolled its claims back
        finally:
            await client.close()
            await client.k8s_helper.injected_api_client.close()


async def test_a_claim_past_its_shutdown_time_is_deleted_with_its_pod() -> None:
    async with fake_cluster() as cluster:
        client = client_for(cluster)
        try:
            # 3 s, not 1: on a loaded machine the pod was not always ready within 1 s, and the claim was deleted
            # (rightly) while the client still waited for it to be ready
            sandbox = await client.create_sandbox("bridge-1g", namespace=NAMESPACE, sandbox_ready_timeout=10,
                                                  shutdown_after_seconds=3)
            await sandbox.close_connection()  # the bridge "crashed": nobody deletes the claim
            for _ in range(150):
                if not cluster.kube.live(CLAIMS):
                    break
                await asyncio.sleep(0.1)
            assert cluster.kube.live(CLAIMS) == [] and cluster.kube.live(SANDBOXES) == []
        finally:
            await client.close()
            await client.k8s_helper.injected_api_client.close()


async def test_a_warm_pool_hands_out_pods_started_ahead_and_starts_the_next() -> None:
    async with fake_cluster(warm=2) as cluster:
        assert len(cluster.pods.started) == 2  # ready before any claim
        client = client_for(cluster)
        try:
            sandbox = await client.create_sandbox("bridge-1g", namespace=NAMESPACE, sandbox_ready_timeout=10)
            assert sandbox.commands is not None
            assert (await sandbox.commands.run("echo warm")).stdout == "warm\n"
            for _ in range(100):  # the pool refills behind the claim
                if len(cluster.pods.started) == 3:
                    break
                await asyncio.sleep(0.05)
            assert len(cluster.pods.started) == 3
            await client.delete_sandbox(sandbox.claim_name, namespace=NAMESPACE)
        finally:
            await client.close()
            await client.k8s_helper.injected_api_client.close()


async def test_the_benchmark_measures_each_backend_on_each_call() -> None:
    from tools.bench.sandbox.agent_sandbox import CALLS, measure, report

    results = await measure(1)
    assert set(results) == set(CALLS)
    for by_backend in results.values():
        assert set(by_backend) == {"bubblewrap", "pods, warm", "pods, cold"}
        assert by_backend["bubblewrap"][2] == 0 and by_backend["pods, warm"][2] > 0  # the claim, pods only
    assert "whole call" in report(results, 1)
