/*
 * echo: copy stdin to stdout unchanged (binary-safe, streamed).
 *
 * Exit codes: 0 success; 1 read or write error.
 */
#include "agent_io.h"

static unsigned char buf[64 * 1024];

int main(void) {
    for (;;) {
        ssize_t n = agent_read(buf, sizeof buf);
        if (n < 0) {
            agent_fail(1, "echo", "cannot read input");
        }
        if (n == 0) {
            return 0;
        }
        if (agent_write_all(STDOUT_FILENO, buf, (size_t)n) != 0) {
            agent_fail(1, "echo", "cannot write output");
        }
    }
}
