/*
 * wordstats: word frequencies of a text, with options. Its input is a JSON
 * document, checked by the platform against the agent's input schema before
 * the task is paid for (see agents/README.md for both schemas):
 *
 *   {"text": "...", "ignore_case": false, "min_length": 1, "top": 5}
 *
 *   text         the text (required).
 *   ignore_case  count "The" and "the" as one word (ASCII letters); default false.
 *   min_length   only words of at least this many characters count; default 1.
 *   top          how many of the most frequent words to list; default 5.
 *
 * Output (one line):
 *
 *   {"words": W, "unique": U, "top": [{"word": "the", "count": 3}, ...]}
 *
 *   words   words of at least min_length characters (Unicode code points).
 *   unique  distinct such words.
 *   top     the `top` most frequent, most frequent first, ties in byte order.
 *
 * A word is a maximal run of ASCII letters, digits and apostrophes and of any
 * non-ASCII characters; everything else (ASCII spaces and punctuation) separates
 * words. Unknown members of the input are ignored.
 *
 * Exit codes: 0 success; 1 read or write error; 2 the input is not a JSON
 * object with a string `text` (or an option of the wrong type).
 */
#include <stdint.h>

#include "agent_io.h"

#define NAME "wordstats"

typedef struct {
    unsigned char *data;
    size_t len, cap;
} Buf;

static void buf_reserve(Buf *b, size_t more) {
    if (b->len + more <= b->cap) {
        return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) {
        cap *= 2;
    }
    unsigned char *data = realloc(b->data, cap);
    if (data == NULL) {
        agent_fail(1, NAME, "out of memory");
    }
    b->data = data;
    b->cap = cap;
}

static void buf_put(Buf *b, const void *bytes, size_t n) {
    buf_reserve(b, n);
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
}

static void buf_str(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_u64(Buf *b, uint64_t v) {
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    buf_put(b, digits, (size_t)n);
}

/* --- a small JSON reader: just what the input needs ---------------------------------- */

typedef struct {
    const unsigned char *p, *end;
} Reader;

static void bad(const char *what) { agent_fail(2, NAME, "input is not valid: %s", what); }

static void skip_ws(Reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) {
        r->p++;
    }
}

static int hex4(Reader *r, uint32_t *out) {
    if (r->end - r->p < 4) {
        return 0;
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = *r->p++;
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

static void put_utf8(Buf *b, uint32_t cp) {
    unsigned char s[4];
    size_t n;
    if (cp < 0x80) {
        s[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        s[0] = (unsigned char)(0xC0 | (cp >> 6));
        s[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        s[0] = (unsigned char)(0xE0 | (cp >> 12));
        s[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        s[0] = (unsigned char)(0xF0 | (cp >> 18));
        s[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        s[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        s[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_put(b, s, n);
}

/* A string at r->p (after its opening quote), decoded into `out` (or skipped when NULL). */
static void read_string(Reader *r, Buf *out) {
    for (;;) {
        if (r->p >= r->end) {
            bad("unterminated string");
        }
        unsigned char c = *r->p++;
        if (c == '"') {
            return;
        }
        if (c < 0x20) {
            bad("control character in a string");
        }
        if (c != '\\') {
            if (out != NULL) {
                buf_put(out, &c, 1);
            }
            continue;
        }
        if (r->p >= r->end) {
            bad("unterminated escape");
        }
        unsigned char e = *r->p++;
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
            if (!hex4(r, &cp)) {
                bad("bad \\u escape");
            }
            if (cp >= 0xD800 && cp <= 0xDBFF && r->end - r->p >= 6 && r->p[0] == '\\' &&
                r->p[1] == 'u') {
                Reader ahead = {r->p + 2, r->end};
                uint32_t low;
                if (hex4(&ahead, &low) && low >= 0xDC00 && low <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    r->p = ahead.p;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD; /* a lone surrogate */
            }
            break;
        default:
            bad("bad escape");
            return;
        }
        if (out != NULL) {
            put_utf8(out, cp);
        }
    }
}

static int literal(Reader *r, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) >= n && memcmp(r->p, word, n) == 0) {
        r->p += n;
        return 1;
    }
    return 0;
}

static void skip_value(Reader *r, int depth);

static void skip_container(Reader *r, unsigned char close, int depth) {
    skip_ws(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return;
    }
    for (;;) {
        if (close == '}') {
            skip_ws(r);
            if (r->p >= r->end || *r->p != '"') {
                bad("expected a member name");
            }
            r->p++;
            read_string(r, NULL);
            skip_ws(r);
            if (r->p >= r->end || *r->p != ':') {
                bad("expected ':'");
            }
            r->p++;
        }
        skip_value(r, depth + 1);
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == close) {
            r->p++;
            return;
        }
        bad("expected ',' or the end of a container");
    }
}

static void skip_value(Reader *r, int depth) {
    if (depth > 64) {
        bad("nested too deeply");
    }
    skip_ws(r);
    if (r->p >= r->end) {
        bad("expected a value");
    }
    unsigned char c = *r->p;
    if (c == '"') {
        r->p++;
        read_string(r, NULL);
    } else if (c == '{' || c == '[') {
        r->p++;
        skip_container(r, c == '{' ? '}' : ']', depth);
    } else if (literal(r, "true") || literal(r, "false") || literal(r, "null")) {
        return;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        r->p++;
        while (r->p < r->end && (strchr("0123456789+-.eE", *r->p) != NULL) && *r->p != '\0') {
            r->p++;
        }
    } else {
        bad("unexpected character");
    }
}

static int read_bool(Reader *r, const char *name) {
    skip_ws(r);
    if (literal(r, "true")) {
        return 1;
    }
    if (literal(r, "false")) {
        return 0;
    }
    agent_fail(2, NAME, "%s must be true or false", name);
    return 0;
}

/* A non-negative integer (JSON allows 5.0 for 5: a fraction of zeros is accepted). */
static uint64_t read_count(Reader *r, const char *name) {
    skip_ws(r);
    uint64_t v = 0;
    int digits = 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        v = v * 10 + (uint64_t)(*r->p++ - '0');
        if (v > 1000000000ull) {
            v = 1000000000ull; /* clamped: more than any text has */
        }
        digits++;
    }
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        while (r->p < r->end && *r->p == '0') {
            r->p++;
        }
    }
    if (digits == 0 || (r->p < r->end && strchr(".eE0123456789", *r->p) != NULL)) {
        agent_fail(2, NAME, "%s must be a non-negative whole number", name);
    }
    return v;
}

/* --- counting ---------------------------------------------------------------------------- */

typedef struct {
    uint32_t start, len, count;
} Entry;

static Entry *table;
static size_t table_cap, table_used;
static const unsigned char *text;

static uint32_t hash(const unsigned char *s, uint32_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (uint32_t i = 0; i < n; i++) {
        h = (h ^ s[i]) * 16777619u;
    }
    return h;
}

/* Put a word the table does not hold yet where it belongs. */
static void place(Entry entry) {
    size_t mask = table_cap - 1;
    size_t at = hash(text + entry.start, entry.len) & mask;
    while (table[at].count) {
        at = (at + 1) & mask;
    }
    table[at] = entry;
    table_used++;
}

static void grow(void) {
    Entry *old = table;
    size_t old_cap = table_cap;
    table_cap = old_cap ? old_cap * 2 : 1024;
    table = calloc(table_cap, sizeof(Entry));
    if (table == NULL) {
        agent_fail(1, NAME, "out of memory");
    }
    table_used = 0;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].count) {
            place(old[i]);
        }
    }
    free(old);
}

static void insert(uint32_t start, uint32_t len) {
    if ((table_used + 1) * 2 > table_cap) {
        grow();
    }
    size_t mask = table_cap - 1;
    size_t at = hash(text + start, len) & mask;
    while (table[at].count) {
        if (table[at].len == len && memcmp(text + table[at].start, text + start, len) == 0) {
            table[at].count++;
            return;
        }
        at = (at + 1) & mask;
    }
    place((Entry){start, len, 1});
}

static int word_byte(unsigned char c) {
    return c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '\'';
}

static int by_frequency(const void *a, const void *b) {
    const Entry *x = a, *y = b;
    if (x->count != y->count) {
        return x->count > y->count ? -1 : 1;
    }
    uint32_t n = x->len < y->len ? x->len : y->len;
    int order = memcmp(text + x->start, text + y->start, n);
    if (order != 0) {
        return order;
    }
    return x->len < y->len ? -1 : (x->len > y->len);
}

static void put_json_string(Buf *out, const unsigned char *s, size_t n) {
    buf_str(out, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            unsigned char escaped[2] = {'\\', c};
            buf_put(out, escaped, 2);
        } else if (c < 0x20) {
            char escaped[8];
            snprintf(escaped, sizeof escaped, "\\u%04x", c);
            buf_str(out, escaped);
        } else {
            buf_put(out, &c, 1);
        }
    }
    buf_str(out, "\"");
}

int main(void) {
    Buf input = {0};
    for (;;) {
        buf_reserve(&input, 64 * 1024);
        ssize_t n = agent_read(input.data + input.len, input.cap - input.len);
        if (n < 0) {
            agent_fail(1, NAME, "cannot read input");
        }
        if (n == 0) {
            break;
        }
        input.len += (size_t)n;
    }

    Buf words = {0};
    int have_text = 0, ignore_case = 0;
    uint64_t min_length = 1, top = 5;
    Reader r = {input.data, input.data + input.len};
    skip_ws(&r);
    if (r.p >= r.end || *r.p != '{') {
        agent_fail(2, NAME, "input must be a JSON object, like {\"text\": \"...\"}");
    }
    r.p++;
    skip_ws(&r);
    if (r.p < r.end && *r.p == '}') {
        r.p++;
    } else {
        for (;;) {
            skip_ws(&r);
            if (r.p >= r.end || *r.p != '"') {
                bad("expected a member name");
            }
            r.p++;
            Buf key = {0};
            read_string(&r, &key);
            skip_ws(&r);
            if (r.p >= r.end || *r.p != ':') {
                bad("expected ':'");
            }
            r.p++;
            skip_ws(&r);
#define IS(name) (key.len == sizeof(name) - 1 && memcmp(key.data, name, key.len) == 0)
            if (IS("text")) {
                if (r.p >= r.end || *r.p != '"') {
                    agent_fail(2, NAME, "text must be a string");
                }
                r.p++;
                words.len = 0;
                read_string(&r, &words);
                have_text = 1;
            } else if (IS("ignore_case")) {
                ignore_case = read_bool(&r, "ignore_case");
            } else if (IS("min_length")) {
                min_length = read_count(&r, "min_length");
            } else if (IS("top")) {
                top = read_count(&r, "top");
            } else {
                skip_value(&r, 1);
            }
#undef IS
            free(key.data);
            skip_ws(&r);
            if (r.p < r.end && *r.p == ',') {
                r.p++;
                continue;
            }
            if (r.p < r.end && *r.p == '}') {
                r.p++;
                break;
            }
            bad("expected ',' or '}'");
        }
    }
    skip_ws(&r);
    if (r.p != r.end) {
        bad("text after the JSON object");
    }
    if (!have_text) {
        agent_fail(2, NAME, "input has no \"text\"");
    }
    if (words.len > UINT32_MAX / 2) {
        agent_fail(2, NAME, "text is too long");
    }

    if (ignore_case) {
        for (size_t i = 0; i < words.len; i++) {
            if (words.data[i] >= 'A' && words.data[i] <= 'Z') {
                words.data[i] = (unsigned char)(words.data[i] - 'A' + 'a');
            }
        }
    }
    text = words.data;
    uint64_t total = 0;
    size_t i = 0;
    while (i < words.len) {
        if (!word_byte(words.data[i])) {
            i++;
            continue;
        }
        size_t start = i;
        uint64_t chars = 0;
        while (i < words.len && word_byte(words.data[i])) {
            if ((words.data[i] & 0xC0) != 0x80) {
                chars++; /* not a UTF-8 continuation byte: a new character */
            }
            i++;
        }
        if (chars >= min_length) {
            total++;
            insert((uint32_t)start, (uint32_t)(i - start));
        }
    }

    Entry *found = malloc((table_used ? table_used : 1) * sizeof(Entry));
    if (found == NULL) {
        agent_fail(1, NAME, "out of memory");
    }
    size_t unique = 0;
    for (size_t k = 0; k < table_cap; k++) {
        if (table[k].count) {
            found[unique++] = table[k];
        }
    }
    qsort(found, unique, sizeof(Entry), by_frequency);

    Buf out = {0};
    buf_str(&out, "{\"words\": ");
    buf_u64(&out, total);
    buf_str(&out, ", \"unique\": ");
    buf_u64(&out, unique);
    buf_str(&out, ", \"top\": [");
    for (size_t k = 0; k < unique && k < top; k++) {
        if (k) {
            buf_str(&out, ", ");
        }
        buf_str(&out, "{\"word\": ");
        put_json_string(&out, text + found[k].start, found[k].len);
        buf_str(&out, ", \"count\": ");
        buf_u64(&out, found[k].count);
        buf_str(&out, "}");
    }
    buf_str(&out, "]}\n");
    agent_emit(NAME, (const char *)out.data, out.len);
    return 0;
}
