/* The two hash tables of the trie: Kids blocks (a node's children, token -> edge, in
 * insertion order like a Python dict) and the sid -> slot map of the sequences. */
#include "trie.h"

/* -- Kids: an insertion-ordered token -> edge map --------------------------------------- */
Kids *sx_kids_alloc(int32_t cap) {
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

/* Append (tok, edge), which must be absent: at the end of the order, like a dict. */
void sx_kids_put(Kids *k, int32_t tok, int64_t edge) {
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
    Kids *n = sx_kids_alloc(cap);
    if (!n)
        return NULL;
    int32_t *toks = k_tok(k);
    int64_t *edges = k_edge(k);
    for (int32_t i = 0; i < k->used; i++)
        if (toks[i] != TOMB)
            sx_kids_put(n, toks[i], edges[i]);
    n->stale = k->stale;
    n->mark = k->mark;
    PyMem_RawFree(k);
    return n;
}

int sx_kids_insert(Kids **pk, int32_t tok, int64_t edge) {
    Kids *k = *pk;
    if (k->used == k->cap) {
        k = kids_resize(k, k->live + 1);
        if (!k)
            return -1;
        *pk = k;
    }
    sx_kids_put(k, tok, edge);
    return 0;
}

void sx_kids_delete(Kids *k, int32_t i) {
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

int64_t sx_map_find(Tree *t, int64_t sid) {
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

int sx_map_put(Tree *t, int64_t sid, int32_t slot) {
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

void sx_map_del(Tree *t, int64_t sid) {
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
