/*
 * countcheck: an evaluator (SPEC §21) that recounts the words of the task's input and
 * checks the "words" of a wordcount or wordstats output against it.
 *
 * Input:  {"task_input": ..., "output": "<the task's stdout>", "contract": ...}
 * Output: {"accept": true|false, "score": S, "reason": "..."}
 *
 * The task input says which rule counts the words:
 *   a string (wordcount's input): maximal runs of characters that are not Unicode
 *     White_Space, as in wordcount.c;
 *   an object with a string "text" (wordstats' input): maximal runs of ASCII letters,
 *     digits and apostrophes and of non-ASCII characters, counting only words of at least
 *     "min_length" code points (a number; 1 when absent), as in wordstats.c.
 * The output must be a JSON object whose "words" is a whole number from 0 to 2^53;
 * nothing else in it is read. accept = the two counts are equal; score = the smaller
 * count / the larger (1 when both are 0), so a near miss scores near 1.
 *
 * Rejected with score 0: an input that is not a JSON object with a string "output"; a
 * task input that is neither a string nor an object with a string "text"; an output that
 * is not a JSON object with a whole-number "words". The contract is not read.
 * Exit codes: 0, or 1 on an I/O error.
 */
#define EVAL_NAME "countcheck"
#include "evaluator.h"

#define MAX_WORDS 9007199254740992.0 /* 2^53 */

static int is_space(uint32_t cp) {
    if (cp <= 0x20) {
        return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    }
    if (cp < 0x85) {
        return 0;
    }
    switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
        return 1;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

/* wordcount's words, in valid UTF-8 (every string the reader decodes is). */
static uint64_t whitespace_words(const unsigned char *s, size_t n) {
    uint64_t words = 0;
    int in_word = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t cp = s[i];
        size_t len = 1;
        if (cp >= 0xF0) {
            cp = ((cp & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) |
                 (s[i + 3] & 0x3Fu);
            len = 4;
        } else if (cp >= 0xE0) {
            cp = ((cp & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
            len = 3;
        } else if (cp >= 0xC0) {
            cp = ((cp & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
            len = 2;
        }
        i += len;
        if (is_space(cp)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            words++;
        }
    }
    return words;
}

static int word_byte(unsigned char c) {
    return c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '\'';
}

/* wordstats' words of at least `least` code points. */
static uint64_t wordstats_words(const unsigned char *s, size_t n, double least) {
    uint64_t words = 0;
    size_t i = 0;
    while (i < n) {
        if (!word_byte(s[i])) {
            i++;
            continue;
        }
        uint64_t chars = 0;
        while (i < n && word_byte(s[i])) {
            chars += (s[i] & 0xC0) != 0x80;
            i++;
        }
        words += (double)chars >= least;
    }
    return words;
}

int main(void) {
    EvalInput in = eval_input_read();
    uint64_t want;
    int32_t text = j_member(in.task_input, "text");
    if (j_type(in.task_input) == J_STRING) {
        want = whitespace_words((const unsigned char *)N(in.task_input)->str,
                                N(in.task_input)->len);
    } else if (j_type(text) == J_STRING) {
        int32_t least = j_member(in.task_input, "min_length");
        want = wordstats_words((const unsigned char *)N(text)->str, N(text)->len,
                               j_type(least) == J_NUMBER ? N(least)->num : 1.0);
    } else {
        reject("the task input is neither a text nor an object with a string \"text\"");
        return 0;
    }

    int32_t words = j_member(eval_output_parse(&in), "words");
    if (!j_is_whole(words) || N(words)->num < 0 || N(words)->num > MAX_WORDS) {
        reject("the output is not a JSON object with a whole-number \"words\"");
    }
    uint64_t got = (uint64_t)N(words)->num;

    Buf reason = {0};
    buf_str(&reason, "the output's \"words\" is ");
    buf_u64(&reason, got);
    if (got == want) {
        buf_str(&reason, ", the number of words in the input");
    } else {
        buf_str(&reason, ", but the input has ");
        buf_u64(&reason, want);
        buf_str(&reason, want == 1 ? " word" : " words");
    }
    uint64_t smaller = got < want ? got : want, larger = got < want ? want : got;
    verdict(got == want, smaller, larger, reason.data, reason.len);
    return 0;
}
