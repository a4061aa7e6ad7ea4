/* Drafting: greedy chains, best-first trees, and the search over match lengths that picks
 * the best draft of a sequence (SuffixTree.chain, .tree, .best_draft). */
#include "trie.h"

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
int sx_chain(Tree *t, int64_t node, int64_t limit, double min_prob, Out *o, double *score_out) {
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
    if (branching > 1 && k && k->live <= sx_wide) {
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
int sx_tree_draft(Tree *t, int64_t node, int64_t limit, double min_prob, int64_t branching, Out *o,
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

/* SuffixTree.best_draft over the contexts ending open sequence `slot`: 1 with the draft in
 * t->best (parents too where `branching`) and its score in *score_out, 0 if none beats
 * `best_score`, -1 on error. */
int sx_best_draft(Tree *t, int64_t slot, int64_t limit, double factor, double offset, double min_prob,
                  double best_score, int64_t branching, double *score_out) {
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
            return -1;
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
        if (branching ? sx_tree_draft(t, node, n, min_prob, branching, &t->cur, &score)
                      : sx_chain(t, node, n, min_prob, &t->cur, &score))
            return -1;
        if (t->cur.n && score > best_score) {
            Out tmp = t->best;
            t->best = t->cur;
            t->cur = tmp;
            found = 1;
            found_score = best_score = score;
        }
    }
    *score_out = found_score;
    return found;
}
