"""Rank layout over nodes and GPUs (local and Ray launchers), the Ray bundles, and the profile fields that
drive them (what exit codes mean: test_attempt_policy.py, shared with the other launchers)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from unigen.orchestrator.config.profile import Profile
from unigen.orchestrator.launchers.attempts import WorkerInfo, rank_layout
from unigen.orchestrator.launchers.ray.group import bundles


def worker(bundle, node, gpus=()):
    return WorkerInfo(bundle=bundle, node_id=node, node_ip=f"10.0.0.{ord(node[-1]) - 96}", hostname=f"host-{node}",
                      gpu_ids=tuple(gpus))


def test_ranks_are_grouped_by_node_with_local_ranks_and_rank0_rendezvous():
    # PACK may still interleave bundles over nodes; LOCAL_RANK must count 0.. per node.
    workers = [worker(0, "a"), worker(1, "b"), worker(2, "a"), worker(3, "b")]
    slots = rank_layout(workers, master_port=29411, gpus=False)
    assert [(s.rank, s.worker.bundle) for s in slots] == [(0, 0), (1, 2), (2, 1), (3, 3)]
    assert [s.env["LOCAL_RANK"] for s in slots] == ["0", "1", "0", "1"]
    assert [s.env["NODE_RANK"] for s in slots] == ["0", "0", "1", "1"]
    assert {s.env["MASTER_ADDR"] for s in slots} == {"10.0.0.1"}  # node a holds bundle 0
    assert {s.env["MASTER_PORT"] for s in slots} == {"29411"}
    assert {s.env["WORLD_SIZE"] for s in slots} == {"4"}
    assert all(s.env["CUDA_VISIBLE_DEVICES"] == "" for s in slots)  # CPU ranks never pick up a GPU


def test_gpu_ranks_see_their_nodes_gpus_and_local_rank_indexes_their_own():
    workers = [worker(0, "a", ["3"]), worker(1, "a", ["1"]), worker(2, "b", ["0"])]
    slots = rank_layout(workers, master_port=1, gpus=True)
    on_a = [s for s in slots if s.worker.node_id == "a"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in on_a] == ["3,1", "3,1"]
    for s in on_a:  # cuda:LOCAL_RANK is the GPU Ray gave this worker
        assert s.env["CUDA_VISIBLE_DEVICES"].split(",")[int(s.env["LOCAL_RANK"])] == s.worker.gpu_ids[0]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots if s.worker.node_id == "b"] == ["0"]


def test_gpu_layout_refuses_workers_without_a_gpu():
    with pytest.raises(ValueError, match=r"bundles \[1\] were given no GPU"):
        rank_layout([worker(0, "a", ["0"]), worker(1, "a")], master_port=1, gpus=True)


def test_bundles_leave_out_zero_resources():
    assert bundles(2, 1.0, 0) == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert bundles(1, 8, 1) == [{"CPU": 8, "GPU": 1}]


def test_profile_ray_fields_validate():
    p = Profile.model_validate({"name": "r", "launcher": "ray", "ray": {"workers": 2, "gpus_per_worker": 0,
                                                                      "placement_strategy": "SPREAD"}})
    assert (p.ray.workers, p.ray.placement_strategy, p.ray.cancel_grace_s, p.ray.python) == (2, "SPREAD", 300, "python")
    with pytest.raises(ValidationError, match="must be 1 \\(one rank per GPU\\) or 0"):
        Profile.model_validate({"name": "r", "launcher": "ray", "ray": {"gpus_per_worker": 0.5}})
    with pytest.raises(ValidationError, match="placement_strategy"):
        Profile.model_validate({"name": "r", "launcher": "ray", "ray": {"placement_strategy": "DENSE"}})
