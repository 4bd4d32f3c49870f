"""Checkpoints: one safetensors file holding the model, optionally the optimizer, and metadata.

Layout of the file (nothing in it is ever unpickled):

* tensors ``model.<name>`` for each entry of ``model.state_dict()``; a tensor registered under
  several names (tied weights) is stored once, under its first name;
* tensors ``optim.<param_index>.<key>`` for each tensor in the optimizer's per-parameter state
  (``param_index`` is the parameter's position in the optimizer's ``state_dict``);
* the safetensors metadata (str -> str), each value JSON: ``format`` (:data:`FORMAT`),
  ``version``, ``meta`` (the caller's dict), ``model`` (``{"aliases": {name: stored_name}}``)
  and, with an optimizer, ``optim`` (``{"class", "param_groups", "state"}``: the groups'
  hyper-parameters and the non-tensor per-parameter state, such as step counts).

``save`` writes a temporary file in the target's directory, fsyncs it and renames it over the
target, so a crash mid-save (or a full disk) leaves the previous checkpoint as it was; the file
gets the umask's mode, like every other output. Every reader opens the file through
:func:`_open`, so a truncated or corrupt file is a :class:`CheckpointError` naming it, never
half-used; :func:`verify` also checks the values are finite and the shapes fit a model.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from evotui.atomic import _UMASK

FORMAT = "evotui-checkpoint"
VERSION = 1
MODEL, OPTIM = "model.", "optim."
KEEP_LISTS = ("params", "param_names")  # other lists in param groups were tuples (betas)


class CheckpointError(ValueError):
    """The file is not an evotui checkpoint, or does not fit the model / optimizer given."""


# -- saving ---------------------------------------------------------------------------------
def _standalone(t: Tensor) -> Tensor:
    """A contiguous CPU tensor that owns its whole storage (safetensors refuses shared ones)."""
    t = t.detach().to("cpu")
    if not t.is_contiguous() or t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone(memory_format=torch.contiguous_format)
    return t


def _model_tensors(model: nn.Module, dtype: torch.dtype | None
                   ) -> tuple[dict[str, Tensor], dict[str, str]]:
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple[Any, ...], str] = {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.device)
        if t.numel() and key in first:
            aliases[name] = first[key]
            continue
        first[key] = name
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[MODEL + name] = _standalone(t)
    return tensors, aliases


def _optim_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"{OPTIM}{index}.{key}"] = _standalone(value)
            else:
                plain.setdefault(str(index), {})[key] = value
    info = {"class": type(optimizer).__name__, "param_groups": sd["param_groups"],
            "state": plain}
    return tensors, info


def _write(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "r+b") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # as open() would make it, not mkstemp's 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
         meta: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None) -> None:
    """Write ``model`` (floating tensors as ``dtype`` if given), the optimizer (its state as
    is, fp32 for fp32 parameters) and the JSON-serialisable ``meta`` to ``path``, atomically."""
    tensors, aliases = _model_tensors(model, dtype)
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "meta": json.dumps(dict(meta or {})),
        "model": json.dumps({"aliases": aliases}),
    }
    if optimizer is not None:
        optim_tensors, info = _optim_tensors(optimizer)
        tensors.update(optim_tensors)
        metadata["optim"] = json.dumps(info)
    _write(Path(path), tensors, metadata)


# -- loading --------------------------------------------------------------------------------
@contextmanager
def _open(path: str | Path) -> Iterator[Any]:
    """``safe_open`` with its failures (a missing, truncated or corrupt file) as one-line
    :class:`CheckpointError`s that name the file."""
    try:
        f = safe_open(str(path), framework="pt", device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except (SafetensorError, OSError) as e:
        size = _size(path)
        raise CheckpointError(f"{path}: not a whole safetensors file ({size}; "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}): "
                              "truncated or corrupt") from None
    with f:
        yield f


def _size(path: str | Path) -> str:
    try:
        return f"{os.stat(path).st_size:,} bytes"
    except OSError:
        return "unreadable"


def _header(f: Any, path: str | Path) -> dict[str, str]:
    metadata = f.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an evotui checkpoint (no format={FORMAT} metadata)")
    if int(metadata.get("version", "0")) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {metadata['version']} is newer than "
                              f"this evotui reads ({VERSION})")
    return metadata


def _keys(f: Any) -> list[str]:
    """The tensor names in an open safetensors file (``safe_open`` is not iterable)."""
    return list(f.keys())


def _stored_names(f: Any, header: dict[str, str]) -> dict[str, str]:
    """Every model tensor name in the file -> the name it is stored under."""
    stored = [k[len(MODEL):] for k in _keys(f) if k.startswith(MODEL)]
    names = {k: k for k in stored}
    names.update(json.loads(header["model"])["aliases"])
    return names


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` dict saved with the checkpoint, without reading any tensor."""
    with _open(path) as f:
        return json.loads(_header(f, path)["meta"])


def load_state(path: str | Path) -> dict[str, Tensor]:
    """The model tensors (as stored, e.g. bf16), keyed by state_dict name; aliases of one
    stored tensor map to the same tensor object."""
    with _open(path) as f:
        names = _stored_names(f, _header(f, path))
        loaded = {s: f.get_tensor(MODEL + s) for s in set(names.values())}
    return {name: loaded[stored] for name, stored in names.items()}


def _restore_group(group: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) and k not in KEEP_LISTS else v
            for k, v in group.items()}


def _load_optimizer(f: Any, header: dict[str, str], optimizer: torch.optim.Optimizer,
                    path: str | Path) -> None:
    if "optim" not in header:
        raise CheckpointError(f"{path}: the checkpoint has no optimizer state")
    info = json.loads(header["optim"])
    if info["class"] != type(optimizer).__name__:
        raise CheckpointError(f"{path}: optimizer state of {info['class']}, "
                              f"not {type(optimizer).__name__}")
    groups = [_restore_group(g) for g in info["param_groups"]]
    saved_names = [g.get("param_names") for g in groups]
    names = [g.get("param_names") for g in optimizer.param_groups]
    if None not in saved_names and None not in names and saved_names != names:
        raise CheckpointError(f"{path}: the optimizer's parameters are not the checkpoint's")
    state: dict[int, dict[str, Any]] = {}
    for key in _keys(f):
        if key.startswith(OPTIM):
            index, name = key[len(OPTIM):].split(".", 1)
            state.setdefault(int(index), {})[name] = f.get_tensor(key)
    for index, values in info["state"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def load(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
         strict: bool = True) -> dict[str, Any]:
    """Copy the checkpoint into ``model`` in place (converting to the model's dtypes and
    device, so tied weights stay tied) and, if given, into ``optimizer``; return ``meta``.

    With ``strict`` every model tensor must be in the file and vice versa. Without it the
    tensors in both are loaded and the returned dict also holds ``missing_keys`` (in the
    model, not the file) and ``unexpected_keys`` (in the file, not the model). A shape
    mismatch is always an error, raised before anything is changed.
    """
    with _open(path) as f:
        header = _header(f, path)
        names = _stored_names(f, header)
        target = model.state_dict()
        missing = [n for n in target if n not in names]
        unexpected = [n for n in names if n not in target]
        if strict and (missing or unexpected):
            raise CheckpointError(f"{path}: does not match the model; missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}")
        common = [n for n in target if n in names]
        for n in common:
            shape = tuple(f.get_slice(MODEL + names[n]).get_shape())
            if shape != tuple(target[n].shape):
                raise CheckpointError(f"{path}: {n} has shape {shape} in the checkpoint, "
                                      f"{tuple(target[n].shape)} in the model")
        with torch.no_grad():
            for n in common:
                target[n].copy_(f.get_tensor(MODEL + names[n]))
        if optimizer is not None:
            _load_optimizer(f, header, optimizer, path)
        meta: dict[str, Any] = json.loads(header["meta"])
    if not strict:
        meta["missing_keys"], meta["unexpected_keys"] = missing, unexpected
    return meta


def verify(path: str | Path, shapes: Mapping[str, tuple[int, ...]] | None = None
           ) -> dict[str, int]:
    """Check a checkpoint before anything uses it: a whole safetensors file with evotui's
    header, every model tensor finite and, given a model's ``shapes`` (state_dict name ->
    shape), at least one tensor of the model in the file and none of a different shape there.
    Returns ``{"tensors", "matched", "fresh"}`` (tensors in the file; of the model's, found in
    the file and not); raises :class:`CheckpointError` naming the file and the tensor."""
    with _open(path) as f:
        names = _stored_names(f, _header(f, path))
        for stored in sorted(set(names.values())):
            try:
                t = f.get_tensor(MODEL + stored)
            except (SafetensorError, OSError) as e:
                raise CheckpointError(f"{path}: tensor {stored} cannot be read ({e}): "
                                      "truncated or corrupt") from None
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{path}: tensor {stored} holds NaN or infinite values: "
                                      "corrupt (bit rot?) or saved from a diverged run")
            if shapes is not None and stored in shapes and tuple(t.shape) != tuple(
                    shapes[stored]):
                raise CheckpointError(f"{path}: {stored} has shape {tuple(t.shape)} in the "
                                      f"checkpoint, {tuple(shapes[stored])} in the model")
    matched = sum(1 for n in (shapes or {}) if n in names)
    if shapes is not None and not matched:
        raise CheckpointError(f"{path}: none of its {len(names)} tensors is a tensor of this "
                              "model (a checkpoint of another architecture?)")
    return {"tensors": len(names), "matched": matched,
            "fresh": len(shapes or {}) - matched}
