/*
 * What the sample evaluators share (SPEC §21): reading the evaluator's input, a small
 * JSON reader that builds a tree, JSON equality, and printing the verdict.
 *
 * An evaluator reads {"task_input": ..., "output": "<the task's stdout>", "contract":
 * {"input_schema": ..., "output_schema": ...}} and prints exactly one line
 *
 *     {"accept": true|false, "score": S, "reason": "..."}
 *
 * with S between 0 and 1 in at most four decimals, cut (not rounded) from the exact
 * fraction, so a score of 1 always means every check passed. It prints a verdict for any
 * input: an input it cannot read is a rejection with score 0 and a reason that says so.
 *
 * JSON is read as RFC 8259 says, like Python's json.loads without NaN and Infinity: the
 * text must be UTF-8, nesting goes at most MAX_DEPTH arrays and objects deep, a lone
 * \uD800-\uDFFF escape becomes U+FFFD, numbers are doubles, and when a name appears twice
 * in an object, looking it up finds the last one.
 */
#ifndef EVALUATOR_H
#define EVALUATOR_H

#include <math.h>
#include <stdint.h>

#include "agent_io.h"

#define MAX_DEPTH 100
#define REASON_PART_MAX 200

/* --- growable bytes ------------------------------------------------------------------ */

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

#ifndef EVAL_NAME
#error "define EVAL_NAME (the agent's slug) before including evaluator.h"
#endif

static inline void buf_reserve(Buf *b, size_t more) {
    if (b->len + more + 1 <= b->cap) {
        return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) {
        cap *= 2;
    }
    char *data = realloc(b->data, cap);
    if (data == NULL) {
        agent_fail(1, EVAL_NAME, "out of memory");
    }
    b->data = data;
    b->cap = cap;
}

static inline void buf_put(Buf *b, const void *bytes, size_t n) {
    buf_reserve(b, n);
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static inline void buf_str(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static inline void buf_u64(Buf *b, uint64_t v) {
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    buf_put(b, digits, (size_t)n);
}

/* --- the JSON tree ------------------------------------------------------------------- */

enum { J_NULL, J_FALSE, J_TRUE, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT };

typedef struct {
    uint8_t type;
    uint32_t key_len; /* as a member of an object: its name */
    const char *key;
    const char *str; /* J_STRING: its bytes (UTF-8, NUL after them) */
    uint32_t len;    /* J_STRING: bytes; J_ARRAY, J_OBJECT: members */
    double num;
    int32_t first, next; /* first member, next sibling; -1 for none */
    int32_t aux;         /* for the evaluator's own use; -1 at first */
} JNode;

/*
 * Nodes live in blocks of NODE_BLOCK that never move: growing never copies them, which
 * matters under fuel metering, where wasi-libc's memcpy costs several units a byte.
 */
#define NODE_BLOCK_BITS 12
#define NODE_BLOCK (1u << NODE_BLOCK_BITS)

static JNode **blocks;
static size_t blocks_used, blocks_cap, nodes_used;

#define N(i) (&blocks[(size_t)(i) >> NODE_BLOCK_BITS][(size_t)(i) & (NODE_BLOCK - 1)])

static inline int32_t j_new(uint8_t type) {
    if (nodes_used == blocks_used * NODE_BLOCK) {
        if (blocks_used == blocks_cap) {
            blocks_cap = blocks_cap ? blocks_cap * 2 : 64;
            blocks = realloc(blocks, blocks_cap * sizeof(JNode *));
        }
        JNode *block = blocks == NULL ? NULL : malloc(NODE_BLOCK * sizeof(JNode));
        if (block == NULL || nodes_used >= INT32_MAX - NODE_BLOCK) {
            agent_fail(1, EVAL_NAME, "out of memory");
        }
        blocks[blocks_used++] = block;
    }
    int32_t index = (int32_t)nodes_used++;
    *N(index) = (JNode){.type = type, .first = -1, .next = -1, .aux = -1};
    return index;
}

typedef struct {
    char *p, *end;
    int depth;
} JParser;

static inline void j_ws(JParser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) {
        ps->p++;
    }
}

static inline int j_hex4(const char *p, const char *end, uint32_t *out) {
    if (end - p < 4) {
        return 0;
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = (unsigned char)p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (uint32_t)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= (uint32_t)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v |= (uint32_t)(c - 'A' + 10);
        } else {
            return 0;
        }
    }
    *out = v;
    return 1;
}

static inline char *j_put_utf8(char *w, uint32_t cp) {
    if (cp < 0x80) {
        *w++ = (char)cp;
    } else if (cp < 0x800) {
        *w++ = (char)(0xC0 | (cp >> 6));
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *w++ = (char)(0xE0 | (cp >> 12));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *w++ = (char)(0xF0 | (cp >> 18));
        *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    }
    return w;
}

/*
 * The string at ps->p (its opening quote), decoded in place: an escape is never shorter
 * than what it stands for, so the decoded bytes fit where the escaped ones were, and a NUL
 * goes after them (at the latest where the closing quote was).
 */
static inline int j_string(JParser *ps, const char **out, uint32_t *out_len) {
    char *r = ps->p + 1, *w = r, *start = r;
    for (;;) {
        /* Plain bytes, the bulk of any string: moved only once an escape has shrunk it. */
        char *plain = r;
        while (r < ps->end && *r != '"' && *r != '\\' && (unsigned char)*r >= 0x20) {
            r++;
        }
        if (w != plain) {
            memmove(w, plain, (size_t)(r - plain));
        }
        w += r - plain;
        if (r >= ps->end) {
            return 0;
        }
        unsigned char c = (unsigned char)*r++;
        if (c == '"') {
            break;
        }
        if (c < 0x20) {
            return 0;
        }
        /* c is a backslash. */
        if (r >= ps->end) {
            return 0;
        }
        unsigned char e = (unsigned char)*r++;
        uint32_t cp;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            cp = e;
            break;
        case 'b':
            cp = '\b';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'u':
            if (!j_hex4(r, ps->end, &cp)) {
                return 0;
            }
            r += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && ps->end - r >= 6 && r[0] == '\\' && r[1] == 'u') {
                uint32_t low;
                if (j_hex4(r + 2, ps->end, &low) && low >= 0xDC00 && low <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    r += 6;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD; /* a lone surrogate */
            }
            break;
        default:
            return 0;
        }
        w = j_put_utf8(w, cp);
    }
    *w = '\0';
    *out = start;
    *out_len = (uint32_t)(w - start);
    ps->p = r;
    return 1;
}

static inline int j_digits(JParser *ps) {
    char *from = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        ps->p++;
    }
    return ps->p > from;
}

/* A number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static inline int j_number(JParser *ps, double *out) {
    char *start = ps->p;
    if (ps->p < ps->end && *ps->p == '-') {
        ps->p++;
    }
    if (ps->p < ps->end && *ps->p == '0') {
        ps->p++;
    } else if (!j_digits(ps)) {
        return 0;
    }
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!j_digits(ps)) {
            return 0;
        }
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) {
            ps->p++;
        }
        if (!j_digits(ps)) {
            return 0;
        }
    }
    if (ps->p - start <= 16) {
        /* Up to 15 digits and nothing else: exact as a double, no need for strtod. */
        const char *q = start + (*start == '-');
        double v = 0;
        while (q < ps->p && *q >= '0' && *q <= '9') {
            v = v * 10 + (*q++ - '0');
        }
        if (q == ps->p) {
            *out = *start == '-' ? -v : v;
            return 1;
        }
    }
    /* strtod reads up to a NUL put, for a moment, after the token. */
    char saved = *ps->p;
    *ps->p = '\0';
    *out = strtod(start, NULL);
    *ps->p = saved;
    return 1;
}

static inline int j_literal(JParser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, word, n) == 0) {
        ps->p += n;
        return 1;
    }
    return 0;
}

static inline int32_t j_value(JParser *ps) {
    j_ws(ps);
    if (ps->p >= ps->end) {
        return -1;
    }
    char c = *ps->p;
    if (c == '{' || c == '[') {
        if (++ps->depth > MAX_DEPTH) {
            return -1;
        }
        char close = c == '{' ? '}' : ']';
        int32_t self = j_new(c == '{' ? J_OBJECT : J_ARRAY);
        int32_t last = -1;
        uint32_t count = 0;
        ps->p++;
        j_ws(ps);
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            ps->depth--;
            return self;
        }
        for (;;) {
            const char *key = NULL;
            uint32_t key_len = 0;
            if (close == '}') {
                j_ws(ps);
                if (ps->p >= ps->end || *ps->p != '"' || !j_string(ps, &key, &key_len)) {
                    return -1;
                }
                j_ws(ps);
                if (ps->p >= ps->end || *ps->p != ':') {
                    return -1;
                }
                ps->p++;
            }
            int32_t child = j_value(ps);
            if (child < 0) {
                return -1;
            }
            N(child)->key = key;
            N(child)->key_len = key_len;
            if (last < 0) {
                N(self)->first = child;
            } else {
                N(last)->next = child;
            }
            last = child;
            count++;
            j_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == close) {
                ps->p++;
                break;
            }
            return -1;
        }
        N(self)->len = count;
        ps->depth--;
        return self;
    }
    if (c == '"') {
        const char *s;
        uint32_t n;
        if (!j_string(ps, &s, &n)) {
            return -1;
        }
        int32_t self = j_new(J_STRING);
        N(self)->str = s;
        N(self)->len = n;
        return self;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        double v;
        if (!j_number(ps, &v)) {
            return -1;
        }
        int32_t self = j_new(J_NUMBER);
        N(self)->num = v;
        return self;
    }
    if (j_literal(ps, "true")) {
        return j_new(J_TRUE);
    }
    if (j_literal(ps, "false")) {
        return j_new(J_FALSE);
    }
    if (j_literal(ps, "null")) {
        return j_new(J_NULL);
    }
    return -1;
}

/*
 * Parse `len` bytes of UTF-8 at `text`, which must be writable and followed by a NUL
 * (strings are decoded in place). Returns the root's index, or -1 when it is not JSON.
 */
static inline int32_t j_parse(char *text, size_t len) {
    JParser ps = {text, text + len, 0};
    int32_t root = j_value(&ps);
    if (root < 0) {
        return -1;
    }
    j_ws(&ps);
    return ps.p == ps.end ? root : -1;
}

/* The member called `key` (the last one, when there are several), or -1. */
static inline int32_t j_get(int32_t object, const char *key, size_t key_len) {
    if (object < 0 || N(object)->type != J_OBJECT) {
        return -1;
    }
    int32_t found = -1;
    for (int32_t m = N(object)->first; m >= 0; m = N(m)->next) {
        if (N(m)->key_len == key_len && memcmp(N(m)->key, key, key_len) == 0) {
            found = m;
        }
    }
    return found;
}

static inline int32_t j_member(int32_t object, const char *key) { return j_get(object, key, strlen(key)); }

static inline int j_type(int32_t v) { return v < 0 ? -1 : N(v)->type; }

/* JSON equality: numbers by value (1 equals 1.0), objects whatever their order. */
static inline int j_equal(int32_t a, int32_t b) {
    const JNode *x = N(a), *y = N(b);
    if (x->type != y->type) {
        return 0;
    }
    switch (x->type) {
    case J_NUMBER:
        return x->num == y->num;
    case J_STRING:
        return x->len == y->len && memcmp(x->str, y->str, x->len) == 0;
    case J_ARRAY:
        if (x->len != y->len) {
            return 0;
        }
        for (int32_t i = x->first, j = y->first; i >= 0; i = N(i)->next, j = N(j)->next) {
            if (!j_equal(i, j)) {
                return 0;
            }
        }
        return 1;
    case J_OBJECT:
        if (x->len != y->len) {
            return 0;
        }
        for (int32_t i = x->first; i >= 0; i = N(i)->next) {
            int32_t j = j_get(b, N(i)->key, N(i)->key_len);
            if (j < 0 || !j_equal(j_get(a, N(i)->key, N(i)->key_len), j)) {
                return 0;
            }
        }
        return 1;
    default:
        return 1;
    }
}

/* A finite number without a fractional part. */
static inline int j_is_whole(int32_t v) {
    return j_type(v) == J_NUMBER && isfinite(N(v)->num) && floor(N(v)->num) == N(v)->num;
}

/* --- input and verdict ---------------------------------------------------------------- */

static inline int utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t four;
        if (n - i >= 4 && (memcpy(&four, s + i, 4), (four & 0x80808080u) == 0)) {
            i += 4; /* four ASCII bytes */
            continue;
        }
        unsigned char b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) {
            need = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            lo = b == 0xE0 ? 0xA0 : 0x80;
            hi = b == 0xED ? 0x9F : 0xBF;
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            lo = b == 0xF0 ? 0x90 : 0x80;
            hi = b == 0xF4 ? 0x8F : 0xBF;
        } else {
            return 0;
        }
        if (n - i - 1 < need || s[i + 1] < lo || s[i + 1] > hi) {
            return 0;
        }
        for (size_t k = 2; k <= need; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) {
                return 0;
            }
        }
        i += need + 1;
    }
    return 1;
}

/* Append `s` as the body of a JSON string, escaped as Python's json.dumps does. */
static inline void put_json_chars(Buf *out, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *short_form = NULL;
        switch (c) {
        case '"':
            short_form = "\\\"";
            break;
        case '\\':
            short_form = "\\\\";
            break;
        case '\b':
            short_form = "\\b";
            break;
        case '\f':
            short_form = "\\f";
            break;
        case '\n':
            short_form = "\\n";
            break;
        case '\r':
            short_form = "\\r";
            break;
        case '\t':
            short_form = "\\t";
            break;
        default:
            break;
        }
        if (short_form != NULL) {
            buf_str(out, short_form);
        } else if (c < 0x20) {
            char escaped[8];
            snprintf(escaped, sizeof escaped, "\\u%04x", c);
            buf_str(out, escaped);
        } else {
            buf_put(out, &c, 1);
        }
    }
}

/* Cut `b` to at most `max` bytes at a character boundary, marking the cut with "...". */
static inline void cut_utf8(Buf *b, size_t from, size_t max) {
    if (b->len - from <= max) {
        return;
    }
    size_t end = from + max;
    while (end > from && ((unsigned char)b->data[end] & 0xC0) == 0x80) {
        end--;
    }
    b->len = end;
    buf_str(b, "...");
}

/*
 * Print the verdict and exit 0. The score is passed / total (1 when total is 0), cut to
 * four decimals.
 */
static inline void verdict(int accept, uint64_t passed, uint64_t total, const char *reason, size_t len) {
    /* 128 bits: passed and total may go up to 2^53 (countcheck's word counts). */
    uint64_t tenths_of_mille =
        total ? (uint64_t)((unsigned __int128)passed * 10000 / total) : 10000;
    char score[16];
    if (tenths_of_mille >= 10000) {
        strcpy(score, "1");
    } else if (tenths_of_mille == 0) {
        strcpy(score, "0");
    } else {
        snprintf(score, sizeof score, "0.%04llu", (unsigned long long)tenths_of_mille);
        size_t n = strlen(score);
        while (score[n - 1] == '0') {
            score[--n] = '\0';
        }
    }
    Buf out = {0};
    buf_str(&out, accept ? "{\"accept\": true, \"score\": " : "{\"accept\": false, \"score\": ");
    buf_str(&out, score);
    buf_str(&out, ", \"reason\": \"");
    put_json_chars(&out, reason, len);
    buf_str(&out, "\"}\n");
    agent_emit(EVAL_NAME, out.data, out.len);
    exit(0);
}

static inline void reject(const char *reason) { verdict(0, 0, 1, reason, strlen(reason)); }

#define NOT_EVALUATOR_INPUT "the evaluator's input is not a JSON object with a string \"output\""

typedef struct {
    int32_t root, task_input, output, contract; /* task_input, contract: -1 when absent */
} EvalInput;

/*
 * Read the whole of stdin and parse it; an input that is not an object with a string
 * "output" gets its rejection here. The output's text stays in N(in.output)->str.
 */
static inline EvalInput eval_input_read(void) {
    Buf input = {0};
    /* Room for a task's whole output at once: growing copies, and copying costs fuel. */
    buf_reserve(&input, 2 * 1024 * 1024);
    for (;;) {
        buf_reserve(&input, 64 * 1024);
        ssize_t n = agent_read(input.data + input.len, input.cap - input.len - 1);
        if (n < 0) {
            agent_fail(1, EVAL_NAME, "cannot read input");
        }
        if (n == 0) {
            break;
        }
        input.len += (size_t)n;
    }
    buf_reserve(&input, 1);
    input.data[input.len] = '\0';
    EvalInput in = {-1, -1, -1, -1};
    if (!utf8_valid((const unsigned char *)input.data, input.len)) {
        reject(NOT_EVALUATOR_INPUT);
    }
    in.root = j_parse(input.data, input.len);
    in.output = j_member(in.root, "output");
    if (j_type(in.output) != J_STRING) {
        reject(NOT_EVALUATOR_INPUT);
    }
    in.task_input = j_member(in.root, "task_input");
    in.contract = j_member(in.root, "contract");
    return in;
}

/* Parse the task's output as JSON: its root, or -1 when it is not JSON. */
static inline int32_t eval_output_parse(const EvalInput *in) {
    JNode *output = N(in->output);
    /* Parsing decodes in place; the string's bytes are followed by a NUL. */
    return j_parse((char *)output->str, output->len);
}

#endif
