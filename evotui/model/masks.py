"""Attention masks built from a sparsity ``Pattern`` (``Pattern.allowed`` is the only rule).

- ``sdpa_mask``: a dense boolean (T, T) tensor, True = attend, for SDPA and the reference.
- ``mask_mod`` / ``block_mask``: FlexAttention's predicate and its ``BlockMask``.
- ``chunk_plan`` / ``chunk_layout``: the chunked backend's block-sparse layout and its masks;
  ``chunk_groups``: that layout as the batched calls the backend makes (``chunk_work``: their
  size).

All are cached per (pattern, T, device) (``chunk_groups`` also per group split and dtype, at
most 32 layouts), so the layers of a model share one mask. Under
``torch.compile`` the masks are never rebuilt inside the graph: the cached tensors enter it as
constants (``assume_constant_result``). Besides saving the work, this sidesteps an Inductor
bug (torch 2.13, CPU at least) that drops the tail of ``arange(T) // s`` when ``s`` does not
divide ``T``, leaving garbage in block masks. A symbolic T (dynamic shapes) cannot be a constant
key, so there the lookup runs eagerly behind a graph break. FlexAttention is imported lazily:
this module imports on any machine.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import torch

from evotui.dsl.patterns import ALL_KNOBS, Pattern

FLEX_BLOCK = 128  # FlexAttention's default tile; a BlockMask is built in these units


def _device(device: torch.device | str) -> torch.device:
    # "cuda" and "cuda:0" must share a cache entry.
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


# --- dense boolean masks (SDPA, reference) ------------------------------------------------


def sdpa_mask(pattern: Pattern, seq_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean (seq_len, seq_len) mask, True where a query may attend to a key."""
    if not torch.compiler.is_compiling():
        return _sdpa_mask(pattern, seq_len, _device(device))
    if isinstance(seq_len, int):
        return _sdpa_mask_constant(pattern, seq_len, device)
    return _sdpa_mask_eager(pattern, seq_len, device)


@lru_cache(maxsize=32)
def _sdpa_mask(pattern: Pattern, seq_len: int, device: torch.device) -> torch.Tensor:
    idx = torch.arange(seq_len, device=device)
    return pattern.allowed(idx[:, None], idx[None, :])


@torch.compiler.assume_constant_result
def _sdpa_mask_constant(pattern: Pattern, seq_len: int, device: torch.device) -> torch.Tensor:
    return _sdpa_mask(pattern, seq_len, _device(device))


@torch.compiler.disable
def _sdpa_mask_eager(pattern: Pattern, seq_len: int, device: torch.device) -> torch.Tensor:
    return _sdpa_mask(pattern, int(seq_len), _device(device))


# --- FlexAttention -----------------------------------------------------------------------


def mask_mod(
    pattern: Pattern, device: torch.device | str | None = None
) -> Callable[[Any, Any, Any, Any], Any]:
    """FlexAttention ``mask_mod``: (batch, head, q_idx, kv_idx) -> may q attend to kv.

    With a ``device``, the knobs travel as 0-d tensors on it: compiled FlexAttention then treats
    them as inputs and recompiles per pattern kind only, not per window size (one recompile
    per distinct layer would soon hit Dynamo's recompile limit and fall back to eager)."""
    if device is not None:
        knobs = {f: torch.tensor(getattr(pattern, f), device=device)
                 for f in ALL_KNOBS if getattr(pattern, f) is not None}
        pattern = Pattern(pattern.kind, **knobs)  # the same predicate, tensor knobs

    def allowed(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        return pattern.allowed(q_idx, kv_idx)

    allowed.__name__ = f"mask_{pattern.kind}"
    return allowed


def flex_available() -> bool:
    """True when this torch build ships FlexAttention."""
    return flex_module() is not None


@lru_cache(maxsize=1)
def flex_module() -> Any:
    """``torch.nn.attention.flex_attention``, or None when this torch build lacks it."""
    try:
        from torch.nn.attention import flex_attention
    except ImportError:
        return None
    return flex_attention


def block_mask(pattern: Pattern, seq_len: int, device: torch.device | str = "cuda") -> Any:
    """FlexAttention ``BlockMask`` for one (pattern, seq_len, device), shared by all heads."""
    if not torch.compiler.is_compiling():
        return _block_mask(pattern, seq_len, _device(device))
    if not isinstance(seq_len, int):
        return _block_mask_eager(pattern, seq_len, device)
    # A BlockMask cannot be a graph constant, its tensors can: rebuild it around them.
    fields = _block_mask_fields(pattern, seq_len, device)
    return flex_module().BlockMask(
        seq_lengths=(seq_len, seq_len), mask_mod=mask_mod(pattern),
        **dict(zip(_block_mask_field_names(), fields, strict=True)),
    )


@lru_cache(maxsize=32)
def _block_mask(pattern: Pattern, seq_len: int, device: torch.device) -> Any:
    flex = flex_module()
    if flex is None:
        raise RuntimeError("this torch build has no torch.nn.attention.flex_attention")
    return flex.create_block_mask(
        mask_mod(pattern, device), B=None, H=None, Q_LEN=seq_len, KV_LEN=seq_len,
        device=device, BLOCK_SIZE=FLEX_BLOCK,
    )


@lru_cache(maxsize=1)
def _block_mask_field_names() -> tuple[str, ...]:
    # Whatever this torch's BlockMask takes besides its lengths and mask_mod.
    params = inspect.signature(flex_module().BlockMask.__init__).parameters
    return tuple(p for p in params if p not in ("self", "seq_lengths", "mask_mod"))


@torch.compiler.assume_constant_result
def _block_mask_fields(pattern: Pattern, seq_len: int, device: torch.device) -> tuple:
    bm = _block_mask(pattern, seq_len, _device(device))
    return tuple(getattr(bm, name) for name in _block_mask_field_names())


@torch.compiler.disable
def _block_mask_eager(pattern: Pattern, seq_len: int, device: torch.device) -> Any:
    return _block_mask(pattern, int(seq_len), _device(device))


# --- chunked (block-sparse) layouts ------------------------------------------------------

CHUNK = 64  # query positions per chunk of the chunked backend (in a residue's subsequence)


class ChunkPlan(NamedTuple):
    """How the ``chunked`` backend visits a pattern over ``seq_len`` positions.

    Positions split into ``residues`` interleaved subsequences (``p = i * residues + r``:
    dilation as a strided view; 1 otherwise) of ``length`` positions each, padded. Each
    subsequence is cut into query chunks of ``chunk``; a chunk attends to the ``band`` keys
    before it plus itself (a superset of every pattern's local reach) and, when ``stride`` is
    set, to every ``stride``-th key (local_global's global keys) outside its band. With
    ``band < 0`` the whole subsequence is one chunk (the band would cover it anyway). Which
    of those candidate pairs are attended is decided by ``Pattern.allowed`` alone."""

    seq_len: int
    residues: int
    chunk: int
    band: int
    stride: int | None
    length: int

    @property
    def blocks(self) -> int:
        return self.length // self.chunk

    @property
    def keys(self) -> int:
        """Candidate keys per query chunk."""
        if self.band < 0:
            return self.length
        return self.band + self.chunk + (self.globals if self.stride else 0)

    @property
    def globals(self) -> int:
        return -(-self.length // self.stride) if self.stride else 0


def _reach(pattern: Pattern) -> int | None:
    """Largest q - k + 1 the pattern's local part attends, in subsequence units (None: all)."""
    kind = pattern.kind
    if kind in ("sliding", "local_global"):
        return pattern.sw
    if kind == "block":
        return pattern.block_size
    if kind == "local_block":
        return max(pattern.sw, pattern.block_size)
    if kind == "dilated":
        return None if pattern.sw is None else -(-pattern.sw // pattern.dilation)
    return None


def chunk_plan(pattern: Pattern, seq_len: int, chunk: int = CHUNK) -> ChunkPlan:
    """The chunked layout of ``pattern`` over ``seq_len`` positions (see :class:`ChunkPlan`)."""
    residues = pattern.dilation if pattern.kind == "dilated" else 1
    n0 = -(-seq_len // residues)
    reach = _reach(pattern)
    stride = pattern.global_stride if pattern.kind == "local_global" else None
    if reach is not None:
        c = min(chunk, 1 << max(4, (reach - 1).bit_length()))
        band = -(-(reach - 1) // c) * c
        length = -(-n0 // c) * c
        if band + c < length:
            return ChunkPlan(seq_len, residues, c, band, stride, length)
    return ChunkPlan(seq_len, residues, n0, -1, None, n0)


def chunk_layout(pattern: Pattern, seq_len: int,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """(blocked (R * blocks, chunk, keys) bool, True where a candidate pair is NOT attended;
    q_pos (R * blocks, chunk); k_pos (R * blocks, keys)) of :func:`chunk_plan`, cached. Pairs
    outside the sequence are blocked, except that padded queries see themselves (no empty
    softmax row)."""
    if not torch.compiler.is_compiling():
        return _chunk_layout(pattern, seq_len, _device(device))
    if isinstance(seq_len, int):
        return _chunk_layout_constant(pattern, seq_len, device)
    return _chunk_layout_eager(pattern, seq_len, device)


@lru_cache(maxsize=32)
def _chunk_layout(pattern: Pattern, seq_len: int, device: torch.device
                  ) -> tuple[torch.Tensor, ...]:
    p = chunk_plan(pattern, seq_len)
    R, C, nb = p.residues, p.chunk, p.blocks
    r = torch.arange(R)[:, None, None]
    b = torch.arange(nb)[None, :, None]
    sub_q = b * C + torch.arange(C)[None, None, :]  # (1, nb, C) subsequence index
    q_pos = sub_q * R + r  # (R, nb, C)
    if p.band < 0:
        sub_k = torch.arange(p.length)[None, None, :].expand(1, nb, -1)
    else:
        sub_k = b * C - p.band + torch.arange(p.band + C)[None, None, :]
    k_pos = sub_k * R + r
    valid = (sub_k >= 0) & (k_pos < seq_len)
    if p.stride:
        g_pos = (torch.arange(p.globals) * p.stride)[None, None, :].expand(R, nb, -1)
        in_band = g_pos >= (b * C - p.band)  # already a band candidate: never twice
        valid = torch.cat([valid.expand(R, nb, -1), (g_pos < seq_len) & ~in_band], -1)
        k_pos = torch.cat([k_pos.expand(R, nb, -1), g_pos], -1)
    q_pos, k_pos, valid = (t.expand(R, nb, -1) for t in (q_pos, k_pos, valid))
    qp, kp = q_pos[..., :, None], k_pos[..., None, :]
    mask = valid[..., None, :] & pattern.allowed(qp, kp)
    mask |= (qp >= seq_len) & (kp == qp)
    flat = (R * nb, C)
    return (~mask.reshape(*flat, -1).to(device), q_pos.reshape(flat).to(device),
            k_pos.reshape(R * nb, -1).contiguous().to(device))


@torch.compiler.assume_constant_result
def _chunk_layout_constant(pattern: Pattern, seq_len: int, device: torch.device
                           ) -> tuple[torch.Tensor, ...]:
    return _chunk_layout(pattern, seq_len, _device(device))


@torch.compiler.disable
def _chunk_layout_eager(pattern: Pattern, seq_len: int, device: torch.device
                        ) -> tuple[torch.Tensor, ...]:
    return _chunk_layout(pattern, int(seq_len), _device(device))


# --- chunked groups: the batched calls the chunked backend makes -----------------------------

TRIM = 16  # leading band keys a chunk does not attend are dropped in units of this many
GROUP_SHARE = 0.25  # a group holds at least this share of the chunks (each group is one call)


def chunk_groups(pattern: Pattern, seq_len: int, device: torch.device | str = "cpu",
                 groups: int = 1, dtype: torch.dtype = torch.bool) -> tuple[torch.Tensor, ...]:
    """The chunk rows of :func:`chunk_layout` gathered into batched attention calls, cached:
    ``(out_index, q_index_1, k_index_1, allowed_1, q_index_2, ...)``.

    Each row keeps only the band keys from the first one any of its queries attends (rounded
    down to ``TRIM``), so a row whose queries reach back less (the first chunks, the first
    chunks of a block) reads fewer keys. Rows are grouped by that count, rows of a small group
    joining the next larger one (a group has at least ``GROUP_SHARE`` of the rows), so each group is
    one call over (rows, chunk, keys) tiles. Per group: ``q_index`` (rows * chunk) the query
    position of each tile row (padding clamped to the last position), ``k_index`` (rows * keys)
    the key position of each tile column (clamped into the sequence), in column-major order
    (keys, rows: the layout CPU SDPA keeps its K/V in), ``allowed`` (1, rows, groups * chunk,
    keys), True where a query attends a key (pairs outside the sequence are not, except a
    padded query's own column: no empty softmax row), repeated ``groups`` times along the
    queries (GQA: the query heads sharing a key head are stacked on the tile rows); with a
    floating ``dtype`` it is the additive mask instead (0 where True, -inf elsewhere), which
    SDPA would otherwise rebuild from the boolean one on every call. ``out_index``
    (seq_len) is where position p's output lies in the groups' tiles, concatenated in order
    (row-major over groups, rows, chunk)."""
    if not torch.compiler.is_compiling():
        return _chunk_groups(pattern, seq_len, _device(device), groups, dtype)
    if isinstance(seq_len, int):
        return _chunk_groups_constant(pattern, seq_len, device, groups, dtype)
    return _chunk_groups_eager(pattern, seq_len, device, groups, dtype)


def chunk_work(pattern: Pattern, seq_len: int) -> int:
    """(query, key) pairs the chunked backend computes over one head: the tiles of every group
    of :func:`chunk_groups`, padding included."""
    tables = _chunk_groups(pattern, seq_len, torch.device("cpu"), 1, torch.bool)
    return sum(a.shape[1] * a.shape[2] * a.shape[3] for a in tables[3::3])


@lru_cache(maxsize=32)
def _chunk_groups(pattern: Pattern, seq_len: int, device: torch.device, groups: int,
                  dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    p = chunk_plan(pattern, seq_len)
    blocked, q_pos, k_pos = _chunk_layout(pattern, seq_len, torch.device("cpu"))
    rows, C, width = blocked.shape
    banded = p.band + p.chunk if p.band >= 0 else width  # the band's columns (globals after)
    attended = ~blocked[..., :banded] & (q_pos < seq_len)[..., None]
    first = attended.any(1).int().argmax(-1)  # first band column any query attends
    keep = banded - (first // TRIM) * TRIM  # band columns each row keeps
    sizes = sorted(set(keep.tolist()))
    least = max(2, math.ceil(rows * GROUP_SHARE))
    cuts, pending = [], 0
    for size in sizes:
        pending += int((keep == size).sum())
        if pending >= least or size == sizes[-1]:
            cuts.append(size)
            pending = 0
    tables: list[torch.Tensor] = []
    order: list[torch.Tensor] = []
    low = 0
    for size in cuts:
        sel = ((keep > low) & (keep <= size)).nonzero().flatten()
        low = size
        cols = torch.cat([torch.arange(banded - size, banded), torch.arange(banded, width)])
        allowed = ~blocked[sel][:, :, cols]
        allowed = allowed[:, None].expand(-1, groups, -1, -1).reshape(len(sel), groups * C, -1)
        if dtype != torch.bool:
            allowed = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, -torch.inf)
        tables += [q_pos[sel].clamp(max=seq_len - 1).flatten(),
                   k_pos[sel][:, cols].clamp(0, seq_len - 1).t().flatten(), allowed[None]]
        order.append(q_pos[sel].flatten())
    where = torch.cat(order)
    out_index = torch.empty(seq_len, dtype=torch.long)
    real = where < seq_len
    out_index[where[real]] = real.nonzero().flatten()
    return tuple(t.to(device) for t in (out_index, *tables))


@torch.compiler.assume_constant_result
def _chunk_groups_constant(pattern: Pattern, seq_len: int, device: torch.device, groups: int,
                           dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return _chunk_groups(pattern, seq_len, _device(device), groups, dtype)


@torch.compiler.disable
def _chunk_groups_eager(pattern: Pattern, seq_len: int, device: torch.device, groups: int,
                        dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return _chunk_groups(pattern, int(seq_len), _device(device), groups, dtype)
