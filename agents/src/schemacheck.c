/*
 * schemacheck: an evaluator (SPEC §21) that checks a task's output against the
 * contract's output schema and against a reference value in the task's input.
 *
 * Input:  {"task_input": ..., "output": "<the task's stdout>",
 *          "contract": {"input_schema": ..., "output_schema": ...}}
 * Output: {"accept": true|false, "score": S, "reason": "..."}
 *
 * Checks, in this order, each counting once:
 *   1. the output is JSON (when it is not, nothing else is checked);
 *   2. every schema keyword below that applies at a place of the output;
 *   3. when task_input is an object with a member "expected": if that is an object, each
 *      of its members equals the output's member of the same name; otherwise the whole
 *      output equals it.
 * score = passed / checks, accept = every check passed, and the reason is
 * "P of C checks passed", then "; first failure: <where>: <what>" after a failure.
 *
 * Schema keywords (a practical subset of JSON Schema 2020-12), each where it applies:
 *   any value: true/false schemas, type (a name or a list), enum, const;
 *   numbers:   minimum, maximum, exclusiveMinimum, exclusiveMaximum;
 *   strings:   minLength, maxLength (in code points);
 *   arrays:    minItems, maxItems, items (one schema for every item);
 *   objects:   required (one check per name), properties, additionalProperties (false:
 *              one check per object; a schema: applied to each other member).
 * Other keywords ($ref, anyOf, pattern, format, ...) and keywords whose value has the
 * wrong kind are ignored. No output_schema (absent or null) means no schema checks.
 *
 * An input that is not a JSON object with a string "output", or whose contract is not an
 * object or null, or whose output_schema is not an object, a boolean or null, is rejected
 * with score 0 and a reason that says so. Exit codes: 0, or 1 on an I/O error.
 */
#define EVAL_NAME "schemacheck"
#include "evaluator.h"

static uint64_t passed, total;
static Buf failure;   /* the first failure's message */
static Buf where;     /* JSON pointer of the place being checked, after "output" */

/* Append "/" and `name` as a JSON pointer's segment ("~" as "~0", "/" as "~1"). */
static void put_segment(Buf *b, const char *name, size_t len) {
    buf_reserve(b, 1 + 2 * len);
    char *w = b->data + b->len;
    *w++ = '/';
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '~' || name[i] == '/') {
            *w++ = '~';
            *w++ = name[i] == '~' ? '0' : '1';
        } else {
            *w++ = name[i];
        }
    }
    *w = '\0';
    b->len = (size_t)(w - b->data);
}

/* One check: `what` is said of `where` (and its member `name`, when given) if it fails. */
static void check_n(int ok, const char *name, size_t name_len, const char *what, size_t len) {
    total++;
    if (ok) {
        passed++;
        return;
    }
    if (failure.len) {
        return;
    }
    buf_put(&failure, where.data, where.len);
    if (name != NULL) {
        put_segment(&failure, name, name_len);
    }
    buf_str(&failure, ": ");
    buf_put(&failure, what, len);
    cut_utf8(&failure, 0, REASON_PART_MAX);
}

static void check(int ok, const char *name, size_t name_len, const char *what) {
    check_n(ok, name, name_len, what, strlen(what));
}

static size_t enter(const char *name, size_t len) {
    size_t mark = where.len;
    put_segment(&where, name, len);
    return mark;
}

static void leave(size_t mark) { where.len = mark; }

static int type_is(int32_t value, const char *name, size_t len) {
#define IS(word) (len == sizeof(word) - 1 && memcmp(name, word, len) == 0)
    switch (N(value)->type) {
    case J_NULL:
        return IS("null");
    case J_TRUE:
    case J_FALSE:
        return IS("boolean");
    case J_NUMBER:
        return IS("number") || (IS("integer") && j_is_whole(value));
    case J_STRING:
        return IS("string");
    case J_ARRAY:
        return IS("array");
    default:
        return IS("object");
    }
#undef IS
}

static void check_type(int32_t type, int32_t value) {
    int32_t first = type, ok = 0, names = 0;
    if (j_type(type) == J_STRING) {
        ok = type_is(value, N(type)->str, N(type)->len);
        names = 1;
    } else if (j_type(type) == J_ARRAY) {
        first = N(type)->first;
        for (int32_t t = first; t >= 0; t = N(t)->next) {
            if (N(t)->type == J_STRING) {
                ok = ok || type_is(value, N(t)->str, N(t)->len);
                names++;
            }
        }
    }
    if (names == 0) {
        return;
    }
    if (ok || failure.len) {
        check(ok, NULL, 0, "");
        return;
    }
    /* The first failure: say which types were wanted. */
    Buf what = {0};
    for (int32_t t = first; t >= 0; t = j_type(type) == J_STRING ? -1 : N(t)->next) {
        if (N(t)->type == J_STRING) {
            buf_str(&what, what.len ? " or " : "should be ");
            buf_put(&what, N(t)->str, N(t)->len);
        }
    }
    check_n(0, NULL, 0, what.data, what.len);
    free(what.data);
}

/* The keywords read, found once per schema (an items schema is applied to every item). */
enum {
    K_TYPE,
    K_ENUM,
    K_CONST,
    K_MINIMUM,
    K_MAXIMUM,
    K_EXCLUSIVE_MINIMUM,
    K_EXCLUSIVE_MAXIMUM,
    K_MIN_LENGTH,
    K_MAX_LENGTH,
    K_MIN_ITEMS,
    K_MAX_ITEMS,
    K_ITEMS,
    K_REQUIRED,
    K_PROPERTIES,
    K_ADDITIONAL_PROPERTIES,
    K_COUNT
};

static const char *const KEYWORDS[K_COUNT] = {
    "type",      "enum",      "const",    "minimum",  "maximum",  "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "items",
    "required",  "properties", "additionalProperties",
};

typedef struct {
    int32_t at[K_COUNT]; /* the keyword's value (the last one given), or -1 */
} Keywords;

static Keywords *found;
static size_t found_used, found_cap;

static Keywords keywords(int32_t schema) {
    if (N(schema)->aux >= 0) {
        return found[N(schema)->aux];
    }
    Keywords k;
    for (int i = 0; i < K_COUNT; i++) {
        k.at[i] = -1;
    }
    for (int32_t m = N(schema)->first; m >= 0; m = N(m)->next) {
        for (int i = 0; i < K_COUNT; i++) {
            if (strlen(KEYWORDS[i]) == N(m)->key_len &&
                memcmp(KEYWORDS[i], N(m)->key, N(m)->key_len) == 0) {
                k.at[i] = m;
            }
        }
    }
    if (found_used == found_cap) {
        found_cap = found_cap ? found_cap * 2 : 64;
        found = realloc(found, found_cap * sizeof(Keywords));
        if (found == NULL) {
            agent_fail(1, EVAL_NAME, "out of memory");
        }
    }
    found[found_used] = k;
    N(schema)->aux = (int32_t)found_used++;
    return k;
}

/* A keyword with a number as its value: 1 and that number, or 0. */
static int bound(int32_t v, double *out) {
    if (j_type(v) != J_NUMBER) {
        return 0;
    }
    *out = N(v)->num;
    return 1;
}

static double code_points(int32_t string) {
    uint64_t n = 0;
    for (uint32_t i = 0; i < N(string)->len; i++) {
        n += ((unsigned char)N(string)->str[i] & 0xC0) != 0x80;
    }
    return (double)n;
}

static void walk(int32_t schema, int32_t value) {
    int kind = N(schema)->type;
    if (kind == J_FALSE) {
        check(0, NULL, 0, "is not allowed by the schema");
    }
    if (kind != J_OBJECT) {
        return;
    }
    Keywords k = keywords(schema);
    check_type(k.at[K_TYPE], value);
    int32_t options = k.at[K_ENUM];
    if (j_type(options) == J_ARRAY) {
        int ok = 0;
        for (int32_t o = N(options)->first; o >= 0 && !ok; o = N(o)->next) {
            ok = j_equal(o, value);
        }
        check(ok, NULL, 0, "is not one of the enum values");
    }
    int32_t constant = k.at[K_CONST];
    if (constant >= 0) {
        check(j_equal(constant, value), NULL, 0, "is not the const value");
    }
    double limit;
    int type = N(value)->type;
    if (type == J_NUMBER) {
        double x = N(value)->num;
        if (bound(k.at[K_MINIMUM], &limit)) {
            check(x >= limit, NULL, 0, "is less than minimum");
        }
        if (bound(k.at[K_MAXIMUM], &limit)) {
            check(x <= limit, NULL, 0, "is greater than maximum");
        }
        if (bound(k.at[K_EXCLUSIVE_MINIMUM], &limit)) {
            check(x > limit, NULL, 0, "is not greater than exclusiveMinimum");
        }
        if (bound(k.at[K_EXCLUSIVE_MAXIMUM], &limit)) {
            check(x < limit, NULL, 0, "is not less than exclusiveMaximum");
        }
    } else if (type == J_STRING) {
        if (bound(k.at[K_MIN_LENGTH], &limit)) {
            check(code_points(value) >= limit, NULL, 0, "is shorter than minLength");
        }
        if (bound(k.at[K_MAX_LENGTH], &limit)) {
            check(code_points(value) <= limit, NULL, 0, "is longer than maxLength");
        }
    } else if (type == J_ARRAY) {
        double count = (double)N(value)->len;
        if (bound(k.at[K_MIN_ITEMS], &limit)) {
            check(count >= limit, NULL, 0, "has fewer items than minItems");
        }
        if (bound(k.at[K_MAX_ITEMS], &limit)) {
            check(count <= limit, NULL, 0, "has more items than maxItems");
        }
        int32_t items = k.at[K_ITEMS];
        if (j_type(items) == J_OBJECT || j_type(items) == J_FALSE) {
            uint64_t index = 0;
            for (int32_t item = N(value)->first; item >= 0; item = N(item)->next, index++) {
                char digits[24];
                size_t n = sizeof digits;
                uint64_t rest = index;
                do {
                    digits[--n] = (char)('0' + rest % 10);
                    rest /= 10;
                } while (rest);
                size_t mark = enter(digits + n, sizeof digits - n);
                walk(items, item);
                leave(mark);
            }
        }
    } else if (type == J_OBJECT) {
        int32_t required = k.at[K_REQUIRED];
        if (j_type(required) == J_ARRAY) {
            for (int32_t r = N(required)->first; r >= 0; r = N(r)->next) {
                if (N(r)->type == J_STRING) {
                    int ok = j_get(value, N(r)->str, N(r)->len) >= 0;
                    check(ok, N(r)->str, N(r)->len, "is required");
                }
            }
        }
        int32_t properties = k.at[K_PROPERTIES];
        if (j_type(properties) == J_OBJECT) {
            for (int32_t p = N(properties)->first; p >= 0; p = N(p)->next) {
                int32_t member = j_get(value, N(p)->key, N(p)->key_len);
                if (member >= 0) {
                    size_t mark = enter(N(p)->key, N(p)->key_len);
                    walk(p, member);
                    leave(mark);
                }
            }
        }
        int32_t others = k.at[K_ADDITIONAL_PROPERTIES];
        if (j_type(others) == J_FALSE || j_type(others) == J_OBJECT) {
            int32_t first_other = -1;
            for (int32_t m = N(value)->first; m >= 0; m = N(m)->next) {
                if (j_get(properties, N(m)->key, N(m)->key_len) >= 0) {
                    continue;
                }
                if (first_other < 0) {
                    first_other = m;
                }
                if (j_type(others) == J_OBJECT) {
                    size_t mark = enter(N(m)->key, N(m)->key_len);
                    walk(others, m);
                    leave(mark);
                }
            }
            if (j_type(others) == J_FALSE) {
                int ok = first_other < 0;
                check(ok, ok ? NULL : N(first_other)->key, ok ? 0 : N(first_other)->key_len,
                      "is not allowed (additionalProperties is false)");
            }
        }
    }
}

int main(void) {
    EvalInput in = eval_input_read();
    int32_t schema = -1;
    if (in.contract >= 0 && N(in.contract)->type != J_NULL) {
        if (N(in.contract)->type != J_OBJECT) {
            reject("the contract is not an object");
        }
        schema = j_member(in.contract, "output_schema");
        int kind = j_type(schema);
        if (kind == J_NULL) {
            schema = -1;
        } else if (schema >= 0 && kind != J_OBJECT && kind != J_TRUE && kind != J_FALSE) {
            reject("the contract's output_schema is not an object or a boolean");
        }
    }
    buf_str(&where, "output");
    int32_t output = eval_output_parse(&in);
    check(output >= 0, NULL, 0, "is not JSON");
    if (output >= 0) {
        if (schema >= 0) {
            walk(schema, output);
        }
        int32_t expected = j_member(in.task_input, "expected");
        if (j_type(expected) == J_OBJECT) {
            for (int32_t e = N(expected)->first; e >= 0; e = N(e)->next) {
                int32_t got = j_get(output, N(e)->key, N(e)->key_len);
                size_t mark = enter(N(e)->key, N(e)->key_len);
                check(got >= 0 && j_equal(got, e), NULL, 0, "is not the expected value");
                leave(mark);
            }
        } else if (expected >= 0) {
            check(j_equal(output, expected), NULL, 0, "is not the expected value");
        }
    }
    Buf reason = {0};
    buf_u64(&reason, passed);
    buf_str(&reason, " of ");
    buf_u64(&reason, total);
    buf_str(&reason, " checks passed");
    if (failure.len) {
        buf_str(&reason, "; first failure: ");
        buf_put(&reason, failure.data, failure.len);
    }
    verdict(passed == total, passed, total, reason.data, reason.len);
    return 0;
}
