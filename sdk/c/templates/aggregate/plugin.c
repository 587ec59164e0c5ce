/* NAME: a sluice aggregate for `reduce-by-key-and-window` (`aggregate-plugin`): the sum of
 * the values, as decimal integers, per key. Every function must be deterministic.
 *
 * An accumulator is 16 bytes, little-endian: the sum (int64) and the number of records
 * (uint64); empty means no records. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

typedef struct sum {
    int64_t total;
    uint64_t records;
} sum;

static int decode(const uint8_t *bytes, size_t len, sum *s) {
    if (len == 0) { s->total = 0; s->records = 0; return 1; }
    if (len != sizeof *s) return 0;
    memcpy(s, bytes, sizeof *s); /* WebAssembly and x86 are little-endian */
    return 1;
}

static void encode(const sum *s, sluice_bytes *acc) {
    if (s->records == 0) sluice_bytes_set(acc, NULL, 0);
    else sluice_bytes_set(acc, s, sizeof *s);
}

const char *plugin_init(const sluice_params *params) {
    static const char *const allowed[] = {NULL};
    return sluice_params_allow_only(params, allowed);
}

bool plugin_can_retract(void) { return true; }

const char *plugin_add(sluice_bytes *acc, const sluice_record *record) {
    char text[32];
    size_t n = record->len;
    /* Trim ASCII spaces as Rust's str::trim does for these values. */
    const uint8_t *v = record->value;
    while (n && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')) v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\n' || v[n - 1] == '\r')) n--;
    if (n == 0 || n >= sizeof text) return "the value is not a decimal integer";
    memcpy(text, v, n);
    text[n] = 0;
    char *end;
    errno = 0;
    long long x = strtoll(text, &end, 10);
    if (*end || errno || text[0] == ' ') return "the value is not a decimal integer";
    sum s;
    if (!decode(acc->data, acc->len, &s)) return "the accumulator is corrupt";
    if (__builtin_add_overflow(s.total, (int64_t)x, &s.total)) return "the sum overflows";
    s.records++;
    encode(&s, acc);
    return NULL;
}

sluice_error plugin_merge(sluice_bytes *acc, const uint8_t *other, size_t other_len) {
    sum a, b;
    if (!decode(acc->data, acc->len, &a) || !decode(other, other_len, &b))
        return sluice_fatal("an accumulator is not %zu bytes", sizeof a);
    a.total += b.total;
    a.records += b.records;
    encode(&a, acc);
    return sluice_ok();
}

sluice_error plugin_retract(sluice_bytes *acc, const uint8_t *expired, size_t expired_len) {
    sum a, e;
    if (!decode(acc->data, acc->len, &a) || !decode(expired, expired_len, &e))
        return sluice_fatal("an accumulator is not %zu bytes", sizeof a);
    a.total -= e.total;
    a.records = a.records > e.records ? a.records - e.records : 0;
    encode(&a, acc); /* empty when no records are left: the key leaves the window */
    return sluice_ok();
}

sluice_error plugin_finish(const uint8_t *key, size_t key_len, const uint8_t *acc, size_t acc_len,
                           sluice_bytes *out) {
    (void)key;
    (void)key_len;
    sum s;
    if (!decode(acc, acc_len, &s)) return sluice_fatal("an accumulator is not %zu bytes", sizeof s);
    char text[24];
    int n = snprintf(text, sizeof text, "%lld", (long long)s.total);
    sluice_bytes_set(out, text, (size_t)n);
    return sluice_ok();
}
