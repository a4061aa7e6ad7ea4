"""One forward's inputs for many requests: a padded `[B, T]` batch where row b holds request b's
root (its last token) and draft nodes, each request with its own cache length and draft shape.

Per request only small tensors are built on the host: token ids, rotary positions (cache length
+ depth in the tree), the cache position each node is written to, and the ancestry matrix of its
nodes. The `[B, 1, T, kv_len]` attention mask is derived from them on the device
(`attention_mask`), so a CUDA graph can rebuild it from its static inputs on replay.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch

from spec_sdk.types import Draft


@attrs.frozen(eq=False)
class Row:
    """One request's part: its slot, committed cache length, root token and draft."""

    slot: int
    length: int
    last_token: int
    draft: Draft | None = None

    @property
    def size(self) -> int:
        return 1 + (0 if self.draft is None else len(self.draft))


@attrs.frozen(eq=False)
class Split:
    """Attention in two passes for a packed batch where only some rows have drafts: every row's
    root over the whole batch (one query each), then the draft nodes of the rows that have them
    (padded to the longest of those). Attention's cost follows the rows' real sizes instead of
    every row padded to the longest draft: on a CPU at batch 64, reading the cache dominates the
    forward and one 8-token exploration would otherwise cost the whole batch a ninefold
    attention."""

    roots: torch.Tensor  # [B] packed index of each row's root
    rows: torch.Tensor  # [S] the rows with drafts
    gather: torch.Tensor  # [S * (T - 1)] packed index of each draft query (padding: the row's root)
    valid: torch.Tensor  # [n] which of those are real nodes...
    dest: torch.Tensor  # [n] ...and their packed index


@attrs.frozen(eq=False)
class Batch:
    ids: torch.Tensor  # [B, T] token ids (0 in padding)
    pos: torch.Tensor  # [B, T] rotary positions
    write: torch.Tensor  # [B, T] cache position of each node (the scratch position in padding)
    slots: torch.Tensor  # [B]
    lengths: torch.Tensor  # [B] committed cache length
    ancestry: torch.Tensor  # [B, T, T] bool: node j is node i's ancestor or itself (padding: the root)
    kv_len: int  # cache positions attention reads: max over rows of length + size
    sizes: tuple[int, ...]  # real nodes per row
    slot_range: tuple[int, int] | None  # rows are exactly slots [a, b) in order: read the cache as a view
    plain: bool  # one row, a chain: attention needs no explicit mask
    # Flat indices (into B*T) of the real nodes when rows differ in size, else None. The forward
    # then runs its matmuls on the real nodes only and pads just for attention: one request with
    # an 8-token draft in a batch of 64 otherwise costs 64 * 9 tokens of matmuls, not 64 + 8.
    real: torch.Tensor | None = None
    split: Split | None = None  # packed, and few rows have drafts: attention in two passes


def _ancestry(parents: Sequence[int] | None, n: int, out: torch.Tensor) -> None:
    """Fill `out[:1 + n, :1 + n]` for the root plus `n` nodes (`parents` None: a chain)."""
    if parents is None or all(p == i - 1 for i, p in enumerate(parents)):
        out[: 1 + n, : 1 + n] = torch.ones(1 + n, 1 + n, dtype=torch.bool).tril_()
        return
    out[0, 0] = True
    for node, parent in enumerate(parents):
        out[1 + node] = out[1 + parent]  # parents come first, so their row is complete
        out[1 + node, 1 + node] = True


def host_tensor(values: Sequence[int], device: torch.device) -> torch.Tensor:
    """int64 values on `device` without a blocking copy: a copy from pageable host memory waits for
    the device to finish its queued work, and a step may wait only once (in verification)."""
    if device.type != "cuda":
        return torch.tensor(values, dtype=torch.long, device=device)
    return torch.tensor(values, dtype=torch.long).pin_memory().to(device, non_blocking=True)


def make_batch(
    rows: Sequence[Row],
    scratch: int,
    device: torch.device,
    width: int | None = None,
    kv_len: int | None = None,
    batch_size: int | None = None,
) -> Batch:
    """`width`, `kv_len` and `batch_size` pad T, the attended cache length and B beyond what the
    rows need (CUDA-graph buckets); by default all are as small as the rows allow. Padding rows
    write only to the scratch position of slot 0 and read nothing they could disturb."""
    need = max(r.size for r in rows)
    t = need if width is None else width
    if t < need:
        raise ValueError(f"a row has {need} nodes, more than the batch width {t}")
    b = len(rows) if batch_size is None else batch_size
    if b < len(rows):
        raise ValueError(f"{len(rows)} rows do not fit a batch of {b}")
    pin = device.type == "cuda"
    ids = torch.zeros(b, t, dtype=torch.long, pin_memory=pin)
    pos = torch.zeros(b, t, dtype=torch.long, pin_memory=pin)
    write = torch.full((b, t), scratch, dtype=torch.long, pin_memory=pin)
    anc = torch.zeros(b, t, t, dtype=torch.bool, pin_memory=pin)
    anc[:, :, 0] = True  # padding rows see only the root, so no row is all masked
    for i, row in enumerate(rows):
        n = row.size - 1
        draft = row.draft
        ids[i, 0] = row.last_token
        if draft is not None and n:
            ids[i, 1 : 1 + n] = torch.tensor(draft.tokens, dtype=torch.long)
        parents = None if draft is None else draft.parents
        _ancestry(parents, n, anc[i])
        # depth of each node = ancestors - 1 (the root itself has depth 0)
        pos[i, : 1 + n] = row.length + anc[i, : 1 + n, : 1 + n].sum(-1) - 1
        write[i, : 1 + n] = torch.arange(row.length, row.length + 1 + n)
    pad = [0] * (b - len(rows))
    slots = [r.slot for r in rows] + pad
    first = slots[0]
    contiguous = slots == list(range(first, first + b))
    longest = max(r.length + r.size for r in rows)
    plain = b == 1 and (rows[0].draft is None or rows[0].draft.is_chain)
    sizes = tuple(r.size for r in rows)
    real = split = None
    if width is None and batch_size is None and any(n != t for n in sizes):
        real = host_tensor([i * t + j for i, n in enumerate(sizes) for j in range(n)], device)
        split = _split(sizes, t, device)
    return Batch(
        ids=ids.to(device, non_blocking=True),
        pos=pos.to(device, non_blocking=True),
        write=write.to(device, non_blocking=True),
        slots=host_tensor(slots, device),
        lengths=host_tensor([r.length for r in rows] + pad, device),
        ancestry=anc.to(device, non_blocking=True),
        kv_len=longest if kv_len is None else max(kv_len, longest),
        sizes=sizes,
        slot_range=(first, first + b) if contiguous else None,
        plain=plain and width is None,
        real=real,
        split=split,
    )


def _split(sizes: Sequence[int], t: int, device: torch.device) -> Split | None:
    """The two-pass plan, when it reads less than one padded pass: the draft pass copies its
    rows' cache, so it pays only while at most half the rows have drafts."""
    spec = [i for i, n in enumerate(sizes) if n > 1]
    if not spec or 2 * len(spec) > len(sizes):
        return None
    starts = [0]
    for n in sizes[:-1]:
        starts.append(starts[-1] + n)
    gather, valid, dest = [], [], []
    for r, i in enumerate(spec):
        for j in range(1, t):
            real = j < sizes[i]
            gather.append(starts[i] + j if real else starts[i])
            if real:
                valid.append(r * (t - 1) + j - 1)
                dest.append(starts[i] + j)
    return Split(*(host_tensor(v, device) for v in (starts, spec, gather, valid, dest)))


def attention_mask(lengths: torch.Tensor, ancestry: torch.Tensor, kv_len: int) -> torch.Tensor:
    """`[B, 1, T, kv_len]` bool, True where a query may attend: every committed entry of its own
    request, and among this step's nodes (written at `length + j`) its ancestors and itself."""
    queries, t = ancestry.shape[-2:]  # queries: the step's nodes, or some of them (a split pass)
    rel = torch.arange(kv_len, device=lengths.device)[None, :] - lengths[:, None]  # [B, kv_len]
    committed = rel < 0
    in_step = (rel >= 0) & (rel < t)
    index = rel.clamp(0, t - 1)[:, None, :].expand(-1, queries, -1)
    tree = ancestry.gather(2, index) & in_step[:, None, :]
    return (committed[:, None, :] | tree)[:, None]
