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
    return Batch(
        ids=ids.to(device, non_blocking=True),
        pos=pos.to(device, non_blocking=True),
        write=write.to(device, non_blocking=True),
        slots=host_tensor(slots, device),
        lengths=host_tensor([r.length for r in rows] + pad, device),
        ancestry=anc.to(device, non_blocking=True),
        kv_len=longest if kv_len is None else max(kv_len, longest),
        sizes=tuple(r.size for r in rows),
        slot_range=(first, first + b) if contiguous else None,
        plain=plain and width is None,
    )


def attention_mask(lengths: torch.Tensor, ancestry: torch.Tensor, kv_len: int) -> torch.Tensor:
    """`[B, 1, T, kv_len]` bool, True where a query may attend: every committed entry of its own
    request, and among this step's nodes (written at `length + j`) its ancestors and itself."""
    t = ancestry.shape[-1]
    rel = torch.arange(kv_len, device=lengths.device)[None, :] - lengths[:, None]  # [B, kv_len]
    committed = rel < 0
    in_step = (rel >= 0) & (rel < t)
    index = rel.clamp(0, t - 1)[:, None, :].expand(-1, t, -1)
    tree = ancestry.gather(2, index) & in_step[:, None, :]
    return (committed[:, None, :] | tree)[:, None]
