/* The Python face of the trie: the `SuffixTree` type (argument parsing, errors, list
 * conversion) and the `_suffix_core` module. The work is in trie.c and draft.c. */
#include "trie.h"

/* -- Python lists ---------------------------------------------------------------------------- */
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

/* -- the Python type --------------------------------------------------------------------------- */
static int Tree_init(Tree *t, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"max_depth", NULL};
    long long max_depth;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L:SuffixTree", kwlist, &max_depth))
        return -1;
    if (max_depth < 1 || max_depth > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "max_depth must be in [1, 2**31 - 1], got %lld", max_depth);
        return -1;
    }
    sx_free_all(t);
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
    sx_free_all(t);
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
    if (sx_map_put(t, t->next_sid, (int32_t)slot) < 0) {
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
    int64_t slot = overflow ? -1 : sx_map_find(t, sid);
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
    int64_t slot = sx_slot_of(t, key, 1);
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
    int64_t slot = sx_slot_of(t, args[0], 1);
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
    int64_t slot = sx_slot_of(t, args[0], 1);
    if (slot < 0)
        return NULL;
    Py_ssize_t n = read_tokens(t, args[1]); /* all converted first: a bad token changes nothing */
    if (n < 0 || sx_extend(t, slot, t->tokbuf, n) < 0)
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
    int64_t slot = sx_slot_of(t, args[0], 1);
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
    if (sx_extend(t, slot, &tok, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Tree_remove(Tree *t, PyObject *key) {
    if (ready(t) < 0)
        return NULL;
    int64_t slot = sx_slot_of(t, key, 0);
    if (slot < 0 || sx_remove(t, slot) < 0)
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
    int64_t slot = sx_slot_of(t, args[0], 1);
    if (slot < 0)
        return NULL;
    int64_t limit, branching;
    double factor, offset, min_prob, best_score;
    if (arg_i64(args[1], &limit) < 0 || arg_f64(args[2], &factor) < 0 || arg_f64(args[3], &offset) < 0 ||
        arg_f64(args[4], &min_prob) < 0 || arg_f64(args[5], &best_score) < 0 || arg_i64(args[6], &branching) < 0)
        return NULL;
    double found_score;
    int found = sx_best_draft(t, slot, limit, factor, offset, min_prob, best_score, branching, &found_score);
    if (found < 0)
        return NULL;
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
    if (sx_chain(t, node, limit, min_prob, &t->cur, &score) < 0)
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
    if (sx_tree_draft(t, node, limit, min_prob, branching, &t->cur, &score) < 0)
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

/* check.c has the invariants. */
static PyObject *Tree_check(Tree *t, PyObject *unused) {
    if (ready(t) < 0 || sx_check(t) < 0)
        return NULL;
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
    return !overflow && sx_map_find(t, sid) >= 0;
}

static PyObject *get_max_depth(Tree *t, void *c) { return PyLong_FromLongLong(t->max_depth); }
static PyObject *get_nodes(Tree *t, void *c) { return PyLong_FromLongLong(t->nodes); }
static PyObject *get_leaves(Tree *t, void *c) { return PyLong_FromLongLong(t->leaves); }
static PyObject *get_tokens(Tree *t, void *c) { return PyLong_FromLongLong(t->tokens); }
static PyObject *get_entries(Tree *t, void *c) { return PyLong_FromLongLong(t->nodes + t->leaves); }

static PyObject *get_memory(Tree *t, void *c) { return PyLong_FromLongLong(sx_memory_bytes(t)); }

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
    Py_ssize_t old = sx_wide;
    sx_wide = w;
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
