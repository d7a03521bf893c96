"""``search.run --backend ray --ray-address`` on a real multi-node Ray cluster (one machine), with a node lost.

Two Ray nodes of one CPU each (Ray's multi-node harness: separate raylets), one trial per node at a time.
The worker node is killed while its first trial trains, and a fresh node joins. Ray does not retry the
lost trial: it ends FAIL ``worker_died``, its parameters are queued again and run to completion on a node
of the cluster; trials complete on two distinct nodes (user attr ``ray_node``); the study reaches its
target with no finished trial lost or duplicated, and the driver exits by itself.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fault_helpers import (
    LocalRayCluster,
    load_study,
    start_search,
    summary,
    tail,
    training_trial_on,
    trial_processes,
    wait_until,
)
from optuna.trial import TrialState

from search.study.storage import is_finished

pytestmark = pytest.mark.slow

SPACE = """
stages:
  p3_backbone: {block: [C3k2, RepViT, OREPA, C3k2_RVB_SE], kernels: [[3], [3, 5], [3, 5, 7]]}
  p4_backbone: {block: [C3k2, RepViT, OREPA], kernels: [[3], [3, 5]]}
latency: {imgsz: 64, device: cpu}
train: {epochs: 2, imgsz: 64, batch: 4}
"""
TARGET = 3


def test_a_node_lost_mid_trial_is_rerun_and_trials_complete_on_two_nodes(tmp_path: Path, data: Path) -> None:
    pytest.importorskip("ray")
    url = f"sqlite:///{tmp_path / 'studies' / 'cluster.db'}"
    folder = tmp_path / "studies" / "cluster"
    with LocalRayCluster(nodes=2, cpus=1) as cluster:
        head, worker = cluster.node_ids
        proc, log = start_search(tmp_path, SPACE, "--data", str(data), "--trials", str(TARGET), "--study", "cluster",
                                 "--backend", "ray", "--workers", "2", "--ray-address", cluster.address, "--seed", "3")
        try:  # the first two trials run one per node, and both train (nothing is finished yet to reuse)
            victim = wait_until("a trial training on the worker node",
                                lambda: training_trial_on(load_study(url, "cluster"), folder, worker, "epoch 1/2"),
                                proc, log)
            cluster.remove(worker)
            fresh = cluster.add()
            rc = proc.wait(timeout=400)  # the driver notices the lost node and goes on without it
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc == 0, tail(log)
    study = load_study(url, "cluster")
    trials = study.trials
    info = summary(study)
    lost = trials[victim]
    assert lost.state == TrialState.FAIL and lost.user_attrs["fail_kind"] == "worker_died", info
    assert lost.user_attrs["ray_node"] == worker and not is_finished(lost)
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim]
    assert len(retries) == 1, info
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE and retry.params == lost.params, info
    assert retry.user_attrs["ray_node"] in (head, fresh) and retry.user_attrs["hash"] == lost.user_attrs["hash"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert {t.user_attrs["ray_node"] for t in complete} == {head, fresh}, info  # two nodes ran trials to the end
    assert sum(is_finished(t) for t in trials) == TARGET, info  # the target, not one more or less
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], info
    assert [t.number for t in trials] == list(range(len(trials)))
    trained = Counter(t.user_attrs["hash"] for t in complete if "reused_from" not in t.user_attrs)
    assert max(trained.values()) == 1, trained  # no architecture trained to the end twice
    assert trial_processes(folder) == []  # the lost node's trial process died with it
    assert "its worker died before reporting" in log.read_text()
