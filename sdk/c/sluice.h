/* sluice.h: the thin C helper for sluice plugins (https://example.invalid/sluice).
 *
 * A plugin is one C file that defines the functions of its kind (below) and includes this
 * header. The helper hides the generated component bindings (`wit-bindgen c`): it hands the
 * plugin each batch as a record view over the columnar input (no copy, no call per record
 * across the boundary) and collects the output in one growing buffer, which it hands to the
 * host when the call returns (the bindings' post-return frees it).
 *
 * The same plugin file compiles natively (gcc or cc, no bindings: SLUICE_NATIVE, which the
 * helper sets when it is not compiled for WebAssembly), so its logic can be tested with an
 * ordinary `main` and `sluice_batch_of` batches.
 *
 * Kinds (the Makefile passes -DSLUICE_KIND_<KIND>; define the functions of yours):
 *   transform  (world transformer): plugin_init, plugin_transform
 *   sink       (world sink):        plugin_init, plugin_write, plugin_commit
 *   receiver   (world receiver):    plugin_init, plugin_partitions, plugin_open, plugin_poll
 *   aggregate  (world aggregator):  plugin_init, plugin_can_retract, plugin_add, plugin_merge,
 *                                   plugin_retract, plugin_finish
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- records in ---------------------------------------------------------------------- */

/* A column of byte strings: value i is data[ends[i-1] .. ends[i]] (ends[-1] = 0). */
typedef struct sluice_column {
    const uint8_t *data;
    const uint32_t *ends;
    uint32_t len;
} sluice_column;

/* One partition's records of a batch (one block of it). Borrowed for the call only. */
typedef struct sluice_batch {
    sluice_column values;
    sluice_column keys;        /* keys.len == 0 when no record has a key */
    const uint8_t *key_present; /* bit i set when record i has a key; NULL when none has */
    const int64_t *timestamps; /* milliseconds since the epoch, or NULL */
    uint32_t len;              /* the number of records */
} sluice_batch;

/* A view of one record: pointers into the batch, valid for the call. */
typedef struct sluice_record {
    const uint8_t *value;
    size_t len;
    const uint8_t *key; /* NULL when the record has no key */
    size_t key_len;
    int64_t timestamp;  /* 0 when the batch has none */
    uint32_t index;     /* the record's index in the batch */
} sluice_record;

/* Record i of `batch` (i < batch->len). */
sluice_record sluice_record_at(const sluice_batch *batch, uint32_t i);

/* Value i of `column` as pointer and length (i < column->len). */
const uint8_t *sluice_column_get(const sluice_column *column, uint32_t i, size_t *len);

/* Where and when a call happens. */
typedef struct sluice_context {
    const char *stream; /* NUL-terminated */
    uint32_t partition;
    uint64_t batch_id;
    int64_t batch_time_ms;
    uint32_t part;
} sluice_context;

/* The plugin's parameters from the pipeline file, NUL-terminated strings. */
typedef struct sluice_params {
    const char *const *keys;
    const char *const *values;
    size_t len;
} sluice_params;

/* The value of parameter `key`, or NULL when it is not given. */
const char *sluice_param(const sluice_params *params, const char *key);

/* NULL when every parameter is one of the NULL-terminated `allowed`, else a message naming
 * the first unknown one (static storage, for plugin_init to return). */
const char *sluice_params_allow_only(const sluice_params *params, const char *const *allowed);

/* ---- records out --------------------------------------------------------------------- */

/* One rejected input record and why, for the dead letters. */
typedef struct sluice_reject {
    uint32_t index;
    char *reason; /* owned (malloc'd) */
} sluice_reject;

/* The output of a call: values appended to one growing buffer, each with the input record
 * it came from; rejects beside them. Filled by the plugin, emptied by the helper. */
typedef struct sluice_output {
    uint8_t *data;
    size_t data_len, data_cap;
    uint32_t *ends;
    size_t len, cap;
    uint32_t *origins; /* NULL while output record i came from input record i */
    size_t origins_cap;
    bool reordered;    /* origins are kept */
    bool pass_through; /* the whole input is the output, untouched */
    sluice_reject *rejects;
    size_t rejects_len, rejects_cap;
} sluice_output;

/* Appends a record with value `bytes[0..len]` that came from `from`. */
void sluice_push(sluice_output *out, const sluice_record *from, const void *bytes, size_t len);

/* Room for a value of at most `max` bytes from `from`: write it there, then call
 * sluice_push_end with the bytes used. Saves a copy when the value is built in place. */
uint8_t *sluice_push_begin(sluice_output *out, const sluice_record *from, size_t max);
void sluice_push_end(sluice_output *out, size_t used);

/* Room for `records` more records of `bytes` more bytes in all, so that pushing them does not
 * reallocate (a map may reserve the input's size first). */
void sluice_output_reserve(sluice_output *out, size_t records, size_t bytes);

/* Rejects `record` (it goes to the dead letters with `reason`, copied); the call goes on. */
void sluice_reject_record(sluice_output *out, const sluice_record *record, const char *reason);

/* The whole input is the output, value for value: no copy, no work per record. Call it
 * before pushing anything, and push nothing after. */
void sluice_pass_through(sluice_output *out);

/* The number of output records, and output value i (for tests). */
size_t sluice_output_len(const sluice_output *out, const sluice_batch *input);
const uint8_t *sluice_output_value(const sluice_output *out, const sluice_batch *input, size_t i,
                                   size_t *len);

/* Frees what `out` holds and leaves it empty (native tests; the helper does it on wasm). */
void sluice_output_free(sluice_output *out);

/* A batch of records, for receivers' poll (and tests): append, then hand over. */
typedef struct sluice_builder {
    uint8_t *data;
    size_t data_len, data_cap;
    uint32_t *ends;
    size_t len, cap;
} sluice_builder;

void sluice_builder_push(sluice_builder *b, const void *bytes, size_t len);
/* The builder's records as a batch view (valid until the next push or free). */
sluice_batch sluice_builder_batch(const sluice_builder *b);
void sluice_builder_free(sluice_builder *b);

/* A batch of the NUL-terminated `values` (tests): free it with sluice_builder_free(b). */
sluice_batch sluice_batch_of(sluice_builder *b, const char *const *values, size_t n);

/* ---- errors -------------------------------------------------------------------------- */

typedef enum sluice_error_kind {
    SLUICE_OK = 0,
    SLUICE_RETRYABLE, /* the host retries the call on a fresh instance, with backoff */
    SLUICE_FATAL,     /* the host stops the pipeline, naming the plugin and the batch */
    SLUICE_BAD_RECORD /* the host dead-letters record `index` and calls again without it */
} sluice_error_kind;

/* What a call returns: SLUICE_OK, or an error with its message (owned, malloc'd). */
typedef struct sluice_error {
    sluice_error_kind kind;
    char *message;
    uint32_t index;
} sluice_error;

static inline sluice_error sluice_ok(void) {
    sluice_error e = {SLUICE_OK, NULL, 0};
    return e;
}
/* printf-style messages. */
sluice_error sluice_retryable(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
sluice_error sluice_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
sluice_error sluice_bad_record(const sluice_record *record, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- the host ------------------------------------------------------------------------ */

typedef enum sluice_level {
    SLUICE_TRACE,
    SLUICE_DEBUG,
    SLUICE_INFO,
    SLUICE_WARN,
    SLUICE_ERROR
} sluice_level;

/* A line in the host's log, tagged with the plugin, partition and batch (stderr natively). */
void sluice_log(sluice_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Adds `delta` to the plugin's counter `name` (names end in _total). */
void sluice_counter_add(const char *name, uint64_t delta);
/* Sets the plugin's gauge `name`. */
void sluice_gauge_set(const char *name, double value);

/* ---- what the plugin defines, per kind ----------------------------------------------- */

/* Every kind: called once per fresh instance with the parameters; NULL when they are fine,
 * else why not (the host refuses to start the pipeline). The message is not freed. */
const char *plugin_init(const sluice_params *params);

/* transform: the output of one block of a partition's batch. */
sluice_error plugin_transform(const sluice_context *ctx, const sluice_batch *input,
                              sluice_output *out);

/* sink: one block of a partition's batch; then commit once every write of the batch is done
 * (again after a replay: do no harm). */
sluice_error plugin_write(const sluice_context *ctx, const sluice_batch *input);
sluice_error plugin_commit(const char *stream, uint64_t batch_id);

/* receiver: the number of partitions; start `partition` at `position` (NULL: the beginning);
 * then append at most `max_records` records to `out`, setting `*position` (malloc'd, or NULL
 * when the source cannot be replayed) and `*end` when the partition is done for good. */
uint32_t plugin_partitions(void);
sluice_error plugin_open(uint32_t partition, const char *position);
sluice_error plugin_poll(uint32_t partition, uint32_t max_records, uint32_t max_bytes,
                         sluice_builder *out, char **position, bool *end);

/* aggregate: accumulators are opaque bytes (an empty one stands for no records).
 *   plugin_add:     appends each record to its key's accumulator; the helper groups by key.
 *                   `acc` holds the key's accumulator so far (empty at first) and is rewritten
 *                   in place: return NULL to keep the record, or a reason to reject it (then
 *                   leave `acc` as it was).
 *   plugin_merge:   `acc` := acc merged with `other` (associative and commutative).
 *   plugin_retract: `acc` := acc without `expired`; leave it empty when no records are left.
 *   plugin_finish:  the key's output value into `out`. */
typedef struct sluice_bytes {
    uint8_t *data;
    size_t len, cap;
} sluice_bytes;

void sluice_bytes_set(sluice_bytes *b, const void *data, size_t len);
void sluice_bytes_free(sluice_bytes *b);

bool plugin_can_retract(void);
const char *plugin_add(sluice_bytes *acc, const sluice_record *record);
sluice_error plugin_merge(sluice_bytes *acc, const uint8_t *other, size_t other_len);
sluice_error plugin_retract(sluice_bytes *acc, const uint8_t *expired, size_t expired_len);
sluice_error plugin_finish(const uint8_t *key, size_t key_len, const uint8_t *acc, size_t acc_len,
                           sluice_bytes *out);

/* ---- native tests -------------------------------------------------------------------- */

/* aggregate: runs plugin_add over `input` as the host call does (grouped by key, a record
 * without a key under the empty key): each distinct key that kept a record goes to `keys` and
 * its accumulator to `accs`, row for row; rejected records go to `rejects`. */
void sluice_aggregate_add(const sluice_batch *input, sluice_builder *keys, sluice_builder *accs,
                          sluice_output *rejects);

#ifdef __cplusplus
}
#endif
#endif
