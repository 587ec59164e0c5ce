/* identity's logic, natively: `make test`. */
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

static void both_modes_give_the_input_back(const char *mode) {
    const char *keys[] = {"mode"}, *values[] = {mode};
    sluice_params params = {keys, values, 1};
    const char *records[] = {"a", "", "ccc"};
    sluice_builder b = {0};
    sluice_batch input = sluice_batch_of(&b, records, 3);
    sluice_output out = {0};
    sluice_context ctx = {0};
    CHECK(plugin_init(&params) == NULL);
    CHECK(plugin_transform(&ctx, &input, &out).kind == SLUICE_OK);
    CHECK(sluice_output_len(&out, &input) == 3);
    for (size_t i = 0; i < 3; i++) {
        size_t n;
        const uint8_t *v = sluice_output_value(&out, &input, i, &n);
        CHECK(n == strlen(records[i]) && memcmp(v, records[i], n) == 0);
    }
    CHECK(out.origins == NULL); /* a map: no origins cross the boundary */
    sluice_output_free(&out);
    sluice_builder_free(&b);
}

int main(void) {
    both_modes_give_the_input_back("bulk");
    both_modes_give_the_input_back("each");
    const char *keys[] = {"mode"}, *values[] = {"some"};
    sluice_params bad = {keys, values, 1};
    CHECK(plugin_init(&bad) != NULL);
    printf("identity: %s\n", failed ? "FAILED" : "ok");
    return failed != 0;
}
