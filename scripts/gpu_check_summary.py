"""Sum up a ``scripts/gpu_check.sh`` output folder: OUTDIR/summary.json and OUTDIR/summary.md.

Usage: python scripts/gpu_check_summary.py OUTDIR DEVICE
Reads steps.jsonl (each step's exit code and seconds) and the JSON each step printed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _json(path: Path) -> Any:
    try:
        text = path.read_text().strip()
        return json.loads(text.splitlines()[-1]) if text else None
    except (OSError, ValueError, IndexError):
        return None


def main(out: Path, device: str) -> int:
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line]
    s: dict[str, Any] = {"device": device, "steps": steps, "env": _json(out / "env.out"),
                         "ok": all(x["rc"] == 0 for x in steps)}
    attn = _json(out / "bench_attention.out")
    if attn:
        s["attention"] = [{k: r[k] for k in ("pattern", "backend", "ms", "vs_dense",
                                             "vs_budget", "density", "max_err")}
                          for r in attn["results"]]
    train = _json(out / "bench_train.out")
    if train:
        s["train"] = [{"config": r["name"], **{k: r["fast"].get(k) for k in (
            "tokens_per_s", "step_ms", "mfu", "peak_mem_mb", "compile_s", "warmup_s",
            "graphs", "graph_breaks", "eager_frames", "params_active")},
            "fast_vs_plain": r.get("fast_vs_plain")} for r in train["runs"]]
    comp = _json(out / "bench_compile.out")
    if comp:
        s["compile"] = {k: comp[k] for k in ("max_recompiles", "eager_frames", "all_compiled",
                                             "configs")}
    frontier = out / "run" / "frontier.json"
    if frontier.is_file():
        s["run_frontier"] = _json(frontier)
    (out / "summary.json").write_text(json.dumps(s, indent=1, default=str))

    md = [f"# gpu_check ({device})", ""]
    env = s["env"] or {}
    md += [f"- {k}: {v}" for k, v in env.items()] + [""]
    md += ["| step | exit | seconds |", "|---|---|---|"]
    md += [f"| {x['step']} | {x['rc']} | {x['seconds']} |" for x in steps] + [""]
    if "attention" in s:
        md += ["| pattern | backend | ms | vs dense | vs 1.5 x density | max err |",
               "|---|---|---|---|---|---|"]
        md += [f"| {r['pattern']} | {r['backend']} | {r['ms']} | {r['vs_dense']} | "
               f"{r['vs_budget']} | {r['max_err']:.1e} |" for r in s["attention"]] + [""]
    if "train" in s:
        md += ["| config | tokens/s | step ms | MFU | peak MiB | compile s | fast/plain |",
               "|---|---|---|---|---|---|---|"]
        for r in s["train"]:
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
            md.append(f"| {r['config']} | {r['tokens_per_s']} | {r['step_ms']} | {mfu} | "
                      f"{r['peak_mem_mb']} | {r['compile_s']} | {r['fast_vs_plain']} |")
        md.append("")
    if "compile" in s:
        c = s["compile"]
        md += [f"compile: max recompiles {c['max_recompiles']}, eager frames "
               f"{c['eager_frames']}, all compiled {c['all_compiled']}", ""]
    md.append("all steps passed" if s["ok"] else "SOME STEPS FAILED")
    (out / "summary.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
