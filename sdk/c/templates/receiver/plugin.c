/* NAME: a sluice receiver (a source the host polls). It counts from 0 to `count` (default 10)
 * on one partition, then ends; its position is the next number, so a restart goes on from
 * there. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

static uint64_t count = 10, next;

/* `text` as a decimal number into `*out`; 0 when it is not one. */
static int parse_u64(const char *text, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (!*text || *end || errno || text[0] == '-') return 0;
    *out = v;
    return 1;
}

const char *plugin_init(const sluice_params *params) {
    static const char *const allowed[] = {"count", NULL};
    const char *wrong = sluice_params_allow_only(params, allowed);
    if (wrong) return wrong;
    const char *c = sluice_param(params, "count");
    count = 10;
    if (c && !parse_u64(c, &count)) return "parameter \"count\": not a whole number";
    next = 0;
    return NULL;
}

uint32_t plugin_partitions(void) { return 1; }

sluice_error plugin_open(uint32_t partition, const char *position) {
    (void)partition;
    next = 0;
    if (position && !parse_u64(position, &next))
        return sluice_fatal("position \"%s\" is not a number", position);
    return sluice_ok();
}

sluice_error plugin_poll(uint32_t partition, uint32_t max_records, uint32_t max_bytes,
                         sluice_builder *out, char **position, bool *end) {
    (void)partition;
    (void)max_bytes;
    char text[24];
    while (next < count && out->len < max_records) {
        int n = snprintf(text, sizeof text, "%llu", (unsigned long long)next);
        sluice_builder_push(out, text, (size_t)n);
        next++;
    }
    snprintf(text, sizeof text, "%llu", (unsigned long long)next);
    *position = strdup(text);
    *end = next == count;
    return sluice_ok();
}
