"""Which devices a command uses: the one resolution of ``--device`` / ``--devices``.

:func:`slots` turns the flags into the executor's slots (``cuda:0``, ``cuda:1``, ``cpu``, ...),
checking that what was asked for exists; :func:`single` is the device of a one-device command
(``evotui train``, the benchmarks): ``cpu`` or ``cuda``; :func:`slot_name` spells one slot;
:func:`ranks` and :func:`check_shards` say how many FSDP ranks the slots allow.

torch is imported only when a GPU may be used: without an NVIDIA driver (NVML cannot load) no
CUDA device can exist, so ``auto`` means CPU at once and a process that hosts the engine (the
app's, for one) stays free of torch.
"""

from __future__ import annotations

from typing import Any

from evotui.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def slots(device: str = "auto", devices: str | None = None, cpu_slots: int = 1) -> list[str]:
    """The slots for ``--device`` (auto, cpu or cuda: every visible GPU), ``--devices`` (GPU
    indices, e.g. ``0,1``) and ``--cpu-slots``; :class:`UserError` naming the flag otherwise."""
    if not devices and device not in DEVICES:
        raise UserError.single(f"unknown device {device!r}; use auto, cpu or cuda",
                               path="--device")
    if not devices and device == "auto":
        from evotui.gpu import nvml

        if not nvml.available()[0]:
            device = "cpu"
    if not devices and device == "cpu":
        return ["cpu"] * max(1, cpu_slots)
    import torch

    if devices:
        if not torch.cuda.is_available():
            raise UserError.single("no CUDA device is visible for --devices; use --device cpu",
                                   path="--devices")
        try:
            ids = [int(x) for x in devices.split(",") if x.strip()]
        except ValueError:
            raise UserError.single("give GPU indices like 0,1", path="--devices") from None
        bad = [i for i in ids if i >= torch.cuda.device_count()]
        if bad or not ids:
            raise UserError.single(f"no such GPU {bad}; visible: "
                                   f"{torch.cuda.device_count()}", path="--devices")
        return [f"cuda:{i}" for i in ids]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError.single("no CUDA device is visible; use --device cpu (or check "
                                   "CUDA_VISIBLE_DEVICES and the driver)", path="--device")
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"] * max(1, cpu_slots)


def single(device: str = "auto") -> str:
    """The device of a one-device command: ``cpu`` or ``cuda`` (checked as :func:`slots`)."""
    return slots(device)[0].split(":")[0]


def slot_name(item: str | int) -> str:
    """One slot spelled as the executor keeps it (``0`` -> ``cuda:0``, ``cuda`` -> ``cuda:0``;
    ``cuda:N`` and ``cpu`` unchanged); ValueError for anything else."""
    text = str(item).strip()
    if text.isdigit():
        return f"cuda:{text}"
    if text == "cuda":
        return "cuda:0"
    if text == "cpu" or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise ValueError(f"unknown device {item!r}; use a GPU index (0), cuda:N or cpu")


def ranks(slots: list[str], device: str) -> int:
    """How many FSDP ranks one job on ``device`` can have among ``slots``: the CPU slots, or
    the distinct GPUs (k ranks train on k different GPUs)."""
    if device == "cpu":
        return slots.count("cpu")
    return len({s for s in slots if s != "cpu"})


def check_shards(cfg: Any, slots: list[str], source: str) -> None:
    """A config that asks for more FSDP shards than these slots hold is refused before a run
    starts (every candidate would fail: no mutation changes ``train``)."""
    t = cfg.train
    if t.parallel != "fsdp" or not slots:
        return
    have = ranks(slots, slots[0])
    if t.shards > have:
        what = "CPU slots" if slots[0] == "cpu" else "GPUs"
        raise UserError.single(
            f"{t.shards} shards need {t.shards} {what} of one node and this run has {have}; "
            f"give more with {'--cpu-slots' if slots[0] == 'cpu' else '--devices'}, or lower "
            "train.shards", source=source, path="train.shards")
