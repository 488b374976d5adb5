/*
 * wordcount: count words, lines, characters and bytes of UTF-8 text.
 *
 * Output (one line): {"words": W, "lines": L, "chars": C, "bytes": B}
 *
 *   bytes  input length in bytes.
 *   chars  Unicode code points. Invalid UTF-8 is decoded like Python's
 *          bytes.decode("utf-8", "replace"): each maximal invalid subsequence
 *          counts as one U+FFFD character.
 *   words  maximal runs of non-whitespace characters; whitespace is the
 *          Unicode White_Space property (ASCII space, \t \n \v \f \r, U+0085,
 *          U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F,
 *          U+3000).
 *   lines  number of '\n' bytes, plus one if the input is non-empty and does
 *          not end with '\n' (so "a\nb" has 2 lines, "a\n" has 1, "" has 0).
 *
 * Exit codes: 0 success; 1 read or write error.
 */
#include <stdint.h>

#include "agent_io.h"

#define REPLACEMENT 0xFFFDu

static unsigned char buf[64 * 1024];

static uint64_t n_words, n_chars, n_bytes, n_newlines;
static int in_word;

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

static void emit(uint32_t cp) {
    n_chars++;
    if (is_space(cp)) {
        in_word = 0;
    } else if (!in_word) {
        in_word = 1;
        n_words++;
    }
}

/* Streaming UTF-8 decoder state. */
static int need;                  /* continuation bytes still expected */
static uint32_t cp;               /* code point being assembled */
static unsigned char lo = 0x80, hi = 0xBF; /* valid range for the next byte */

static void feed(unsigned char b) {
    if (need > 0) {
        if (b >= lo && b <= hi) {
            cp = (cp << 6) | (b & 0x3Fu);
            lo = 0x80;
            hi = 0xBF;
            if (--need == 0) {
                emit(cp);
            }
            return;
        }
        /* Truncated sequence: one replacement, then reconsider b. */
        emit(REPLACEMENT);
        need = 0;
        lo = 0x80;
        hi = 0xBF;
    }
    if (b < 0x80) {
        emit(b);
    } else if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
        cp = b & 0x1Fu;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        cp = b & 0x0Fu;
        if (b == 0xE0) {
            lo = 0xA0; /* no overlong forms */
        } else if (b == 0xED) {
            hi = 0x9F; /* no surrogates */
        }
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        cp = b & 0x07u;
        if (b == 0xF0) {
            lo = 0x90; /* no overlong forms */
        } else if (b == 0xF4) {
            hi = 0x8F; /* nothing above U+10FFFF */
        }
    } else {
        emit(REPLACEMENT); /* stray continuation byte or invalid lead byte */
    }
}

int main(void) {
    unsigned char last = 0;
    for (;;) {
        ssize_t n = agent_read(buf, sizeof buf);
        if (n < 0) {
            agent_fail(1, "wordcount", "cannot read input");
        }
        if (n == 0) {
            break;
        }
        for (ssize_t i = 0; i < n; i++) {
            unsigned char b = buf[i];
            if (b == '\n') {
                n_newlines++;
            }
            feed(b);
        }
        n_bytes += (uint64_t)n;
        last = buf[n - 1];
    }
    if (need > 0) {
        emit(REPLACEMENT);
    }
    uint64_t lines = n_newlines + (n_bytes > 0 && last != '\n' ? 1 : 0);

    char out[160];
    int len = snprintf(out, sizeof out,
                       "{\"words\": %llu, \"lines\": %llu, \"chars\": %llu, \"bytes\": %llu}\n",
                       (unsigned long long)n_words, (unsigned long long)lines,
                       (unsigned long long)n_chars, (unsigned long long)n_bytes);
    agent_emit("wordcount", out, (size_t)len);
    return 0;
}
