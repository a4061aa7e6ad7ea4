"""One forward's inputs for many requests: a padded `[B, T]` batch where row b holds request b's
root (its last token) and draft nodes, each request with its own cache length and draft shape.

Per request only small tensors are built on the host: token ids, rotary positions (cache length
+ depth in the tree), the cache position each node is written to, and the ancestry matrix of its
nodes. The `[B, 1, T, kv_len]` attention mask is derived from them on the device
(`attention_mask`), so a CUDA graph can rebuild it from its static inputs on replay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    """Attention in two passes for a packed batch whose rows differ in size: the first `head`
    nodes of every row over the whole batch's cache (rows shorter than that padded), then the
    rest of the longer rows over just those rows' cache. Attention's cost follows the rows' real
    sizes instead of every row padded to the longest: on a CPU at batch 64, reading the cache
    dominates the forward, and one 8-token exploration among 4-token drafts would otherwise cost
    every row of the batch four more queries (`head` 1 is the case of a few rows with drafts)."""

    head: int  # nodes per row in the first pass
    head_gather: torch.Tensor  # [B * head] packed index of each first-pass query (padding: the row's root)
    head_valid: torch.Tensor | None  # [m] which of those are real nodes (None: all)...
    head_dest: torch.Tensor  # [m] ...and their packed index
    rows: torch.Tensor  # [S] the rows longer than `head`
    gather: torch.Tensor  # [S * (T - head)] packed index of each second-pass query (padding: the root)
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
    # (Followed by a few padding nodes where `make_batch`'s `rows_for` asks for more rows.)
    real: torch.Tensor | None = None
    split: Split | None = None  # packed, and a few long rows: attention in two passes


    @property
    def nodes(self) -> int:
        """Real nodes: the first rows of a packed forward's output, or all of a dense one's."""
        return sum(self.sizes)


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
    rows_for: Callable[[int], int] | None = None,
) -> Batch:
    """`width`, `kv_len` and `batch_size` pad T, the attended cache length and B beyond what the
    rows need (CUDA-graph buckets); by default all are as small as the rows allow. Padding rows
    write only to the scratch position of slot 0 and read nothing they could disturb.
    `rows_for(n)`: how many rows a packed forward of n real nodes should run at (CPU matmul
    kernels are built per row count: spec_sdk.backends.native.cpu.ROW_STEP); the rest are
    padding nodes, which write only to their row's scratch position."""
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
        index = [i * t + j for i, n in enumerate(sizes) for j in range(n)]
        extra = (rows_for(len(index)) if rows_for is not None else len(index)) - len(index)
        if 0 < extra <= b * t - len(index):
            index += [i * t + j for i, n in enumerate(sizes) for j in range(n, t)][:extra]
        real = host_tensor(index, device)
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


# Attention's cost on a CPU, in queries' worth: a pass over R rows of q queries each costs about
# R * (q + _ROW) (64 rows at kv 155, one thread: 2, 8, 16 and 32 queries a row took 2.5, 3.6,
# 5.9 and 10.3 ms; one query 1.8 ms), and a row in the second pass also has its cache copied
# out, about _COPY. The split is taken only where it saves a twentieth or more: nearer a tie the
# model's error decides (benchmarks/attention_split.py times both).
_ROW = 7
_COPY = 1
_MARGIN = 0.95


def _split(sizes: Sequence[int], t: int, device: torch.device) -> Split | None:
    head = split_head(sizes, t)
    return split_plan(sizes, t, head, device) if head else None


def split_head(sizes: Sequence[int], t: int) -> int:
    """The first-pass width of the two-pass plan whose attention costs least, or 0 where one
    padded pass costs about as little (see _ROW)."""
    b = len(sizes)
    best, head = _MARGIN * b * (t + _ROW), 0
    for h in sorted(set(sizes)):
        if h >= t:
            break
        cost = b * (h + _ROW) + sum(1 for n in sizes if n > h) * (t - h + _ROW + _COPY)
        if cost < best:
            best, head = cost, h
    return head


def split_plan(sizes: Sequence[int], t: int, head: int, device: torch.device) -> Split:
    """The two passes' index tensors for a first-pass width `head` (0 < head < T)."""
    starts = [0]
    for n in sizes[:-1]:
        starts.append(starts[-1] + n)

    def one_pass(rows: Sequence[int], lo: int, hi: int) -> tuple[list[int], list[int], list[int]]:
        """Nodes lo..hi-1 of each row: each query's packed index (padding: the row's root), and
        which of those queries are real nodes, with their packed index."""
        gather, valid, dest = [], [], []
        for r, i in enumerate(rows):
            for j in range(lo, hi):
                real = j < sizes[i]
                gather.append(starts[i] + j if real else starts[i])
                if real:
                    valid.append(r * (hi - lo) + j - lo)
                    dest.append(starts[i] + j)
        return gather, valid, dest

    head_gather, head_valid, head_dest = one_pass(range(len(sizes)), 0, head)
    long_rows = [i for i, n in enumerate(sizes) if n > head]
    gather, valid, dest = one_pass(long_rows, head, t)
    every = len(head_valid) == len(head_gather)
    return Split(
        head,
        host_tensor(head_gather, device),
        None if every else host_tensor(head_valid, device),
        host_tensor(head_dest, device),
        *(host_tensor(v, device) for v in (long_rows, gather, valid, dest)),
    )


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
