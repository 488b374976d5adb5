/*
 * primes: count the primes <= n with a segmented sieve of Eratosthenes.
 *
 * Input: a decimal integer n, 0 <= n <= 50000000, optionally surrounded by
 * ASCII whitespace (no sign, no other characters).
 * Output (one line): {"n": n, "count": C, "largest": L}
 * where L is the largest prime <= n, or null when there is none (n < 2).
 *
 * Work grows with n (about n log log n steps); memory stays small (a 32 KiB
 * segment plus the base primes up to sqrt(n)), so n is a convenient knob for
 * producing CPU-heavy tasks.
 *
 * Exit codes: 0 success; 1 read or write error; 2 invalid input.
 */
#include <stdint.h>

#include "agent_io.h"

#define MAX_N 50000000u
#define SEGMENT 32768u /* odd numbers per segment */

static unsigned char buf[4096];
static unsigned char segment[SEGMENT];
static uint32_t base_primes[1024]; /* odd primes <= sqrt(MAX_N) = 7071: 899 of them */
static unsigned char small[7072];

static void invalid(void) {
    agent_fail(2, "primes", "expected an integer between 0 and %u", MAX_N);
}

static int is_ws(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static uint32_t read_n(void) {
    enum { LEADING, DIGITS, TRAILING } state = LEADING;
    uint32_t n = 0;
    int too_big = 0;
    for (;;) {
        ssize_t got = agent_read(buf, sizeof buf);
        if (got < 0) {
            agent_fail(1, "primes", "cannot read input");
        }
        if (got == 0) {
            break;
        }
        for (ssize_t i = 0; i < got; i++) {
            unsigned char c = buf[i];
            if (c >= '0' && c <= '9') {
                if (state == TRAILING) {
                    invalid();
                }
                state = DIGITS;
                if (!too_big) {
                    n = n * 10 + (uint32_t)(c - '0');
                    if (n > MAX_N) {
                        too_big = 1;
                    }
                }
            } else if (is_ws(c)) {
                if (state == DIGITS) {
                    state = TRAILING;
                }
            } else {
                invalid();
            }
        }
    }
    if (state == LEADING || too_big) {
        invalid();
    }
    return n;
}

int main(void) {
    uint32_t n = read_n();
    uint32_t count = 0, largest = 0;

    if (n >= 2) {
        count = 1; /* the prime 2 */
        largest = 2;

        /* Odd base primes p with p * p <= n, by a plain sieve. */
        uint32_t root = 1;
        while ((root + 1) * (root + 1) <= n) {
            root++;
        }
        size_t n_base = 0;
        for (uint32_t i = 3; i <= root; i += 2) {
            if (!small[i]) {
                base_primes[n_base++] = i;
                for (uint32_t j = i * i; j <= root; j += 2 * i) {
                    small[j] = 1;
                }
            }
        }

        /* Segments of odd numbers: index k stands for low + 2k. */
        for (uint32_t low = 3; low <= n; low += 2 * SEGMENT) {
            uint32_t span = (n - low) / 2 + 1;
            if (span > SEGMENT) {
                span = SEGMENT;
            }
            uint32_t high = low + 2 * (span - 1);
            memset(segment, 1, span);
            for (size_t b = 0; b < n_base; b++) {
                uint32_t p = base_primes[b];
                if (p * p > high) {
                    break;
                }
                uint32_t start = (low + p - 1) / p * p;
                if (start < p * p) {
                    start = p * p;
                }
                if ((start & 1u) == 0) {
                    start += p;
                }
                for (uint32_t k = (start - low) / 2; k < span; k += p) {
                    segment[k] = 0;
                }
            }
            for (uint32_t k = 0; k < span; k++) {
                if (segment[k]) {
                    count++;
                    largest = low + 2 * k;
                }
            }
        }
    }

    char out[96];
    int len;
    if (count > 0) {
        len = snprintf(out, sizeof out, "{\"n\": %u, \"count\": %u, \"largest\": %u}\n", n, count,
                       largest);
    } else {
        len = snprintf(out, sizeof out, "{\"n\": %u, \"count\": 0, \"largest\": null}\n", n);
    }
    agent_emit("primes", out, (size_t)len);
    return 0;
}
