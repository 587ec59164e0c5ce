/* NAME's logic, natively: `make test`. */
#include <stdio.h>
#include <string.h>

#include "sluice.h"

static int failed;
#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond);        \
            failed++;                                                                 \
        }                                                                             \
    } while (0)

static void values_are_summed_per_key_and_retracted(void) {
    const char *values[] = {"2", "40", "x"};
    sluice_builder b = {0}, keys = {0}, accs = {0};
    sluice_batch input = sluice_batch_of(&b, values, 3);
    sluice_output rejects = {0};
    sluice_params none = {0};
    CHECK(plugin_init(&none) == NULL);
    sluice_aggregate_add(&input, &keys, &accs, &rejects);
    CHECK(keys.len == 1);                                     /* one key: the empty one */
    CHECK(rejects.rejects_len == 1 && rejects.rejects[0].index == 2);
    sluice_batch acc = sluice_builder_batch(&accs);
    size_t n;
    const uint8_t *a = sluice_column_get(&acc.values, 0, &n);
    sluice_bytes out = {0}, merged = {0};
    CHECK(plugin_finish(NULL, 0, a, n, &out).kind == SLUICE_OK);
    CHECK(out.len == 2 && memcmp(out.data, "42", 2) == 0);

    /* Merged with itself, then one copy retracted: 42 again; both retracted: empty. */
    sluice_bytes_set(&merged, a, n);
    CHECK(plugin_merge(&merged, a, n).kind == SLUICE_OK);
    CHECK(plugin_finish(NULL, 0, merged.data, merged.len, &out).kind == SLUICE_OK);
    CHECK(out.len == 2 && memcmp(out.data, "84", 2) == 0);
    CHECK(plugin_can_retract());
    CHECK(plugin_retract(&merged, a, n).kind == SLUICE_OK);
    CHECK(plugin_finish(NULL, 0, merged.data, merged.len, &out).kind == SLUICE_OK);
    CHECK(out.len == 2 && memcmp(out.data, "42", 2) == 0);
    CHECK(plugin_retract(&merged, a, n).kind == SLUICE_OK);
    CHECK(merged.len == 0);

    sluice_bytes_free(&out);
    sluice_bytes_free(&merged);
    sluice_output_free(&rejects);
    sluice_builder_free(&b);
    sluice_builder_free(&keys);
    sluice_builder_free(&accs);
}

int main(void) {
    values_are_summed_per_key_and_retracted();
    printf("NAME: %s\n", failed ? "FAILED" : "ok");
    return failed != 0;
}
