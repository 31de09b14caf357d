"""A search on a two-node Ray cluster (``--address``), trials on both nodes, resume
through the same storage. Uses ``ray.cluster_utils.Cluster`` (two 1-CPU nodes on this host)."""

from __future__ import annotations

import pytest

from tests.helpers import write_space
from vpr_tune.analysis import read_table


@pytest.mark.slow
def test_two_node_cluster_search_and_resume(tmp_path, fake_trainer, street_world_tiny, capsys):
    import ray
    from ray.cluster_utils import Cluster

    from vpr_tune.cli import main

    logs = tmp_path / "logs"
    logs.mkdir()
    # data.root doubles as the fake trainer's log folder; --data points at the real data
    space = write_space(tmp_path / "cluster.yaml", data={"root": str(logs), "cache": False},
                        optimizer={"lr": {"uniform": [0.1, 0.9]}},
                        search={"num_samples": 4, "max_concurrent": 2})
    storage = tmp_path / "shared"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        args = ["run", str(space), "--data", str(street_world_tiny), "--name", "c",
                "--storage", str(storage), "--address", cluster.address]
        rc = main(args)
        assert rc == 0, capsys.readouterr()
        trials = read_table(storage / "c" / "trials.csv")
        assert len(trials) == 4 and (trials["status"] == "TERMINATED").all()
        assert trials["node_id"].nunique() == 2  # both nodes ran trials
        assert not ray.is_initialized()  # run disconnected from the cluster it joined ...
        ray.init(address=cluster.address, log_to_driver=False)  # ... and left it running
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert set(trials["node_id"]) == alive and len(alive) == 2
        runs = len(list(logs.glob("*.json")))
        ray.shutdown()

        # resume through the same storage: finished trials are kept, not re-run
        assert main([*args, "--resume"]) == 0
        again = read_table(storage / "c" / "trials.csv")
        assert sorted(again["trial_id"]) == sorted(trials["trial_id"])
        assert len(list(logs.glob("*.json"))) == runs
    finally:
        ray.shutdown()
        cluster.shutdown()


# Long enough (1.5 s an epoch) that the trial is far from done when Ray notices the node is
# gone (its health checks take seconds): else its worker may finish on the dead node.
EPOCHS = 30


@pytest.mark.slow
def test_killed_worker_node_s_trial_continues_from_its_checkpoint(tmp_path, fake_trainer,
                                                                  street_world_tiny, capsys):
    """A worker node dies mid-search (its raylet and workers killed): its trial is retried
    (search.max_failures) on the other node from its last checkpoint, nothing lost."""
    import threading
    import time

    from ray.cluster_utils import Cluster

    from tests.helpers import ray_reports
    from vpr_tune.cli import main

    logs = tmp_path / "logs"
    logs.mkdir()
    space = write_space(tmp_path / "kill.yaml", data={"root": str(logs), "cache": False},
                        optimizer={"lr": {"uniform": [0.1, 0.9]}},
                        budget={"max_epochs": EPOCHS},
                        search={"num_samples": 2, "max_concurrent": 2, "max_failures": 2})
    storage = tmp_path / "shared"
    exp = storage / "k"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    killed: dict[str, int] = {}

    def kill_worker_once_it_checkpointed() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            for tid, rows in ray_reports(exp).items():
                if rows and rows[-1].get("node_id") == worker.node_id and \
                        rows[-1]["epoch"] >= 3:
                    killed[tid] = rows[-1]["epoch"]
                    cluster.remove_node(worker, allow_graceful=False)
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_worker_once_it_checkpointed, daemon=True)
    killer.start()
    try:
        rc = main(["run", str(space), "--data", str(street_world_tiny), "--name", "k",
                   "--storage", str(storage), "--address", cluster.address])
        killer.join(10)
        assert rc == 0, capsys.readouterr()
        assert killed, "no trial reached epoch 3 on the worker node"
        (victim, at_kill), = killed.items()
        trials = read_table(exp / "trials.csv").set_index("trial_id")
        assert (trials["status"] == "TERMINATED").all() and (trials["epochs"] == EPOCHS).all()
        assert trials.loc[victim, "node_id"] != worker.node_id  # finished on the head node
        epochs = [r["epoch"] for r in ray_reports(exp)[victim]]
        # it went on from its last checkpoint (one epoch at most redone), not from epoch 1
        assert epochs.count(1) == 1 and epochs[-1] == EPOCHS and at_kill >= 3
        assert all(b >= a - 1 for a, b in zip(epochs[:-1], epochs[1:], strict=True)), epochs
        metrics = read_table(exp / "metrics.csv")
        assert (metrics.groupby("trial_id")["epoch"].apply(sorted).map(list)
                == [list(range(1, EPOCHS + 1))] * 2).all()  # every epoch once in the tables
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
