/* The trie itself: node rows, best-child rescans, leaves made explicit, and the two updates
 * (extend a sequence, remove one). The layout is described in trie.h. */
#include "trie.h"

Py_ssize_t sx_wide = 32;

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
    t->free_rows[t->nfree++] = x; /* room reserved by sx_remove */
    t->nodes--;
}

/* SuffixTree._rescan: the best child of `x` again (ties: the older). */
void sx_rescan(Tree *t, int64_t x) {
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
/* The row of sequence `key` (which must be open if `need_open`), or -1 with a KeyError. */
int64_t sx_slot_of(Tree *t, PyObject *key, int need_open) {
    int overflow = 0;
    long long sid = PyLong_Check(key) ? PyLong_AsLongLongAndOverflow(key, &overflow) : -1;
    if (sid == -1 && PyErr_Occurred())
        return -1;
    int64_t slot = overflow ? -1 : sx_map_find(t, (int64_t)sid);
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
int sx_extend(Tree *t, int64_t slot, const int32_t *toks, int64_t n) {
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
                    if (sx_kids_insert(&x->kids, tok, leaf) < 0)
                        return -1;
                } else if (x->bestc) {
                    Kids *nk = sx_kids_alloc(2); /* a second child: now a Kids block */
                    if (!nk)
                        return -1;
                    sx_kids_put(nk, x->best, x->bestk);
                    sx_kids_put(nk, tok, leaf);
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

/* Forget the sequence in row `slot`: see SuffixTree.remove. */
int sx_remove(Tree *t, int64_t slot) {
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
                    sx_kids_delete(k, idx);
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
            sx_rescan(t, n);
    }
    for (int64_t i = 0; i < nstale; i++) {
        int64_t n = t->stale[i];
        if (t->node[n].depth < 0)
            continue;
        Kids *k = t->node[n].kids;
        if (k->mark & MARK_ORPHANED)
            continue; /* rescanned above */
        if (k->live > sx_wide)
            k->stale = 1; /* still a valid child, just maybe no longer the best */
        else
            sx_rescan(t, n);
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
    sx_map_del(t, s->sid);
    memset(s, 0, sizeof(Seq));
    s->sid = -1;
    t->free_slots[t->nfree_slots++] = slot; /* room reserved in add() */
    t->nseqs--;
    return 0;
}

/* -- memory ---------------------------------------------------------------------------------- */
/* Free everything the trie holds and zero it (the object header aside): as new, before __init__. */
void sx_free_all(Tree *t) {
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

/* Bytes held (allocations, not counting the allocator's own overhead); O(nodes). */
int64_t sx_memory_bytes(Tree *t) {
    int64_t b = t->rows_cap * (int64_t)sizeof(Node) + t->slots_cap * (int64_t)sizeof(Seq) + t->map_cap * 12;
    for (int64_t i = 0; i < t->rows; i++) {
        Kids *k = t->node[i].kids;
        if (k)
            b += (int64_t)sizeof(Kids) + k->cap * 12 + (k->hbits ? ((int64_t)1 << k->hbits) * 4 : 0);
    }
    for (int64_t i = 0; i < t->slots; i++)
        b += t->seq[i].cap * 4 + t->seq[i].ecap * 8;
    return b;
}
