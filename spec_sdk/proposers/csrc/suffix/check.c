/* SuffixTree._check(): the trie's internal invariants, verified from scratch (tests). */
#include "trie.h"

#define CHECK(cond, ...)                                                                                 \
    do {                                                                                                 \
        if (!(cond)) {                                                                                   \
            PyErr_Format(PyExc_AssertionError, __VA_ARGS__);                                             \
            return -1;                                                                                   \
        }                                                                                                \
    } while (0)

/* The invariants that tests/test_suffix.py's check() verifies on the Python trie; like it,
 * rescans the stale nodes first (so call it at the same points on both to compare them).
 * 0, or -1 with an AssertionError naming the first broken one. */
int sx_check(Tree *t) {
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
        CHECK(sx_map_find(t, s->sid) == i, "sequence %lld: not in the map", (long long)s->sid);
        for (int64_t d = 0; s->ends && d < s->nends; d++)
            CHECK(t->node[s->ends[d]].depth == d, "sequence %lld: end %lld at the wrong depth", (long long)s->sid,
                  (long long)d);
    }
    CHECK(nseqs == t->nseqs && tokens == t->tokens, "sequences/tokens %lld/%lld != %lld/%lld", (long long)nseqs,
          (long long)tokens, (long long)t->nseqs, (long long)t->tokens);
    return 0;
}

