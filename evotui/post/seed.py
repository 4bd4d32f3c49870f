"""Candidates of a finished run as starting points: find one (in a run directory or a frontier
JSON), with its run config and checkpoint, and export it as the seed of the next run.

``open_source(path)`` reads a run directory through :class:`evotui.engine.rundir.RunDir` (its
frontier, ``RUN_DIR/frontier.json`` or the run's ``--out``; ``config.yaml``) or a frontier JSON
file (its run config is the ``config.yaml`` beside it unless ``--config`` names one).
``export_seed`` writes the run's resolved config with ``model`` replaced by the candidate's
genome and, given a checkpoint path, the candidate's weights alone (no optimizer state), which
the written config names as ``train.init_checkpoint`` (an absolute path): every tensor of a run
started from it, generation 0's seed and mutants alike, starts from those weights where the
names and shapes match.

Imports no torch at module level (the checkpoint export imports it when asked for).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evotui import atomic
from evotui.dsl import ModelSpec, RunConfig, dump, load, parse, to_data
from evotui.engine.rundir import FRONTIER_NAME, RunDir, read_frontier
from evotui.engine.store import CONFIG_NAME, RunStore
from evotui.errors import UserError
from evotui.lifecycle import FINISHED


@dataclass
class Source:
    """A run directory or a frontier JSON, read."""

    path: Path
    entries: list[dict[str, Any]]  # frontier entries, as the file lists them
    objectives: dict[str, str]
    frontier_path: Path | None = None
    run_dir: Path | None = None
    config_path: Path | None = None
    rundir: RunDir | None = None  # the run's recorded paths (None beside a frontier JSON)
    _config: RunConfig | None = field(default=None, repr=False)

    @property
    def dir(self) -> RunDir:
        """The run's paths; beside a frontier JSON, its directory is taken as the run's."""
        return self.rundir or RunDir(self.out_dir)

    @property
    def out_dir(self) -> Path:
        """Where outputs about this source go by default: the run directory, else the
        frontier file's directory."""
        return self.run_dir or self.path.parent

    def config(self) -> RunConfig:
        """The run config (resolved, as the run used it)."""
        if self._config is None:
            if self.config_path is None or not self.config_path.is_file():
                raise UserError.single(
                    f"no run config found (looked for {CONFIG_NAME} beside it); pass --config "
                    "with the run's config.yaml", source=str(self.path))
            self._config = load(self.config_path)
        return self._config

    def entry(self, cid: str) -> dict[str, Any]:
        """The frontier entry ``cid``; in a run directory, any candidate of the run."""
        for e in self.entries:
            if e.get("id") == cid:
                return e
        if self.run_dir is not None:
            with RunStore.open(self.run_dir, readonly=True) as store:
                if store.has_candidate(cid):
                    return store.candidate(cid)
            where = "in this run"
        else:
            where = "on this frontier"
        ids = ", ".join(str(e.get("id")) for e in self.entries[:12])
        raise UserError.single(f"no candidate {cid!r} {where}; frontier ids: {ids or 'none'}",
                               path="--id", source=str(self.path))

    def spec(self, entry: dict[str, Any]) -> ModelSpec:
        """The candidate's genome (validated)."""
        data = entry.get("spec")
        if not isinstance(data, dict):
            raise UserError.single(
                f"candidate {entry.get('id')} has no spec (genome) in this file; give the run "
                "directory or a frontier.json written by evotui", source=str(self.path))
        return parse(data, ModelSpec, source=f"{self.path} (candidate {entry.get('id')})")

    def checkpoint(self, entry: dict[str, Any]) -> Path | None:
        """The candidate's checkpoint file, or None when there is none on disk (see
        :meth:`RunDir.checkpoint`; beside a frontier JSON, its directory is the run's)."""
        return self.dir.checkpoint(entry.get("checkpoint"))

    def owned(self) -> list[Path]:
        """Files the run reads back (its store, config, exports, log, checkpoints): never an
        output of a command about it."""
        files = [p.resolve() for p in (self.frontier_path, self.config_path) if p is not None]
        if self.run_dir is not None:
            files += self.dir.owned()
        files += [Path(e["checkpoint"]).resolve() for e in self.entries if e.get("checkpoint")]
        return files


def open_source(path: Path, config: Path | None = None) -> Source:
    """Read a run directory or a frontier JSON; :class:`UserError` for anything else."""
    if not path.exists():
        raise UserError.single("no such file or directory; give a run directory or a "
                               "frontier JSON", source=str(path))
    run_dir, rd = None, None
    if path.is_dir():
        frontier_path = path / FRONTIER_NAME
        if RunDir.is_run(path):
            run_dir, rd = path, RunDir.open(path)
            frontier_path = rd.frontier_path
        if not frontier_path.is_file():
            what = "no frontier.json yet" if run_dir else "not a run directory (no run.db)"
            raise UserError.single(f"{what}; give a run directory or a frontier JSON",
                                   source=str(path))
        default_config = path / CONFIG_NAME
    else:
        frontier_path = path
        default_config = path.parent / CONFIG_NAME
    frontier = read_frontier(frontier_path)
    return Source(path, frontier.entries, frontier.objectives, frontier_path, run_dir,
                  config or default_config, rd)


@dataclass
class Exported:
    candidate: str
    config: Path
    checkpoint: Path | None
    notes: list[str]


def export_seed(source: Source, cid: str, out_config: Path,
                out_checkpoint: Path | None = None) -> Exported:
    """Write the next run's config (and the candidate's weights); see the module docstring."""
    _check_outputs(source, out_config, out_checkpoint)
    entry = source.entry(cid)
    spec = source.spec(entry)
    cfg = source.config()
    notes: list[str] = []
    if entry.get("status") not in (None, *FINISHED):
        notes.append(f"candidate {cid} is {entry['status']}, not a finished candidate")
    ckpt = None
    if out_checkpoint is not None:
        ckpt = source.checkpoint(entry)
        if ckpt is None:
            where = entry.get("checkpoint") or "none recorded"
            raise UserError.single(
                f"candidate {cid} has no checkpoint on disk ({where}); drop --out-checkpoint "
                "to export the genome alone", path="--out-checkpoint", source=str(source.path))
        if out_checkpoint.resolve() == ckpt.resolve():
            raise UserError.single("is the candidate's own checkpoint; choose another file",
                                   path="--out-checkpoint", source=str(out_checkpoint))
    data = to_data(cfg)
    data["model"] = to_data(spec)
    train = data.setdefault("train", {})
    if out_checkpoint is not None:
        train["init_checkpoint"] = str(out_checkpoint.resolve())
        if cfg.evolution.weight_inheritance == "scratch":
            notes.append("evolution.weight_inheritance is scratch, so `evotui run` ignores "
                         "train.init_checkpoint (`evotui train` uses it)")
    elif train.pop("init_checkpoint", None):
        notes.append("train.init_checkpoint of the run was dropped: the genome starts from "
                     "fresh weights (give --out-checkpoint to start from the candidate's)")
    exported = parse(data, RunConfig, source=f"the exported config of {cid}")
    if out_checkpoint is not None:
        write_weights(ckpt, spec, exported, out_checkpoint, cid)  # type: ignore[arg-type]
    header = (f"# exported by `evotui export-seed` from {source.path}, candidate {cid}"
              + (f" (generation {entry['generation']})" if "generation" in entry else "")
              + "\n")
    atomic.write_text(out_config, header + dump(exported))
    return Exported(cid, out_config, out_checkpoint, notes)


def _check_outputs(source: Source, out_config: Path, out_checkpoint: Path | None) -> None:
    """Outputs never replace each other or a file the run needs."""
    if out_checkpoint is not None and out_checkpoint.resolve() == out_config.resolve():
        raise UserError.single("is also --out-config; give the weights their own file",
                               path="--out-checkpoint", source=str(out_checkpoint))
    owned = set(source.owned())
    for flag, out in (("--out-config", out_config), ("--out-checkpoint", out_checkpoint)):
        if out is not None and out.resolve() in owned:
            raise UserError.single("is a file of the run (its store, config, exports or a "
                                   "checkpoint); write the seed somewhere else", path=flag,
                                   source=str(out))
        if out is not None and out.is_dir():
            raise UserError.single("is a directory; give a file name", path=flag,
                                   source=str(out))


def write_weights(src: Path, spec: ModelSpec, cfg: RunConfig, out: Path, cid: str) -> None:
    """The candidate's model tensors alone, checked against its genome (every tensor present,
    none extra, shapes equal), in the checkpoint's dtype, written atomically."""
    import torch

    from evotui.model.lm import build_model
    from evotui.train import checkpoint as ckpt

    model = build_model(spec, cfg.data.seq_len, device="cpu")
    try:
        meta = ckpt.load(src, model, strict=True)
    except ckpt.CheckpointError as e:
        raise UserError.single(f"the checkpoint does not fit candidate {cid}'s genome: {e}",
                               source=str(src)) from None
    bf16 = cfg.train.checkpoint_dtype == "bfloat16"
    keep = {k: meta[k] for k in ("step", "tokens", "rung", "seed") if k in meta}
    ckpt.save(out, model, None, {"exported_from": str(src), "candidate": cid, **keep},
              dtype=torch.bfloat16 if bf16 else None)
