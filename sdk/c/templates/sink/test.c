/* NAME's logic, natively: `make test`. */
#include <stdio.h>

#include "sluice.h"

extern uint64_t pending;

static int failed;
#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond);        \
            failed++;                                                                 \
        }                                                                             \
    } while (0)

static void a_commit_takes_what_was_written(void) {
    const char *ab[] = {"a", "b"}, *c[] = {"c"};
    sluice_builder b1 = {0}, b2 = {0};
    sluice_params none = {0};
    sluice_context ctx = {0};
    CHECK(plugin_init(&none) == NULL);
    sluice_batch first = sluice_batch_of(&b1, ab, 2), second = sluice_batch_of(&b2, c, 1);
    CHECK(plugin_write(&ctx, &first).kind == SLUICE_OK);
    CHECK(plugin_write(&ctx, &second).kind == SLUICE_OK);
    CHECK(pending == 3);
    CHECK(plugin_commit("events", 0).kind == SLUICE_OK);
    CHECK(pending == 0);
    sluice_builder_free(&b1);
    sluice_builder_free(&b2);
}

int main(void) {
    a_commit_takes_what_was_written();
    printf("NAME: %s\n", failed ? "FAILED" : "ok");
    return failed != 0;
}
