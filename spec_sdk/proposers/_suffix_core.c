/* The compiled core of `suffix_tree.SuffixTree`: the same depth-capped suffix trie with
 * occurrence counts, the same operations, and the same results (drafts, scores to the last
 * bit, sizes), about 10x faster. `suffix_tree.py` is the reference and explains the design;
 * this file only notes where the C layout differs:
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
 */
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

/* Tree drafts take siblings only from nodes with at most this many children (suffix_tree.WIDE;
 * module-wide like it, so tests can lower both). */
static Py_ssize_t g_wide = 32;

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

/* -- small helpers ------------------------------------------------------------------------ */
static int grow(void **p, int64_t *cap, int64_t need, size_t elsize) {
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

/* -- Kids: an insertion-ordered token -> edge map --------------------------------------- */
static inline int64_t *k_edge(Kids *k) { return (int64_t *)(k + 1); }
static inline int32_t *k_tok(Kids *k) { return (int32_t *)(k_edge(k) + k->cap); }
static inline int32_t *k_index(Kids *k) { return k_tok(k) + k->cap; }
static inline uint32_t k_hash(int32_t tok, int32_t hbits) { return ((uint32_t)tok * 2654435761u) >> (32 - hbits); }

static Kids *kids_alloc(int32_t cap) {
    int32_t hbits = 0;
    if (cap > LINEAR)
        for (hbits = 1; (1 << hbits) < 2 * cap; hbits++) /* load <= 1/2 */
            ;
    size_t hcap = hbits ? (size_t)1 << hbits : 0;
    Kids *k = PyMem_RawMalloc(sizeof(Kids) + (size_t)cap * 12 + hcap * 4);
    if (!k) {
        PyErr_NoMemory();
        return NULL;
    }
    k->used = k->live = 0;
    k->cap = cap;
    k->hbits = hbits;
    k->stale = k->mark = 0;
    if (hcap)
        memset(k_index(k), 0xff, hcap * 4); /* IX_EMPTY */
    return k;
}

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

/* Append (tok, edge), which must be absent: at the end of the order, like a dict. */
static void kids_put(Kids *k, int32_t tok, int64_t edge) {
    int32_t i = k->used++;
    k_tok(k)[i] = tok;
    k_edge(k)[i] = edge;
    k->live++;
    if (k->hbits) {
        int32_t *ix = k_index(k);
        uint32_t mask = (1u << k->hbits) - 1;
        uint32_t h = k_hash(tok, k->hbits);
        while (ix[h] >= 0)
            h = (h + 1) & mask;
        ix[h] = i;
    }
}

/* A copy without tombstones (same order), with room for `need` entries and slack. */
static Kids *kids_resize(Kids *k, int32_t need) {
    int32_t cap = 2;
    while (cap < need + need / 2)
        cap *= 2;
    Kids *n = kids_alloc(cap);
    if (!n)
        return NULL;
    int32_t *toks = k_tok(k);
    int64_t *edges = k_edge(k);
    for (int32_t i = 0; i < k->used; i++)
        if (toks[i] != TOMB)
            kids_put(n, toks[i], edges[i]);
    n->stale = k->stale;
    n->mark = k->mark;
    PyMem_RawFree(k);
    return n;
}

static int kids_insert(Kids **pk, int32_t tok, int64_t edge) {
    Kids *k = *pk;
    if (k->used == k->cap) {
        k = kids_resize(k, k->live + 1);
        if (!k)
            return -1;
        *pk = k;
    }
    kids_put(k, tok, edge);
    return 0;
}

static void kids_delete(Kids *k, int32_t i) {
    int32_t *toks = k_tok(k);
    if (k->hbits) {
        int32_t *ix = k_index(k);
        uint32_t mask = (1u << k->hbits) - 1;
        uint32_t h = k_hash(toks[i], k->hbits);
        while (ix[h] != i)
            h = (h + 1) & mask;
        ix[h] = IX_DUMMY; /* keeps the probe chains through it intact */
    }
    toks[i] = TOMB;
    k->live--;
}

/* -- sid -> slot map ----------------------------------------------------------------------- */
static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static int64_t map_find(Tree *t, int64_t sid) {
    if (!t->map_cap || sid < 0)
        return -1;
    uint64_t mask = (uint64_t)t->map_cap - 1;
    for (uint64_t h = mix64((uint64_t)sid) & mask;; h = (h + 1) & mask) {
        if (t->map_keys[h] == sid)
            return t->map_vals[h];
        if (t->map_keys[h] == -1)
            return -1;
    }
}

static void map_put_raw(int64_t *keys, int32_t *vals, int64_t cap, int64_t sid, int32_t slot) {
    uint64_t mask = (uint64_t)cap - 1;
    uint64_t h = mix64((uint64_t)sid) & mask;
    while (keys[h] != -1)
        h = (h + 1) & mask;
    keys[h] = sid;
    vals[h] = slot;
}

static int map_put(Tree *t, int64_t sid, int32_t slot) {
    if (2 * (t->nseqs + 1) > t->map_cap) {
        int64_t cap = t->map_cap ? 2 * t->map_cap : 16;
        int64_t *keys = PyMem_RawMalloc((size_t)cap * sizeof(int64_t));
        int32_t *vals = PyMem_RawMalloc((size_t)cap * sizeof(int32_t));
        if (!keys || !vals) {
            PyMem_RawFree(keys);
            PyMem_RawFree(vals);
            PyErr_NoMemory();
            return -1;
        }
        memset(keys, 0xff, (size_t)cap * sizeof(int64_t));
        for (int64_t i = 0; i < t->map_cap; i++)
            if (t->map_keys[i] != -1)
                map_put_raw(keys, vals, cap, t->map_keys[i], t->map_vals[i]);
        PyMem_RawFree(t->map_keys);
        PyMem_RawFree(t->map_vals);
        t->map_keys = keys;
        t->map_vals = vals;
        t->map_cap = cap;
    }
    map_put_raw(t->map_keys, t->map_vals, t->map_cap, sid, slot);
    return 0;
}

static void map_del(Tree *t, int64_t sid) {
    uint64_t mask = (uint64_t)t->map_cap - 1;
    uint64_t i = mix64((uint64_t)sid) & mask;
    while (t->map_keys[i] != sid)
        i = (i + 1) & mask;
    /* Backward-shift deletion: no tombstones, so lookups stay short under FIFO churn. */
    for (uint64_t j = i;;) {
        j = (j + 1) & mask;
        if (t->map_keys[j] == -1)
            break;
        uint64_t home = mix64((uint64_t)t->map_keys[j]) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            t->map_keys[i] = t->map_keys[j];
            t->map_vals[i] = t->map_vals[j];
            i = j;
        }
    }
    t->map_keys[i] = -1;
}

/* -- rows ------------------------------------------------------------------------------------ */
static int64_t node_alloc(Tree *t) {
    if (t->nfree)
        return t->free_rows[--t->nfree];
    if (grow((void **)&t->node, &t->rows_cap, t->rows + 1, sizeof(Node)) < 0)
        return -1;
    return t->rows++;
}

static void release(Tree *t, int64_t x) {
    Node *n = &t->node[x];
    PyMem_RawFree(n->kids); /* also drops it from `_stale` */
    n->kids = NULL;
    n->depth = -1;
    t->free_rows[t->nfree++] = x; /* room reserved by remove_slot */
    t->nodes--;
}

static void rescan(Tree *t, int64_t x) {
    Node *n = &t->node[x];
    int32_t bt = -1;
    int64_t bc = 0, bk = 0;
    Kids *k = n->kids;
    if (k) {
        k->stale = 0;
        int32_t *toks = k_tok(k);
        int64_t *edges = k_edge(k);
        for (int32_t i = 0; i < k->used; i++) { /* in insertion order: ties keep the older */
            if (toks[i] == TOMB)
                continue;
            int64_t c = edges[i];
            int64_t cc = c >= 0 ? t->node[c].count : 1;
            if (cc > bc) {
                bt = toks[i];
                bc = cc;
                bk = c;
            }
        }
    } else if (n->bestc) {
        int64_t c = n->bestk;
        int64_t cc = c >= 0 ? t->node[c].count : 1;
        if (cc > 0) {
            bt = n->best;
            bc = cc;
            bk = c;
        }
    }
    n->best = bt;
    n->bestc = bc;
    n->bestk = bk;
}

static inline void fresh(Tree *t, int64_t x) {
    Kids *k = t->node[x].kids;
    if (k && k->stale)
        rescan(t, x);
}

/* Turn the leaf `parent -tok->` into an explicit node; returns its id, or -1 on error. */
static int64_t materialize(Tree *t, int64_t parent, int32_t tok, int64_t code) {
    int64_t v = ~code;
    int64_t slot = v >> SHIFT, pos = v & MASK;
    int32_t depth = t->node[parent].depth + 1;
    Seq *s = &t->seq[slot];
    int64_t out, bestc, bestk;
    int32_t best;
    if (pos + 1 < s->len && depth < t->max_depth) {
        out = 1;
        best = s->toks[pos + 1];
        bestc = 1;
        bestk = leaf_code(slot, pos + 1);
    } else {
        out = 0;
        best = -1;
        bestc = bestk = 0;
        t->leaves--;
    }
    int64_t x = node_alloc(t);
    if (x < 0)
        return -1;
    t->nodes++;
    Node *n = &t->node[x];
    n->kids = NULL;
    n->count = 1;
    n->out = out;
    n->best = best;
    n->bestc = bestc;
    n->bestk = bestk;
    n->depth = depth;
    Node *p = &t->node[parent];
    if (p->kids) {
        int32_t i = kids_find(p->kids, tok); /* present: it is the leaf being replaced */
        if (i >= 0)
            k_edge(p->kids)[i] = x;
    }
    if (p->best == tok)
        p->bestk = x;
    if (!out && s->ends && pos + 1 == s->len && s->nends == depth && depth < t->max_depth) {
        /* It was the unique context at the end of open sequence `slot`: now explicit, it is
         * that sequence's next end context. */
        if (grow((void **)&s->ends, &s->ecap, s->nends + 1, sizeof(int64_t)) < 0)
            return -1;
        s->ends[s->nends++] = x;
    }
    return x;
}

/* -- sequences --------------------------------------------------------------------------- */
static int64_t slot_of(Tree *t, PyObject *key, int need_open) {
    int overflow = 0;
    long long sid = PyLong_Check(key) ? PyLong_AsLongLongAndOverflow(key, &overflow) : -1;
    if (sid == -1 && PyErr_Occurred())
        return -1;
    int64_t slot = overflow ? -1 : map_find(t, (int64_t)sid);
    if (slot < 0 || (need_open && !t->seq[slot].ends)) {
        PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    return slot;
}

static int scratch_ends(Tree *t, int64_t need) {
    if (need <= t->ecap)
        return 0;
    int64_t ca = t->ecap, cb = t->ecap;
    if (grow((void **)&t->ea, &ca, need, sizeof(int64_t)) < 0 || grow((void **)&t->eb, &cb, need, sizeof(int64_t)) < 0)
        return -1;
    t->ecap = ca < cb ? ca : cb;
    return 0;
}

/* Append toks[0:n] to open sequence `slot`: see SuffixTree.extend. */
static int extend_slot(Tree *t, int64_t slot, const int32_t *toks, int64_t n) {
    Seq *s = &t->seq[slot];
    if (s->len + n > MASK) {
        PyErr_SetString(PyExc_OverflowError, "a sequence holds at most 2**32 - 1 tokens");
        return -1;
    }
    if (grow((void **)&s->toks, &s->cap, s->len + n, sizeof(int32_t)) < 0)
        return -1;
    int64_t need = s->nends + n + 1;
    if (need > t->max_depth + 1)
        need = t->max_depth + 1;
    if (need < s->nends + 1)
        need = s->nends + 1;
    if (scratch_ends(t, need) < 0)
        return -1;
    int64_t *ends = t->ea, *next = t->eb;
    int64_t ne = s->nends;
    memcpy(ends, s->ends, (size_t)ne * sizeof(int64_t));
    int64_t max_depth = t->max_depth, leaves = 0, pos = s->len, start = pos;
    for (int64_t j = 0; j < n; j++, pos++) {
        int32_t tok = toks[j];
        s = &t->seq[slot];
        s->toks[pos] = tok;
        s->len = pos + 1;
        int64_t nn = 0, leaf = 0;
        next[nn++] = ROOT;
        for (int64_t i = 0; i < ne; i++) {
            int64_t e = ends[i];
            Node *x = &t->node[e];
            x->out++;
            int64_t c;
            if (x->best == tok) {
                /* Fast path, the usual case in repeated text: the most frequent child. */
                c = x->bestk;
                if (c < 0) {
                    c = materialize(t, e, tok, c);
                    if (c < 0)
                        return -1;
                    x = &t->node[e]; /* the rows may have moved */
                }
                int64_t cnt = t->node[c].count + 1;
                t->node[c].count = x->bestc = cnt;
                next[nn++] = c;
                continue;
            }
            Kids *k = x->kids;
            int32_t idx = k ? kids_find(k, tok) : -1;
            if (idx < 0) {
                /* Unseen after this context, so after every longer one too: each gets a leaf. */
                if (!leaf)
                    leaf = leaf_code(slot, pos);
                leaves++;
                if (k) {
                    if (kids_insert(&x->kids, tok, leaf) < 0)
                        return -1;
                } else if (x->bestc) {
                    Kids *nk = kids_alloc(2); /* a second child: now a Kids block */
                    if (!nk)
                        return -1;
                    kids_put(nk, x->best, x->bestk);
                    kids_put(nk, tok, leaf);
                    x->kids = nk;
                }
                if (!x->bestc) {
                    x->best = tok;
                    x->bestc = 1;
                    x->bestk = leaf;
                }
                continue;
            }
            c = k_edge(k)[idx];
            if (c < 0) {
                c = materialize(t, e, tok, c);
                if (c < 0)
                    return -1;
                x = &t->node[e];
            }
            int64_t cnt = t->node[c].count + 1;
            t->node[c].count = cnt;
            if (cnt > x->bestc) {
                x->best = tok;
                x->bestc = cnt;
                x->bestk = c;
            }
            next[nn++] = c;
        }
        if (nn > max_depth) /* a context of max_depth tokens cannot be extended */
            nn = max_depth;
        int64_t *tmp = ends;
        ends = next;
        next = tmp;
        ne = nn;
    }
    /* Only now: `materialize` may append to the ends of other sequences, never of this one. */
    s = &t->seq[slot];
    if (grow((void **)&s->ends, &s->ecap, ne, sizeof(int64_t)) < 0)
        return -1;
    memcpy(s->ends, ends, (size_t)ne * sizeof(int64_t));
    s->nends = ne;
    t->leaves += leaves;
    t->tokens += pos - start;
    return 0;
}

static int remove_slot(Tree *t, int64_t slot) {
    Seq *s = &t->seq[slot];
    int64_t len = s->len, max_depth = t->max_depth;
    /* `next` holds the root and children of depth < max_depth: one per length */
    if (scratch_ends(t, len + 2 < max_depth + 1 ? len + 2 : max_depth + 1) < 0)
        return -1;
    int64_t ndead = 0, nstale = 0, norph = 0;
    int64_t *ends = t->ea, *next = t->eb;
    int64_t ne = 1;
    ends[0] = ROOT;
    for (int64_t p = 0; p < len; p++) {
        int32_t tok = s->toks[p];
        int64_t nn = 0;
        next[nn++] = ROOT;
        for (int64_t i = 0; i < ne; i++) {
            int64_t e = ends[i];
            Node *x = &t->node[e];
            Kids *k = x->kids;
            int32_t idx = -1;
            int64_t c;
            if (k) {
                idx = kids_find(k, tok);
                if (idx < 0) {
                    PyErr_SetString(PyExc_SystemError, "suffix trie: missing child in remove");
                    return -1;
                }
                c = k_edge(k)[idx];
            } else {
                c = x->bestk;
            }
            x->out--;
            int64_t cnt = 0; /* a leaf holds exactly this occurrence */
            if (c >= 0) {
                cnt = t->node[c].count - 1;
                t->node[c].count = cnt;
            } else {
                t->leaves--;
            }
            if (k) {
                if (!cnt)
                    kids_delete(k, idx);
                if (x->best == tok) {
                    /* Its best child lost a count (another may lead now), or is gone. */
                    int bit = cnt ? MARK_STALE : MARK_ORPHANED;
                    if (!(k->mark & bit)) {
                        k->mark |= bit;
                        int64_t **v = cnt ? &t->stale : &t->orph;
                        int64_t *cap = cnt ? &t->stale_cap : &t->orph_cap;
                        int64_t *nv = cnt ? &nstale : &norph;
                        if (grow((void **)v, cap, *nv + 1, sizeof(int64_t)) < 0)
                            return -1;
                        (*v)[(*nv)++] = e;
                    }
                }
            } else if (cnt) {
                x->bestc = cnt; /* the only child stays the best */
            } else {
                x->best = -1;
                x->bestc = x->bestk = 0;
            }
            if (c >= 0) {
                if (!cnt) {
                    /* released at the end: this sequence's next contexts still go through it */
                    if (grow((void **)&t->dead, &t->dead_cap, ndead + 1, sizeof(int64_t)) < 0)
                        return -1;
                    t->dead[ndead++] = c;
                }
                if (t->node[c].depth < max_depth)
                    next[nn++] = c; /* even at count 0: its children are this sequence's too */
            }
        }
        int64_t *tmp = ends;
        ends = next;
        next = tmp;
        ne = nn;
    }
    if (grow((void **)&t->free_rows, &t->free_cap, t->nfree + ndead, sizeof(int64_t)) < 0)
        return -1;
    for (int64_t i = 0; i < ndead; i++)
        release(t, t->dead[i]);
    /* Deferred so that a node is rescanned once per removal, not once per occurrence. */
    for (int64_t i = 0; i < norph; i++) {
        int64_t n = t->orph[i];
        if (t->node[n].depth >= 0)
            rescan(t, n);
    }
    for (int64_t i = 0; i < nstale; i++) {
        int64_t n = t->stale[i];
        if (t->node[n].depth < 0)
            continue;
        Kids *k = t->node[n].kids;
        if (k->mark & MARK_ORPHANED)
            continue; /* rescanned above */
        if (k->live > g_wide)
            k->stale = 1; /* still a valid child, just maybe no longer the best */
        else
            rescan(t, n);
    }
    for (int64_t i = 0; i < norph; i++)
        if (t->node[t->orph[i]].depth >= 0)
            t->node[t->orph[i]].kids->mark = 0;
    for (int64_t i = 0; i < nstale; i++)
        if (t->node[t->stale[i]].depth >= 0)
            t->node[t->stale[i]].kids->mark = 0;
    s = &t->seq[slot];
    t->tokens -= len;
    PyMem_RawFree(s->toks);
    PyMem_RawFree(s->ends);
    map_del(t, s->sid);
    memset(s, 0, sizeof(Seq));
    s->sid = -1;
    t->free_slots[t->nfree_slots++] = slot; /* room reserved in add() */
    t->nseqs--;
    return 0;
}

/* -- drafting -------------------------------------------------------------------------------- */
static inline int out_push(Out *o, int32_t tok, int64_t parent) {
    if (o->n == o->cap) {
        int64_t cap = o->cap ? 2 * o->cap : 64;
        int32_t *tk = PyMem_RawRealloc(o->toks, (size_t)cap * sizeof(int32_t));
        if (!tk) {
            PyErr_NoMemory();
            return -1;
        }
        o->toks = tk;
        int64_t *pa = PyMem_RawRealloc(o->parents, (size_t)cap * sizeof(int64_t));
        if (!pa) {
            PyErr_NoMemory();
            return -1;
        }
        o->parents = pa;
        o->cap = cap;
    }
    o->toks[o->n] = tok;
    o->parents[o->n++] = parent;
    return 0;
}

/* SuffixTree.chain: greedy continuation of `node`. */
static int chain(Tree *t, int64_t node, int64_t limit, double min_prob, Out *o, double *score_out) {
    double p = 1.0, score = 0.0;
    o->n = 0;
    while (o->n < limit) {
        Node *x = &t->node[node];
        int64_t out = x->out;
        if (!out)
            break;
        fresh(t, node);
        p *= (double)x->bestc / (double)out;
        if (p < min_prob)
            break;
        if (out_push(o, x->best, 0) < 0)
            return -1;
        score += p;
        int64_t c = x->bestk;
        if (c < 0) {
            /* A leaf: one occurrence, so each further token has probability 1 (up to depth). */
            int64_t v = ~c;
            Seq *s = &t->seq[v >> SHIFT];
            int64_t pos = v & MASK;
            int64_t room = limit - o->n, r2 = t->max_depth - x->depth - 1;
            if (r2 < room)
                room = r2;
            int64_t end = pos + 1 + (room > 0 ? room : 0);
            if (end > s->len)
                end = s->len;
            int64_t more = end > pos + 1 ? end - pos - 1 : 0;
            for (int64_t i = pos + 1; i < end; i++)
                if (out_push(o, s->toks[i], 0) < 0)
                    return -1;
            score += p * (double)more;
            break;
        }
        node = c;
    }
    *score_out = score;
    return 0;
}

static inline int h_less(const HItem *a, const HItem *b) {
    return a->negp < b->negp || (a->negp == b->negp && a->order < b->order);
}

static int heap_push(Tree *t, HItem it) {
    if (grow((void **)&t->heap, &t->hcap, t->hn + 1, sizeof(HItem)) < 0)
        return -1;
    int64_t i = t->hn++;
    while (i > 0) {
        int64_t up = (i - 1) / 2;
        if (!h_less(&it, &t->heap[up]))
            break;
        t->heap[i] = t->heap[up];
        i = up;
    }
    t->heap[i] = it;
    return 0;
}

static HItem heap_pop(Tree *t) {
    HItem top = t->heap[0], last = t->heap[--t->hn];
    int64_t i = 0, n = t->hn;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && h_less(&t->heap[c + 1], &t->heap[c]))
            c++;
        if (!h_less(&t->heap[c], &last))
            break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (n)
        t->heap[i] = last;
    return top;
}

/* SuffixTree.tree's expand(): push the options (SuffixTree._options) after `code`. */
static int expand(Tree *t, int64_t code, int32_t d, double p, int64_t at, int64_t branching, double min_prob,
                  int64_t *order) {
    if (d >= t->max_depth)
        return 0;
    if (code < 0) { /* inside a leaf's chain: the next token of its one occurrence */
        int64_t v = ~code;
        int64_t slot = v >> SHIFT, pos = v & MASK;
        Seq *s = &t->seq[slot];
        if (pos + 1 < s->len && p * 1.0 >= min_prob) {
            HItem it = {-p * 1.0, (*order)++, at, leaf_code(slot, pos + 1), s->toks[pos + 1], d + 1};
            return heap_push(t, it);
        }
        return 0;
    }
    Node *x = &t->node[code];
    int64_t out = x->out;
    if (!out)
        return 0;
    fresh(t, code);
    if (grow((void **)&t->picks, &t->picks_cap, 1, sizeof(Pick)) < 0)
        return -1;
    int64_t np = 1;
    int32_t top = x->best;
    t->picks[0].tok = top;
    t->picks[0].edge = x->bestk;
    t->picks[0].cc = x->bestc;
    Kids *k = x->kids;
    if (branching > 1 && k && k->live <= g_wide) {
        if (grow((void **)&t->picks, &t->picks_cap, 1 + k->live, sizeof(Pick)) < 0)
            return -1;
        Pick *rest = t->picks + 1;
        int64_t nr = 0;
        int32_t *toks = k_tok(k);
        int64_t *edges = k_edge(k);
        for (int32_t i = 0; i < k->used; i++) {
            if (toks[i] == TOMB || toks[i] == top)
                continue;
            int64_t c = edges[i];
            rest[nr].cc = c >= 0 ? t->node[c].count : 1;
            rest[nr].tok = toks[i];
            rest[nr++].edge = c;
        }
        /* heapq.nlargest(branching - 1, (count, token, edge)): tokens are distinct */
        int64_t want = branching - 1 < nr ? branching - 1 : nr;
        for (int64_t i = 0; i < want; i++) {
            int64_t b = i;
            for (int64_t j = i + 1; j < nr; j++)
                if (rest[j].cc > rest[b].cc || (rest[j].cc == rest[b].cc && rest[j].tok > rest[b].tok))
                    b = j;
            Pick tmp = rest[i];
            rest[i] = rest[b];
            rest[b] = tmp;
        }
        np += want;
    }
    for (int64_t i = 0; i < np; i++) {
        Pick pk = t->picks[i];
        double q = (double)pk.cc / (double)out;
        if (p * q >= min_prob) {
            HItem it = {-p * q, (*order)++, at, pk.edge, pk.tok, d + 1};
            if (heap_push(t, it) < 0)
                return -1;
        }
    }
    return 0;
}

/* SuffixTree.tree: best-first tree below `node`. */
static int tree_draft(Tree *t, int64_t node, int64_t limit, double min_prob, int64_t branching, Out *o,
                      double *score_out) {
    double score = 0.0;
    int64_t order = 0;
    o->n = 0;
    t->hn = 0;
    if (expand(t, node, t->node[node].depth, 1.0, -1, branching, min_prob, &order) < 0)
        return -1;
    while (t->hn && o->n < limit) {
        HItem it = heap_pop(t);
        if (out_push(o, it.tok, it.at) < 0)
            return -1;
        score -= it.negp;
        if (expand(t, it.code, it.d, -it.negp, o->n - 1, branching, min_prob, &order) < 0)
            return -1;
    }
    *score_out = score;
    return 0;
}

static PyObject *list_of_toks(const int32_t *v, int64_t n) {
    PyObject *l = PyList_New((Py_ssize_t)n);
    if (!l)
        return NULL;
    for (int64_t i = 0; i < n; i++) {
        PyObject *x = PyLong_FromLong(v[i]);
        if (!x) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, x);
    }
    return l;
}

static PyObject *list_of_i64(const int64_t *v, int64_t n) {
    PyObject *l = PyList_New((Py_ssize_t)n);
    if (!l)
        return NULL;
    for (int64_t i = 0; i < n; i++) {
        PyObject *x = PyLong_FromLongLong(v[i]);
        if (!x) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, x);
    }
    return l;
}

/* int(v) for the draft cap: Python's errors for nan/inf; huge values clamp (only compared). */
static int cap_of(double v, int64_t *out) {
    if (isnan(v)) {
        PyErr_SetString(PyExc_ValueError, "cannot convert float NaN to integer");
        return -1;
    }
    if (isinf(v)) {
        PyErr_SetString(PyExc_OverflowError, "cannot convert float infinity to integer");
        return -1;
    }
    if (v >= 9.0e18)
        *out = INT64_MAX;
    else if (v <= -9.0e18)
        *out = INT64_MIN / 2;
    else
        *out = (int64_t)v; /* truncates toward zero, like int() */
    return 0;
}

/* -- the Python type --------------------------------------------------------------------------- */
static void tree_free_all(Tree *t) {
    if (t->node)
        for (int64_t i = 0; i < t->rows; i++)
            PyMem_RawFree(t->node[i].kids);
    if (t->seq)
        for (int64_t i = 0; i < t->slots; i++) {
            PyMem_RawFree(t->seq[i].toks);
            PyMem_RawFree(t->seq[i].ends);
        }
    void *bufs[] = {t->node, t->free_rows, t->seq, t->free_slots, t->map_keys, t->map_vals, t->ea, t->eb,
                    t->tokbuf, t->dead, t->stale, t->orph, t->heap, t->picks, t->cur.toks, t->cur.parents,
                    t->best.toks, t->best.parents};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        PyMem_RawFree(bufs[i]);
    /* zero everything after the object header */
    memset((char *)t + offsetof(Tree, max_depth), 0, sizeof(Tree) - offsetof(Tree, max_depth));
}

static int Tree_init(Tree *t, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"max_depth", NULL};
    long long max_depth;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L:SuffixTree", kwlist, &max_depth))
        return -1;
    if (max_depth < 1 || max_depth > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "max_depth must be in [1, 2**31 - 1], got %lld", max_depth);
        return -1;
    }
    tree_free_all(t);
    t->max_depth = max_depth;
    if (grow((void **)&t->node, &t->rows_cap, 1024, sizeof(Node)) < 0)
        return -1;
    Node *root = &t->node[0];
    memset(root, 0, sizeof(Node));
    root->count = 1; /* a sentinel that keeps it alive */
    root->best = -1;
    t->rows = 1;
    t->nodes = 1;
    return 0;
}

static void Tree_dealloc(Tree *t) {
    tree_free_all(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static int ready(Tree *t) {
    if (!t->node) {
        PyErr_SetString(PyExc_RuntimeError, "SuffixTree.__init__ was not called");
        return -1;
    }
    return 0;
}

static PyObject *Tree_add(Tree *t, PyObject *unused) {
    if (ready(t) < 0)
        return NULL;
    if (t->nseqs >= INT32_MAX) { /* a leaf holds the row in 31 bits */
        PyErr_SetString(PyExc_OverflowError, "too many sequences");
        return NULL;
    }
    int64_t slot = t->nfree_slots ? t->free_slots[t->nfree_slots - 1] : t->slots;
    /* Room for the row, for its entry in the free list (so that remove() cannot fail on it),
     * for its first ends and in the map, before anything changes. */
    if (slot == t->slots && grow((void **)&t->seq, &t->slots_cap, t->slots + 1, sizeof(Seq)) < 0)
        return NULL;
    if (grow((void **)&t->free_slots, &t->free_slots_cap, t->slots + 1, sizeof(int64_t)) < 0)
        return NULL;
    int64_t *ends = PyMem_RawMalloc(8 * sizeof(int64_t));
    if (!ends)
        return PyErr_NoMemory();
    if (map_put(t, t->next_sid, (int32_t)slot) < 0) {
        PyMem_RawFree(ends);
        return NULL;
    }
    if (slot == t->slots)
        t->slots++;
    else
        t->nfree_slots--;
    Seq *s = &t->seq[slot];
    memset(s, 0, sizeof(Seq));
    s->ends = ends;
    s->ecap = 8;
    s->ends[0] = ROOT;
    s->nends = 1;
    s->sid = t->next_sid++;
    t->nseqs++;
    return PyLong_FromLongLong(s->sid);
}

static PyObject *Tree_close(Tree *t, PyObject *key) {
    if (ready(t) < 0)
        return NULL;
    int overflow = 0;
    long long sid = PyLong_Check(key) ? PyLong_AsLongLongAndOverflow(key, &overflow) : -1;
    if (sid == -1 && PyErr_Occurred())
        return NULL;
    int64_t slot = overflow ? -1 : map_find(t, sid);
    if (slot >= 0 && t->seq[slot].ends) {
        Seq *s = &t->seq[slot];
        PyMem_RawFree(s->ends);
        s->ends = NULL;
        s->nends = s->ecap = 0;
        if (s->cap > s->len) { /* it will not grow again */
            int32_t *toks = PyMem_RawRealloc(s->toks, (size_t)(s->len ? s->len : 1) * sizeof(int32_t));
            if (toks) {
                s->toks = toks;
                s->cap = s->len ? s->len : 1;
            }
        }
    }
    Py_RETURN_NONE;
}

static PyObject *Tree_ends(Tree *t, PyObject *key) {
    if (ready(t) < 0)
        return NULL;
    int64_t slot = slot_of(t, key, 1);
    if (slot < 0)
        return NULL;
    return list_of_i64(t->seq[slot].ends, t->seq[slot].nends);
}

static PyObject *Tree_growth_bound(Tree *t, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "growth_bound(sid, n)");
        return NULL;
    }
    if (ready(t) < 0)
        return NULL;
    int64_t slot = slot_of(t, args[0], 1);
    if (slot < 0)
        return NULL;
    long long n = PyLong_AsLongLong(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    long long e = t->seq[slot].nends, d = t->max_depth;
    long long k = n < d - e ? n : d - e; /* tokens appended while `ends` is below max_depth */
    if (k < 0)
        k = 0;
    return PyLong_FromLongLong(k * e + k * (k - 1) / 2 + (n - k) * d);
}

/* tokens -> t->tokbuf; returns how many, or -1. */
static Py_ssize_t read_tokens(Tree *t, PyObject *tokens) {
    PyObject *seq = PySequence_Fast(tokens, "tokens must be an iterable of ints");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if (grow((void **)&t->tokbuf, &t->tokbuf_cap, n, sizeof(int32_t)) < 0) {
        Py_DECREF(seq);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(items[i]);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (v < 0 || v > INT32_MAX) {
            PyErr_Format(v < 0 ? PyExc_ValueError : PyExc_OverflowError, "token %ld out of range [0, 2**31 - 1]", v);
            Py_DECREF(seq);
            return -1;
        }
        t->tokbuf[i] = (int32_t)v;
    }
    Py_DECREF(seq);
    return n;
}

static PyObject *Tree_extend(Tree *t, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "extend(sid, tokens)");
        return NULL;
    }
    if (ready(t) < 0)
        return NULL;
    int64_t slot = slot_of(t, args[0], 1);
    if (slot < 0)
        return NULL;
    Py_ssize_t n = read_tokens(t, args[1]); /* all converted first: a bad token changes nothing */
    if (n < 0 || extend_slot(t, slot, t->tokbuf, n) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Tree_append(Tree *t, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "append(sid, tok)");
        return NULL;
    }
    if (ready(t) < 0)
        return NULL;
    int64_t slot = slot_of(t, args[0], 1);
    if (slot < 0)
        return NULL;
    long v = PyLong_AsLong(args[1]);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    if (v < 0 || v > INT32_MAX) {
        PyErr_Format(v < 0 ? PyExc_ValueError : PyExc_OverflowError, "token %ld out of range [0, 2**31 - 1]", v);
        return NULL;
    }
    int32_t tok = (int32_t)v;
    if (extend_slot(t, slot, &tok, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Tree_remove(Tree *t, PyObject *key) {
    if (ready(t) < 0)
        return NULL;
    int64_t slot = slot_of(t, key, 0);
    if (slot < 0 || remove_slot(t, slot) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int arg_i64(PyObject *o, int64_t *out) {
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static int arg_f64(PyObject *o, double *out) {
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static int arg_node(Tree *t, PyObject *o, int64_t *out) {
    if (arg_i64(o, out) < 0)
        return -1;
    if (*out < 0 || *out >= t->rows || t->node[*out].depth < 0) {
        PyErr_Format(PyExc_ValueError, "no node %lld", (long long)*out);
        return -1;
    }
    return 0;
}

static PyObject *Tree_best_draft(Tree *t, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "best_draft(sid, limit, factor, offset, min_prob, best_score, branching)");
        return NULL;
    }
    if (ready(t) < 0)
        return NULL;
    int64_t slot = slot_of(t, args[0], 1);
    if (slot < 0)
        return NULL;
    int64_t limit, branching;
    double factor, offset, min_prob, best_score;
    if (arg_i64(args[1], &limit) < 0 || arg_f64(args[2], &factor) < 0 || arg_f64(args[3], &offset) < 0 ||
        arg_f64(args[4], &min_prob) < 0 || arg_f64(args[5], &best_score) < 0 || arg_i64(args[6], &branching) < 0)
        return NULL;
    int64_t max_depth = t->max_depth;
    int found = 0;
    double found_score = 0.0;
    int64_t prev_out = -1;
    int prev_room_bound = 0;
    int64_t nends = t->seq[slot].nends;
    for (int64_t m = nends - 1; m >= 0; m--) { /* the context of the last m tokens, longest first */
        int64_t node = t->seq[slot].ends[m];
        int64_t cap;
        if (cap_of(factor * (double)m + offset, &cap) < 0)
            return NULL;
        if (cap > limit)
            cap = limit;
        if ((double)cap <= best_score || !m)
            break;
        int64_t o = t->node[node].out;
        if (!o || (o == prev_out && !prev_room_bound))
            continue;
        prev_out = o;
        int64_t room = max_depth - m;
        prev_room_bound = room < cap;
        int64_t n = prev_room_bound ? room : cap;
        fresh(t, node);
        if ((double)(n * t->node[node].bestc) <= best_score * (double)o)
            continue; /* every path probability is at most the first token's */
        double score;
        if (branching ? tree_draft(t, node, n, min_prob, branching, &t->cur, &score)
                      : chain(t, node, n, min_prob, &t->cur, &score))
            return NULL;
        if (t->cur.n && score > best_score) {
            Out tmp = t->best;
            t->best = t->cur;
            t->cur = tmp;
            found = 1;
            found_score = best_score = score;
        }
    }
    if (!found)
        Py_RETURN_NONE;
    PyObject *toks = list_of_toks(t->best.toks, t->best.n);
    PyObject *parents = branching ? list_of_i64(t->best.parents, t->best.n) : Py_NewRef(Py_None);
    PyObject *score = PyFloat_FromDouble(found_score);
    if (!toks || !parents || !score) {
        Py_XDECREF(toks);
        Py_XDECREF(parents);
        Py_XDECREF(score);
        return NULL;
    }
    PyObject *res = PyTuple_New(3);
    if (!res) {
        Py_DECREF(toks);
        Py_DECREF(parents);
        Py_DECREF(score);
        return NULL;
    }
    PyTuple_SET_ITEM(res, 0, score);
    PyTuple_SET_ITEM(res, 1, toks);
    PyTuple_SET_ITEM(res, 2, parents);
    return res;
}

static PyObject *Tree_chain(Tree *t, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "chain(node, limit, min_prob)");
        return NULL;
    }
    if (ready(t) < 0)
        return NULL;
    int64_t node, limit;
    double min_prob, score;
    if (arg_node(t, args[0], &node) < 0 || arg_i64(args[1], &limit) < 0 || arg_f64(args[2], &min_prob) < 0)
        return NULL;
    if (chain(t, node, limit, min_prob, &t->cur, &score) < 0)
        return NULL;
    PyObject *toks = list_of_toks(t->cur.toks, t->cur.n);
    if (!toks)
        return NULL;
    return Py_BuildValue("(Nd)", toks, score);
}

static PyObject *Tree_tree(Tree *t, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "tree(node, limit, min_prob, branching)");
        return NULL;
    }
    if (ready(t) < 0)
        return NULL;
    int64_t node, limit, branching;
    double min_prob, score;
    if (arg_node(t, args[0], &node) < 0 || arg_i64(args[1], &limit) < 0 || arg_f64(args[2], &min_prob) < 0 ||
        arg_i64(args[3], &branching) < 0)
        return NULL;
    if (tree_draft(t, node, limit, min_prob, branching, &t->cur, &score) < 0)
        return NULL;
    PyObject *toks = list_of_toks(t->cur.toks, t->cur.n);
    PyObject *parents = list_of_i64(t->cur.parents, t->cur.n);
    if (!toks || !parents) {
        Py_XDECREF(toks);
        Py_XDECREF(parents);
        return NULL;
    }
    return Py_BuildValue("(NNd)", toks, parents, score);
}

static int cmp_pair(const void *a, const void *b) {
    int64_t x = ((const int64_t *)a)[0], y = ((const int64_t *)b)[0];
    return (x > y) - (x < y);
}

static PyObject *Tree_sequences(Tree *t, PyObject *unused) {
    if (ready(t) < 0)
        return NULL;
    /* ascending sid: the Python dict's insertion order */
    int64_t *pairs = PyMem_RawMalloc((size_t)(t->nseqs ? t->nseqs : 1) * 2 * sizeof(int64_t));
    if (!pairs)
        return PyErr_NoMemory();
    int64_t n = 0;
    for (int64_t i = 0; i < t->slots; i++)
        if (t->seq[i].sid >= 0) {
            pairs[2 * n] = t->seq[i].sid;
            pairs[2 * n++ + 1] = i;
        }
    qsort(pairs, (size_t)n, 2 * sizeof(int64_t), cmp_pair);
    PyObject *d = PyDict_New();
    for (int64_t i = 0; d && i < n; i++) {
        Seq *s = &t->seq[pairs[2 * i + 1]];
        PyObject *k = PyLong_FromLongLong(s->sid);
        PyObject *v = list_of_toks(s->toks, s->len);
        if (!k || !v || PyDict_SetItem(d, k, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    PyMem_RawFree(pairs);
    return d;
}

#define CHECK(cond, ...)                                                                                 \
    do {                                                                                                 \
        if (!(cond)) {                                                                                   \
            PyErr_Format(PyExc_AssertionError, __VA_ARGS__);                                             \
            return NULL;                                                                                 \
        }                                                                                                \
    } while (0)

/* The invariants that tests/test_suffix.py's check() verifies on the Python trie; like it,
 * rescans the stale nodes first (so call it at the same points on both to compare them). */
static PyObject *Tree_check(Tree *t, PyObject *unused) {
    if (ready(t) < 0)
        return NULL;
    for (int64_t n = 0; n < t->rows; n++)
        if (t->node[n].depth >= 0)
            fresh(t, n);
    int64_t nodes = 0, leaves = 0, tokens = 0, free_rows = 0;
    for (int64_t n = 0; n < t->rows; n++) {
        Node *x = &t->node[n];
        if (x->depth < 0) {
            free_rows++;
            continue;
        }
        nodes++;
        int64_t sum = 0, mx = 0, best_cc = -1, best_edge = 0;
        Kids *k = x->kids;
        int32_t nk = k ? k->used : (x->bestc ? 1 : 0), live = 0;
        for (int32_t i = 0; i < nk; i++) {
            int32_t tok = k ? k_tok(k)[i] : x->best;
            int64_t c = k ? k_edge(k)[i] : x->bestk;
            if (tok == TOMB)
                continue;
            live++;
            if (k)
                CHECK(kids_find(k, tok) == i, "node %lld: child %d not found by its token", (long long)n, tok);
            int64_t cc = c >= 0 ? t->node[c].count : 1;
            leaves += c < 0;
            sum += cc;
            if (cc > mx)
                mx = cc;
            if (tok == x->best) {
                best_cc = cc;
                best_edge = c;
            }
            if (c >= 0) {
                CHECK(c < t->rows && t->node[c].depth == x->depth + 1 && t->node[c].count > 0,
                      "node %lld: bad child %lld", (long long)n, (long long)c);
            }
        }
        if (k)
            CHECK(live == k->live && !k->mark && !k->stale, "node %lld: bad Kids block", (long long)n);
        CHECK(x->out == sum, "node %lld: out %lld != %lld", (long long)n, (long long)x->out, (long long)sum);
        CHECK(x->bestc == mx, "node %lld: bestc %lld != %lld", (long long)n, (long long)x->bestc, (long long)mx);
        if (sum)
            CHECK(best_cc == x->bestc && best_edge == x->bestk, "node %lld: bad best child", (long long)n);
    }
    CHECK(free_rows == t->nfree, "free rows %lld != %lld", (long long)free_rows, (long long)t->nfree);
    CHECK(nodes == t->nodes && leaves == t->leaves, "nodes/leaves %lld/%lld != %lld/%lld", (long long)nodes,
          (long long)leaves, (long long)t->nodes, (long long)t->leaves);
    int64_t nseqs = 0;
    for (int64_t i = 0; i < t->slots; i++) {
        Seq *s = &t->seq[i];
        if (s->sid < 0)
            continue;
        nseqs++;
        tokens += s->len;
        CHECK(map_find(t, s->sid) == i, "sequence %lld: not in the map", (long long)s->sid);
        for (int64_t d = 0; s->ends && d < s->nends; d++)
            CHECK(t->node[s->ends[d]].depth == d, "sequence %lld: end %lld at the wrong depth", (long long)s->sid,
                  (long long)d);
    }
    CHECK(nseqs == t->nseqs && tokens == t->tokens, "sequences/tokens %lld/%lld != %lld/%lld", (long long)nseqs,
          (long long)tokens, (long long)t->nseqs, (long long)t->tokens);
    Py_RETURN_NONE;
}

static Py_ssize_t Tree_len(Tree *t) { return (Py_ssize_t)t->nseqs; }

static int Tree_contains(Tree *t, PyObject *key) {
    if (!t->node || !PyLong_Check(key))
        return 0;
    int overflow = 0;
    long long sid = PyLong_AsLongLongAndOverflow(key, &overflow);
    if (sid == -1 && PyErr_Occurred())
        return -1;
    return !overflow && map_find(t, sid) >= 0;
}

static PyObject *get_max_depth(Tree *t, void *c) { return PyLong_FromLongLong(t->max_depth); }
static PyObject *get_nodes(Tree *t, void *c) { return PyLong_FromLongLong(t->nodes); }
static PyObject *get_leaves(Tree *t, void *c) { return PyLong_FromLongLong(t->leaves); }
static PyObject *get_tokens(Tree *t, void *c) { return PyLong_FromLongLong(t->tokens); }
static PyObject *get_entries(Tree *t, void *c) { return PyLong_FromLongLong(t->nodes + t->leaves); }

static PyObject *get_memory(Tree *t, void *c) {
    /* bytes held (allocations, not counting the allocator's own overhead) */
    int64_t b = t->rows_cap * (int64_t)sizeof(Node) + t->slots_cap * (int64_t)sizeof(Seq) + t->map_cap * 12;
    for (int64_t i = 0; i < t->rows; i++) {
        Kids *k = t->node[i].kids;
        if (k)
            b += (int64_t)sizeof(Kids) + k->cap * 12 + (k->hbits ? ((int64_t)1 << k->hbits) * 4 : 0);
    }
    for (int64_t i = 0; i < t->slots; i++)
        b += t->seq[i].cap * 4 + t->seq[i].ecap * 8;
    return PyLong_FromLongLong(b);
}

static PyGetSetDef Tree_getset[] = {
    {"max_depth", (getter)get_max_depth, NULL, "longest context stored, in tokens", NULL},
    {"nodes", (getter)get_nodes, NULL, "explicit nodes (the root included)", NULL},
    {"leaves", (getter)get_leaves, NULL, "leaf edges", NULL},
    {"tokens", (getter)get_tokens, NULL, "tokens of the stored sequences", NULL},
    {"entries", (getter)get_entries, NULL, "explicit nodes plus leaf edges: what the memory bound counts", NULL},
    {"memory_bytes", (getter)get_memory, NULL, "bytes allocated (O(nodes) to compute)", NULL},
    {NULL},
};

static PyMethodDef Tree_methods[] = {
    {"add", (PyCFunction)Tree_add, METH_NOARGS, "Start an empty open sequence; returns its id."},
    {"close", (PyCFunction)Tree_close, METH_O, "No more tokens for `sid`; it stays counted until `remove`."},
    {"ends", (PyCFunction)Tree_ends, METH_O, "Explicit nodes of the contexts ending at `sid`'s last token."},
    {"growth_bound", (PyCFunction)(void (*)(void))Tree_growth_bound, METH_FASTCALL,
     "At most how many entries appending `n` tokens to `sid` adds."},
    {"append", (PyCFunction)(void (*)(void))Tree_append, METH_FASTCALL, "append(sid, tok)"},
    {"extend", (PyCFunction)(void (*)(void))Tree_extend, METH_FASTCALL, "extend(sid, tokens)"},
    {"remove", (PyCFunction)Tree_remove, METH_O, "Forget sequence `sid` entirely."},
    {"best_draft", (PyCFunction)(void (*)(void))Tree_best_draft, METH_FASTCALL,
     "best_draft(sid, limit, factor, offset, min_prob, best_score, branching) -> (score, tokens, parents) | None"},
    {"chain", (PyCFunction)(void (*)(void))Tree_chain, METH_FASTCALL,
     "chain(node, limit, min_prob) -> (tokens, score)"},
    {"tree", (PyCFunction)(void (*)(void))Tree_tree, METH_FASTCALL,
     "tree(node, limit, min_prob, branching) -> (tokens, parents, score)"},
    {"sequences", (PyCFunction)Tree_sequences, METH_NOARGS, "{sid: tokens}"},
    {"_check", (PyCFunction)Tree_check, METH_NOARGS, "Verify the internal invariants (tests)."},
    {NULL},
};

static PySequenceMethods Tree_as_sequence = {
    .sq_length = (lenfunc)Tree_len,
    .sq_contains = (objobjproc)Tree_contains,
};

static PyTypeObject TreeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "spec_sdk.proposers._suffix_core.SuffixTree",
    .tp_doc = PyDoc_STR("Compiled suffix_tree.SuffixTree: counts of every substring (up to max_depth tokens) "
                        "of a set of token sequences."),
    .tp_basicsize = sizeof(Tree),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Tree_init,
    .tp_dealloc = (destructor)Tree_dealloc,
    .tp_methods = Tree_methods,
    .tp_getset = Tree_getset,
    .tp_as_sequence = &Tree_as_sequence,
};

static PyObject *set_wide(PyObject *m, PyObject *arg) {
    Py_ssize_t w = PyLong_AsSsize_t(arg);
    if (w == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t old = g_wide;
    g_wide = w;
    return PyLong_FromSsize_t(old);
}

static PyMethodDef module_methods[] = {
    {"set_wide", set_wide, METH_O,
     "Set the WIDE threshold (suffix_tree.WIDE's counterpart) for every trie; returns the old one."},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_suffix_core", "Compiled core of spec_sdk.proposers.suffix_tree.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__suffix_core(void) {
    if (PyType_Ready(&TreeType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "SuffixTree", (PyObject *)&TreeType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
