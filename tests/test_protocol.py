"""More test sets by path, each with its protocol recorded; compare warns across protocols."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vpr_tune.cli import main
from vpr_tune.protocol import (
    PROTOCOL_FILE,
    parse_test_sets,
    protocol_differences,
    read_protocols,
    split_protocol,
)


@pytest.mark.parametrize("value, msg", [
    ("pitts30k", "expected NAME=PATH"),
    ("pitts30k=", "expected NAME=PATH"),
    ("30k=/data/x", "must start with a letter"),
    ("val=/data/x", "not be val"),
    ("a-b=/data/x", "letters, digits and _"),
])
def test_bad_test_set_is_refused(value, msg):
    from vpr_tune.errors import UserError

    with pytest.raises(UserError, match=msg):
        parse_test_sets([value])


def test_test_sets_parse_and_twice_is_refused():
    from vpr_tune.errors import UserError

    assert parse_test_sets(["pitts=/d/p", " msls = /d/m "]) == {"pitts": "/d/p", "msls": "/d/m"}
    assert parse_test_sets(["x=data/x"]) == {"x": str(Path.cwd() / "data" / "x")}
    with pytest.raises(UserError, match="given twice"):
        parse_test_sets(["a=/x", "a=/y"])


def test_protocol_of_a_split_and_its_differences(street_world_tiny):
    from vpr_tune.data.splits import find_split, load_eval_split

    split = load_eval_split(find_split(street_world_tiny, "sf_xs/test"))
    p = split_protocol(split, [32, 32])
    assert (p["queries"], p["database"]) == (len(split.q_paths), len(split.db_paths))
    assert p["positive_radius_m"] == 25.0 and p["image_size"] == [32, 32]
    assert protocol_differences(p, dict(p)) == []
    tokyo = split_protocol(load_eval_split(find_split(street_world_tiny, "tokyo_xs/test")), 32)
    differ = protocol_differences(p, tokyo)
    assert any(d.startswith("files_sha1") for d in differ)
    assert any(d.startswith("image_size") for d in differ)
    assert protocol_differences(p, None) == []  # unknown is not "different"


def test_a_test_set_by_path_is_retested_with_its_protocol(retest_experiment, tmp_path, capsys,
                                                           street_world_tiny):
    # another dataset in the SF-XS layout, somewhere else on disk (here: Tokyo-like test)
    other = shutil.copytree(street_world_tiny / "tokyo_xs" / "test", tmp_path / "night" / "test")
    storage = str(retest_experiment.parent)
    rc = main(["best", "hand", "--storage", storage, "--top", "2", "--json",
               "--test-set", f"night={other.parent}"])  # implies --retest
    out = capsys.readouterr()
    assert rc == 0, out.err
    data = json.loads(out.out)
    assert {"sf_test", "tokyo", "night"} <= set(data["test_sets"])
    assert "night_R@1" in data["retest"][0] and "night_R@1_lo" in data["retest"][0]
    # the same images under another name give the same recalls, and the same file lists
    for row in data["retest"]:
        assert row["night_R@1"] == row["tokyo_R@1"]
    protocols = read_protocols(retest_experiment)
    assert protocols == {s: c["protocol"] for s, c in data["test_sets"].items()}
    night, tokyo = protocols["night"], protocols["tokyo"]
    assert night["files_sha1"] == tokyo["files_sha1"] and night["path"] == str(other)
    assert night["queries"] == data["test_sets"]["night"]["queries"] > 0
    assert night["image_size"] == [32, 32] and night["positive_radius_m"] == 25.0
    md = (retest_experiment / "retest.md").read_text()
    assert f"night protocol: {other}: {night['queries']} queries" in md
    assert "positives within 25 m, image size 32x32 px" in md


def test_compare_warns_when_one_set_name_means_two_protocols(retest_experiment, capsys):
    assert main(["best", "hand", "--storage", str(retest_experiment.parent), "--retest",
                 "--top", "1"]) == 0
    twin = shutil.copytree(retest_experiment, retest_experiment.parent / "twin")
    protocols = read_protocols(twin)
    protocols["tokyo"]["image_size"] = [322, 322]  # as if retested at another size
    (twin / PROTOCOL_FILE).write_text(json.dumps(protocols))
    capsys.readouterr()
    assert main(["compare", "hand", "twin", "--storage", str(twin.parent), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["protocol_mismatches"] == [{"a": "hand", "b": "twin", "test_set": "tokyo",
                                            "differences": ["image_size [32, 32] vs [322, 322]"]}]
    assert main(["compare", "hand", "twin", "--storage", str(twin.parent)]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert "tokyo of hand and of twin were measured under different protocols" in out


def test_a_test_set_path_that_does_not_exist_is_one_line_before_any_evaluation(
        retest_experiment, tmp_path, capsys):
    rc = main(["best", "hand", "--storage", str(retest_experiment.parent),
               "--test-set", f"night={tmp_path / 'nope'}"])
    err = capsys.readouterr()
    assert rc == 2
    assert f"test set night: data root {tmp_path / 'nope'} does not exist" in err.err
    assert "retest #" not in err.out and not (retest_experiment / "retest.csv").exists()
