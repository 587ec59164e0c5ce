/* identity in C: every record out as it came in. With `mode = "bulk"` (the default) the
 * whole input is handed back with no work per record; with `mode = "each"` each record's value
 * is pushed, which measures the helper's cost per record. */
#include <string.h>

#include "sluice.h"

static int each;

const char *plugin_init(const sluice_params *params) {
    static const char *const allowed[] = {"mode", NULL};
    const char *wrong = sluice_params_allow_only(params, allowed);
    if (wrong) return wrong;
    const char *mode = sluice_param(params, "mode");
    if (!mode || strcmp(mode, "bulk") == 0) each = 0;
    else if (strcmp(mode, "each") == 0) each = 1;
    else return "parameter \"mode\": choose bulk or each";
    return NULL;
}

sluice_error plugin_transform(const sluice_context *ctx, const sluice_batch *input,
                              sluice_output *out) {
    (void)ctx;
    if (!each) {
        sluice_pass_through(out);
        return sluice_ok();
    }
    for (uint32_t i = 0; i < input->len; i++) {
        sluice_record r = sluice_record_at(input, i);
        sluice_push(out, &r, r.value, r.len);
    }
    return sluice_ok();
}
