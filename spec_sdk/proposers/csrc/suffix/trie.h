/* The compiled core of `suffix_tree.SuffixTree`: the same depth-capped suffix trie with
 * occurrence counts, the same operations, and the same results (drafts, scores to the last
 * bit, sizes), about 10x faster. `suffix_tree.py` is the reference and explains the design;
 * these files only note where the C layout differs:
 *
 * - Nodes are one array of 48-byte structs (the Python columns, side by side: an append
 *   touches count, out and best of a node together, so one cache line instead of six).
 * - A node's children, once it has two, are a `Kids` block: (token, edge) entries in
 *   insertion order with tombstones, like a Python dict, because `_rescan` breaks ties by
 *   dict order (the first maximum wins) and results must not differ. Blocks of more than
 *   LINEAR entries get a hash index; small ones are scanned.
 * - A leaf is ~(slot << 32 | pos) where `slot` is the sequence's row, not its id: rows are
 *   reused after `remove`, which deletes every leaf into the sequence, so leaves never
 *   dangle, and resolving one is an array access instead of a dict lookup.
 * - `_stale` (wide nodes whose best child must be recomputed before a read) is a flag in
 *   the node's Kids block: only nodes with Kids are ever stale.
 *
 * Floating point follows the Python expressions operation by operation (build with
 * -ffp-contract=off so that no multiply-add is fused).
 *
 * Errors: KeyError for an unknown (or, where it must be open, closed) sequence id, like the
 * Python dicts; ValueError/OverflowError for a token outside [0, 2**31 - 1] (checked before
 * anything changes). A MemoryError in the middle of an extend or remove leaves the trie
 * inconsistent, as it would the Python one.
 *
 * The files (one extension module, `spec_sdk.proposers._suffix_core`, built by setup.py):
 *   trie.h    this header: the layout, the small inline helpers, what the files share (sx_*)
 *   kids.c    the two hash tables: Kids blocks (token -> edge) and the sid -> slot map
 *   trie.c    the trie itself: rows, rescan, materialize, extend, remove; its memory
 *   draft.c   drafting: chain, tree, best_draft
 *   check.c   the invariants that `_check()` verifies (tests)
 *   module.c  the Python type and module: argument parsing, list conversion, init
 */
#ifndef SPEC_SDK_SUFFIX_TRIE_H
#define SPEC_SDK_SUFFIX_TRIE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ROOT 0
#define SHIFT 32
#define MASK ((int64_t)0xFFFFFFFF)
#define TOMB (-1)     /* token of a deleted Kids entry (tokens are >= 0) */
#define IX_EMPTY (-1) /* hash index slots */
#define IX_DUMMY (-2)
#define LINEAR 8 /* Kids blocks up to this capacity are scanned, larger ones hashed */
#define MARK_STALE 1
#define MARK_ORPHANED 2

/* What the files share stays out of the module's exported symbols (and, unlike a default
 * visibility symbol in -fPIC code, may still be inlined within its own file). */
#if defined(__GNUC__) && !defined(_WIN32)
#define SX_HIDDEN __attribute__((visibility("hidden")))
#else
#define SX_HIDDEN
#endif

typedef struct {
    int32_t used;  /* entries written, tombstones included */
    int32_t live;  /* len(dict) */
    int32_t cap;   /* entries allocated */
    int32_t hbits; /* log2 of the hash index size; 0: no index */
    int32_t stale; /* in suffix_tree's `_stale` */
    int32_t mark;  /* MARK_* bits, only during `remove` */
    /* then: int64_t edge[cap]; int32_t tok[cap]; int32_t index[1 << hbits] */
} Kids;

typedef struct {
    int64_t count, out, bestc, bestk;
    int32_t best, depth; /* depth -1: a released row awaiting reuse */
    Kids *kids;          /* NULL while the node has at most one child (then it is `best`) */
} Node;

typedef struct {
    int64_t sid;   /* -1: a free row */
    int32_t *toks; /* the sequence */
    int64_t len, cap;
    int64_t *ends; /* NULL once closed */
    int64_t nends, ecap;
} Seq;

typedef struct {
    double negp;
    int64_t order, at, code;
    int32_t tok, d;
} HItem;

typedef struct {
    int64_t cc, edge;
    int32_t tok;
} Pick;

typedef struct {
    int32_t *toks;
    int64_t *parents;
    int64_t n, cap;
} Out;

typedef struct {
    PyObject_HEAD
    int64_t max_depth;
    Node *node;
    int64_t rows, rows_cap;
    int64_t *free_rows;
    int64_t nfree, free_cap;
    Seq *seq;
    int64_t slots, slots_cap;
    int64_t *free_slots;
    int64_t nfree_slots, free_slots_cap;
    int64_t *map_keys; /* sid -> slot, open addressing; key -1: empty */
    int32_t *map_vals;
    int64_t map_cap, nseqs;
    int64_t next_sid;
    int64_t nodes, leaves, tokens;
    /* scratch, reused between calls */
    int64_t *ea, *eb;
    int64_t ecap;
    int32_t *tokbuf;
    int64_t tokbuf_cap;
    int64_t *dead, *stale, *orph;
    int64_t dead_cap, stale_cap, orph_cap;
    HItem *heap;
    int64_t hn, hcap;
    Pick *picks;
    int64_t picks_cap;
    Out cur, best;
} Tree;

/* Tree drafts take siblings only from nodes with at most this many children (suffix_tree.WIDE;
 * module-wide like it, so tests can lower both). Defined in trie.c. */
extern SX_HIDDEN Py_ssize_t sx_wide;

/* -- small helpers, inlined where they are used --------------------------------------------- */
static inline int grow(void **p, int64_t *cap, int64_t need, size_t elsize) {
    if (need <= *cap)
        return 0;
    int64_t n = *cap ? *cap : 8;
    while (n < need)
        n *= 2;
    void *q = PyMem_RawRealloc(*p, (size_t)n * elsize);
    if (!q) {
        PyErr_NoMemory();
        return -1;
    }
    *p = q;
    *cap = n;
    return 0;
}

static inline int64_t leaf_code(int64_t slot, int64_t pos) { return ~(slot << SHIFT | pos); }

static inline int64_t *k_edge(Kids *k) { return (int64_t *)(k + 1); }
static inline int32_t *k_tok(Kids *k) { return (int32_t *)(k_edge(k) + k->cap); }
static inline int32_t *k_index(Kids *k) { return k_tok(k) + k->cap; }
static inline uint32_t k_hash(int32_t tok, int32_t hbits) { return ((uint32_t)tok * 2654435761u) >> (32 - hbits); }

/* The entry of `tok` in `k`, or -1. */
static inline int32_t kids_find(Kids *k, int32_t tok) {
    int32_t *toks = k_tok(k);
    if (!k->hbits) {
        for (int32_t i = 0; i < k->used; i++)
            if (toks[i] == tok)
                return i;
        return -1;
    }
    int32_t *ix = k_index(k);
    uint32_t mask = (1u << k->hbits) - 1;
    for (uint32_t h = k_hash(tok, k->hbits);; h = (h + 1) & mask) {
        int32_t e = ix[h];
        if (e == IX_EMPTY)
            return -1;
        if (e >= 0 && toks[e] == tok)
            return e;
    }
}

SX_HIDDEN void sx_rescan(Tree *t, int64_t x);

/* Recompute a stale node's best child before reading it. */
static inline void fresh(Tree *t, int64_t x) {
    Kids *k = t->node[x].kids;
    if (k && k->stale)
        sx_rescan(t, x);
}

/* -- kids.c: Kids blocks ---------------------------------------------------------------------- */
SX_HIDDEN Kids *sx_kids_alloc(int32_t cap);
SX_HIDDEN void sx_kids_put(Kids *k, int32_t tok, int64_t edge);
SX_HIDDEN int sx_kids_insert(Kids **pk, int32_t tok, int64_t edge);
SX_HIDDEN void sx_kids_delete(Kids *k, int32_t i);

/* -- kids.c: the sid -> slot map ------------------------------------------------------------- */
SX_HIDDEN int64_t sx_map_find(Tree *t, int64_t sid);
SX_HIDDEN int sx_map_put(Tree *t, int64_t sid, int32_t slot);
SX_HIDDEN void sx_map_del(Tree *t, int64_t sid);

/* -- trie.c ------------------------------------------------------------------------------------ */
SX_HIDDEN int64_t sx_slot_of(Tree *t, PyObject *key, int need_open);
SX_HIDDEN int sx_extend(Tree *t, int64_t slot, const int32_t *toks, int64_t n);
SX_HIDDEN int sx_remove(Tree *t, int64_t slot);
SX_HIDDEN void sx_free_all(Tree *t);
SX_HIDDEN int64_t sx_memory_bytes(Tree *t);

/* -- draft.c ----------------------------------------------------------------------------------- */
SX_HIDDEN int sx_chain(Tree *t, int64_t node, int64_t limit, double min_prob, Out *o, double *score_out);
SX_HIDDEN int sx_tree_draft(Tree *t, int64_t node, int64_t limit, double min_prob, int64_t branching, Out *o,
                            double *score_out);
SX_HIDDEN int sx_best_draft(Tree *t, int64_t slot, int64_t limit, double factor, double offset, double min_prob,
                            double best_score, int64_t branching, double *score_out);

/* -- check.c ----------------------------------------------------------------------------------- */
SX_HIDDEN int sx_check(Tree *t);

#endif
