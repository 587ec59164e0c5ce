/* NAME's logic, natively: `make test`. */
#include <stdio.h>
#include <stdlib.h>
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

static void it_counts_and_resumes_at_its_position(void) {
    const char *keys[] = {"count"}, *values[] = {"5"};
    sluice_params params = {keys, values, 1};
    CHECK(plugin_init(&params) == NULL);
    CHECK(plugin_partitions() == 1);
    CHECK(plugin_open(0, NULL).kind == SLUICE_OK);
    sluice_builder out = {0};
    char *position = NULL;
    bool end = false;
    CHECK(plugin_poll(0, 3, 1 << 20, &out, &position, &end).kind == SLUICE_OK);
    CHECK(out.len == 3);
    CHECK(position && strcmp(position, "3") == 0);
    CHECK(!end);
    sluice_builder_free(&out);

    /* A fresh instance opened at the position goes on from there. */
    CHECK(plugin_init(&params) == NULL);
    CHECK(plugin_open(0, position).kind == SLUICE_OK);
    free(position);
    CHECK(plugin_poll(0, 100, 1 << 20, &out, &position, &end).kind == SLUICE_OK);
    sluice_batch got = sluice_builder_batch(&out);
    size_t n;
    CHECK(got.len == 2);
    const uint8_t *v = sluice_column_get(&got.values, 0, &n);
    CHECK(n == 1 && v[0] == '3');
    v = sluice_column_get(&got.values, 1, &n);
    CHECK(n == 1 && v[0] == '4');
    CHECK(end);
    free(position);
    sluice_builder_free(&out);
}

static void a_bad_count_is_refused(void) {
    const char *keys[] = {"count"}, *values[] = {"many"};
    sluice_params params = {keys, values, 1};
    CHECK(plugin_init(&params) != NULL);
}

int main(void) {
    it_counts_and_resumes_at_its_position();
    a_bad_count_is_refused();
    printf("NAME: %s\n", failed ? "FAILED" : "ok");
    return failed != 0;
}
