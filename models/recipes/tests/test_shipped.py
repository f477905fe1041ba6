"""The shipped demo model is what its manifest says, and small enough to ship."""

import hashlib
import json
import os

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "demo")
LIMIT_BYTES = 25 * 1000 * 1000


def manifest():
    with open(os.path.join(DEMO, "manifest.json")) as fh:
        return json.load(fh)


def test_every_file_matches_its_sha256_and_nothing_is_unlisted():
    m = manifest()
    on_disk = set()
    for root, _, names in os.walk(DEMO):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), DEMO)
            if rel != "manifest.json":
                on_disk.add(rel)
    assert on_disk == set(m["files"])
    for rel, info in m["files"].items():
        with open(os.path.join(DEMO, rel), "rb") as fh:
            data = fh.read()
        assert hashlib.sha256(data).hexdigest() == info["sha256"], rel
        assert len(data) == info["bytes"], rel


def test_demo_model_fits_the_size_budget():
    total = sum(
        os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(DEMO) for n in names
    )
    assert total <= LIMIT_BYTES, total


def test_manifest_records_how_it_was_made():
    m = manifest()
    for key in ("config", "seed", "training_seconds", "fp32_figures"):
        assert key in m
    names = {t["name"] for t in m["fp32_figures"]["tasks"]}
    assert {"shape", "colour", "count", "colour+shape (seen pairs)", "colour+shape (held-out pairs)"} <= names
    assert m["fp32_figures"]["retrieval"]


def test_manifest_records_every_runs_settings():
    # A rebuild needs every argument of every run, not just the last one's steps.
    runs = manifest()["training"]["runs"]
    assert runs
    for run in runs:
        assert "arguments" in run, run
        assert {"steps", "grey", "grey_captions", "calibrate", "seed"} <= set(run["arguments"]), run
