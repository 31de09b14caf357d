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
