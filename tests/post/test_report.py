"""``evotui report``: a Markdown report whose plots exist, are real PNGs and show something."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np

from evotui.engine.store import RunStore

IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def _images(report):
    return IMAGE.findall(report.read_text())


def _check_png(path):
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(np.var(pixels)) > 1e-4, f"{path.name} is blank"


def test_report_of_a_tiny_run(tiny_run, run_cli, tmp_path):
    out = tmp_path / "report"
    code, text, err = run_cli("report", tiny_run, "--out", out)
    assert code == 0, err
    report = out / "report.md"
    assert report.is_file() and str(report) in text
    images = _images(report)
    assert {"pareto.png", "loss_curves.png", "lineage.png", "motifs.png"} <= set(images)
    for name in images:  # every image the Markdown names exists and shows something
        _check_png(out / name)
    md = report.read_text()
    frontier = [e["id"] for e in json.loads((tiny_run / "frontier.json").read_text())["frontier"]]
    assert frontier
    table = md.split("## Frontier", 1)[1].split("##", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| c")]
    assert [row.split("|")[1].strip() for row in rows] == frontier
    with RunStore.open(tiny_run, readonly=True) as store:
        candidates = store.candidates()
    assert f"| candidates | {len(candidates)}: " in md
    # motifs: how many candidates carry them, on the frontier and in the whole population
    for motif, has in (("ssm (mamba2)", lambda b: b.get("ssm")),
                       ("moe", lambda b: (b.get("ffn") or {}).get("type") == "moe")):
        carriers = {c["id"] for c in candidates if any(has(b) for b in c["spec"]["blocks"])}
        on_front = len(carriers & set(frontier))
        assert carriers
        assert (f"| {motif} | {on_front} ({on_front / len(frontier):.0%}) | {len(carriers)} "
                f"({len(carriers) / len(candidates):.0%}) |") in md
    assert "No candidate failed" in md and not (out / "failures.png").exists()


def test_a_failed_candidate_shows_its_reason(tiny_run, run_cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    frontier = {e["id"] for e in json.loads((run / "frontier.json").read_text())["frontier"]}
    with RunStore.open(run) as store:
        victim = next(c["id"] for c in store.candidates() if c["id"] not in frontier)
        store.update_candidate(victim, status="queued")  # promoted to its next rung,
        store.update_candidate(victim, status="failed", error="out of memory")  # where it failed
    code, _, err = run_cli("report", run)  # the default place: RUN_DIR/report
    assert code == 0, err
    report = run / "report" / "report.md"
    assert "failures.png" in _images(report)
    for name in _images(report):
        _check_png(run / "report" / name)
    failures = report.read_text().split("## Failures", 1)[1]
    assert re.search(rf"\| out of memory \| failed \| 1 \| {victim} \|", failures)


def test_report_of_a_directory_without_a_run(run_cli, tmp_path):
    code, _, err = run_cli("report", tmp_path)
    assert code == 2 and "run.db" in err and len(err.strip().splitlines()) == 1
