/* NAME: a sluice sink. Each batch reaches it in two phases: plugin_write per partition (once
 * per block), then plugin_commit once every write is done. */
#include "sluice.h"

/* The records written since the last commit. */
uint64_t pending;

const char *plugin_init(const sluice_params *params) {
    static const char *const allowed[] = {NULL};
    pending = 0;
    return sluice_params_allow_only(params, allowed);
}

sluice_error plugin_write(const sluice_context *ctx, const sluice_batch *input) {
    (void)ctx;
    /* Nothing need be visible before commit; a real sink stages its output here. */
    pending += input->len;
    return sluice_ok();
}

sluice_error plugin_commit(const char *stream, uint64_t batch_id) {
    /* Called again with the same id after a replay: key the output by the batch id. */
    sluice_log(SLUICE_INFO, "batch %llu of stream %s: %llu records", (unsigned long long)batch_id,
               stream, (unsigned long long)pending);
    pending = 0;
    return sluice_ok();
}
