/*
 * sentiment: lexicon-based sentiment scoring of English text.
 *
 * Output (one line):
 *   {"score": S, "positive": P, "negative": N, "label": "positive", "words": W}
 *
 * A word is a maximal run of ASCII letters and apostrophes (' or U+2019)
 * containing at least one letter; every other byte separates words. Leading
 * and trailing apostrophes are stripped and matching against the built-in
 * lexicon is case-insensitive and whole-word. P and N count lexicon hits,
 * S = P - N, and the label is "positive" if S > 0, "negative" if S < 0,
 * otherwise "neutral". No negation handling: "not good" counts as positive.
 *
 * Exit codes: 0 success; 1 read or write error.
 */
#include <stdint.h>

#include "agent_io.h"

/* Lexicons, lower case, sorted in strcmp order (in_list relies on it). */
static const char *const POSITIVE[] = {
    "amazing", "awesome", "beautiful", "best", "better", "brilliant", "cool",
    "delighted", "easy", "effective", "enjoy", "enjoyed", "excellent", "excited",
    "fantastic", "fast", "favorite", "fun", "glad", "good", "great", "happy", "helpful",
    "impressive", "liked", "love", "loved", "lovely", "loves", "nice", "outstanding",
    "perfect", "pleased", "recommend", "reliable", "satisfied", "smooth", "solid",
    "superb", "thanks", "useful", "wonderful",
};

static const char *const NEGATIVE[] = {
    "angry", "annoying", "awful", "bad", "boring", "broken", "buggy", "confusing",
    "crash", "crashed", "difficult", "disappointed", "disappointing", "dislike",
    "error", "errors", "fail", "failed", "failure", "frustrating", "hate", "hated",
    "hates", "horrible", "lousy", "mediocre", "painful", "poor", "problem", "problems",
    "sad", "slow", "terrible", "ugly", "unhappy", "unreliable", "useless", "waste",
    "wasted", "worse", "worst", "wrong",
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_WORD 32

static unsigned char buf[64 * 1024];

static char word[MAX_WORD + 1]; /* lower-cased token, leading apostrophes dropped */
static size_t word_len;
static int word_letters;        /* letters seen in the current token */
static int word_too_long;
static int in_token;

static uint64_t n_words, n_pos, n_neg;

/* Binary search; each list must stay sorted (strcmp order). */
static int in_list(const char *const *list, size_t count, const char *w) {
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(w, list[mid]);
        if (cmp == 0) {
            return 1;
        }
        if (cmp < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return 0;
}

static void end_token(void) {
    if (!in_token) {
        return;
    }
    in_token = 0;
    if (word_letters > 0) {
        n_words++;
        if (!word_too_long) {
            while (word_len > 0 && word[word_len - 1] == '\'') {
                word_len--;
            }
            word[word_len] = '\0';
            if (in_list(POSITIVE, COUNT(POSITIVE), word)) {
                n_pos++;
            } else if (in_list(NEGATIVE, COUNT(NEGATIVE), word)) {
                n_neg++;
            }
        }
    }
    word_len = 0;
    word_letters = 0;
    word_too_long = 0;
}

/* Add one token character: a lower-case ASCII letter or '\''. */
static void token_char(char c) {
    in_token = 1;
    if (c == '\'') {
        if (word_len == 0) {
            return; /* strip leading apostrophes */
        }
    } else {
        word_letters++;
    }
    if (word_len < MAX_WORD) {
        word[word_len++] = c;
    } else {
        word_too_long = 1;
    }
}

/* Bytes of U+2019 RIGHT SINGLE QUOTATION MARK matched so far (E2 80 99). */
static int quote_state;

static void feed(unsigned char b) {
    if (quote_state == 1) {
        if (b == 0x80) {
            quote_state = 2;
            return;
        }
        quote_state = 0;
        end_token();
    } else if (quote_state == 2) {
        quote_state = 0;
        if (b == 0x99) {
            token_char('\'');
            return;
        }
        end_token();
    }
    if (b >= 'A' && b <= 'Z') {
        token_char((char)(b - 'A' + 'a'));
    } else if ((b >= 'a' && b <= 'z') || b == '\'') {
        token_char((char)b);
    } else if (b == 0xE2) {
        quote_state = 1;
    } else {
        end_token();
    }
}

int main(void) {
    for (;;) {
        ssize_t n = agent_read(buf, sizeof buf);
        if (n < 0) {
            agent_fail(1, "sentiment", "cannot read input");
        }
        if (n == 0) {
            break;
        }
        for (ssize_t i = 0; i < n; i++) {
            feed(buf[i]);
        }
    }
    end_token();

    int64_t score = (int64_t)n_pos - (int64_t)n_neg;
    const char *label = score > 0 ? "positive" : score < 0 ? "negative" : "neutral";
    char out[200];
    int len = snprintf(out, sizeof out,
                       "{\"score\": %lld, \"positive\": %llu, \"negative\": %llu, "
                       "\"label\": \"%s\", \"words\": %llu}\n",
                       (long long)score, (unsigned long long)n_pos, (unsigned long long)n_neg,
                       label, (unsigned long long)n_words);
    agent_emit("sentiment", out, (size_t)len);
    return 0;
}
