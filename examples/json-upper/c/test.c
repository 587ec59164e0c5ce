/* json-upper's logic, natively: `make test`. */
#include <stdio.h>
#include <string.h>

#include "sluice.h"

static int failures;

static void expect(const char *what, const char *got, size_t got_len, const char *want) {
    if (got_len != strlen(want) || memcmp(got, want, got_len) != 0) {
        fprintf(stderr, "FAIL %s: got %.*s, want %s\n", what, (int)got_len, got, want);
        failures++;
    }
}

int main(void) {
    const char *values[] = {
        "{\"item\":\"a\\nb\",\"user\":\"zo\\u00eb x\",\"n\":[1,{\"b\":2}]}",
        "{", "[1]", "{\"user\":1}", "{\"user\":\"u\"}", "NaN",
        "{\"user\":\"pair\\ud83d\\ude00\",\"item\":\"\\u0001\\\"/\"}",
        "{\"user\":\"x\",\"item\":\"y\",}",
    };
    sluice_builder b = {0};
    sluice_batch in = sluice_batch_of(&b, values, sizeof values / sizeof *values);
    sluice_output out = {0};
    sluice_params none = {0};
    if (plugin_init(&none)) failures++;
    sluice_context ctx = {0};
    plugin_transform(&ctx, &in, &out);
    size_t n;
    const uint8_t *v;
    if (sluice_output_len(&out, &in) != 2) {
        fprintf(stderr, "FAIL: %zu outputs\n", sluice_output_len(&out, &in));
        return 1;
    }
    v = sluice_output_value(&out, &in, 0, &n);
    expect("escapes", (const char *)v, n, "{\"user\":\"ZO\xc3\xab X\",\"item\":\"a\\nb\"}");
    v = sluice_output_value(&out, &in, 1, &n);
    expect("pairs", (const char *)v, n,
           "{\"user\":\"PAIR\xf0\x9f\x98\x80\",\"item\":\"\\u0001\\\"/\"}");
    const char *reasons[] = {"not valid JSON", "not a JSON object",
                             "field \"user\" is missing or not a string",
                             "field \"item\" is missing or not a string", "not valid JSON",
                             "not valid JSON"};
    if (out.rejects_len != 6) {
        fprintf(stderr, "FAIL: %zu rejects\n", out.rejects_len);
        return 1;
    }
    for (size_t i = 0; i < 6; i++)
        expect("reason", out.rejects[i].reason, strlen(out.rejects[i].reason), reasons[i]);
    sluice_output_free(&out);
    sluice_builder_free(&b);
    printf("%d passed, %d failed\n", failures ? 0 : 1, failures ? 1 : 0);
    return failures != 0;
}
