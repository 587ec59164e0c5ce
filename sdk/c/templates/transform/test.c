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

static void values_are_upper_cased_and_empty_ones_rejected(void) {
    const char *values[] = {"hello", "", "World"};
    sluice_builder b = {0};
    sluice_batch input = sluice_batch_of(&b, values, 3);
    sluice_output out = {0};
    sluice_params none = {0};
    sluice_context ctx = {0};
    CHECK(plugin_init(&none) == NULL);
    CHECK(plugin_transform(&ctx, &input, &out).kind == SLUICE_OK);
    CHECK(sluice_output_len(&out, &input) == 2);
    size_t n;
    const uint8_t *v = sluice_output_value(&out, &input, 0, &n);
    CHECK(n == 5 && memcmp(v, "HELLO", 5) == 0);
    v = sluice_output_value(&out, &input, 1, &n);
    CHECK(n == 5 && memcmp(v, "WORLD", 5) == 0);
    CHECK(out.rejects_len == 1 && out.rejects[0].index == 1);
    sluice_output_free(&out);
    sluice_builder_free(&b);
}

static void unknown_parameters_are_refused(void) {
    const char *keys[] = {"nope"}, *values[] = {"1"};
    sluice_params params = {keys, values, 1};
    CHECK(plugin_init(&params) != NULL);
}

int main(void) {
    values_are_upper_cased_and_empty_ones_rejected();
    unknown_parameters_are_refused();
    printf("NAME: %s\n", failed ? "FAILED" : "ok");
    return failed != 0;
}
