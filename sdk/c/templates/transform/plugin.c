/* NAME: a sluice transformation, called once per partition per block of a batch. It
 * upper-cases every value and rejects empty ones. */
#include "sluice.h"

const char *plugin_init(const sluice_params *params) {
    /* Refuse parameters this plugin does not know, naming them. */
    static const char *const allowed[] = {NULL};
    return sluice_params_allow_only(params, allowed);
}

sluice_error plugin_transform(const sluice_context *ctx, const sluice_batch *input,
                              sluice_output *out) {
    (void)ctx;
    for (uint32_t i = 0; i < input->len; i++) {
        sluice_record r = sluice_record_at(input, i);
        if (r.len == 0) {
            /* A rejected record goes to the dead letters with the reason; the batch goes on. */
            sluice_reject_record(out, &r, "empty value");
            continue;
        }
        /* Writes straight into the output buffer: no allocation per record. */
        uint8_t *dst = sluice_push_begin(out, &r, r.len);
        const uint8_t *src = r.value;
        size_t n = r.len; /* locals, so that the loop vectorizes (-msimd128) */
        for (size_t k = 0; k < n; k++) {
            uint8_t c = src[k];
            dst[k] = c >= 'a' && c <= 'z' ? c - 32 : c;
        }
        sluice_push_end(out, r.len);
    }
    return sluice_ok();
}
