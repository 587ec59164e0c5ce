/* sluice.c: the record view, output builder, errors and host calls of sluice.h, and the glue
 * between the plugin's functions and the generated component bindings (WebAssembly only).
 * See sluice.h. */
#include "sluice.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__wasm__) && !defined(SLUICE_NATIVE)
#define SLUICE_NATIVE 1
#endif

static void *sluice_grow(void *ptr, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return ptr;
    size_t cap2 = *cap ? *cap : 16;
    while (cap2 < need) cap2 *= 2;
    void *p = realloc(ptr, cap2 * size);
    if (!p) abort(); /* out of the plugin's memory: the host classifies the trap */
    *cap = cap2;
    return p;
}

/* ---- records in ---------------------------------------------------------------------- */

const uint8_t *sluice_column_get(const sluice_column *c, uint32_t i, size_t *len) {
    uint32_t start = i ? c->ends[i - 1] : 0;
    *len = c->ends[i] - start;
    return c->data + start;
}

sluice_record sluice_record_at(const sluice_batch *b, uint32_t i) {
    sluice_record r;
    r.value = sluice_column_get(&b->values, i, &r.len);
    r.key = NULL;
    r.key_len = 0;
    if (b->key_present && (b->key_present[i / 8] >> (i % 8) & 1))
        r.key = sluice_column_get(&b->keys, i, &r.key_len);
    r.timestamp = b->timestamps ? b->timestamps[i] : 0;
    r.index = i;
    return r;
}

const char *sluice_param(const sluice_params *p, const char *key) {
    for (size_t i = 0; i < p->len; i++)
        if (strcmp(p->keys[i], key) == 0) return p->values[i];
    return NULL;
}

const char *sluice_params_allow_only(const sluice_params *p, const char *const *allowed) {
    static char msg[256];
    for (size_t i = 0; i < p->len; i++) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++) ok = ok || strcmp(*a, p->keys[i]) == 0;
        if (!ok) {
            snprintf(msg, sizeof msg, "unknown parameter \"%s\"", p->keys[i]);
            return msg;
        }
    }
    return NULL;
}

/* ---- records out --------------------------------------------------------------------- */

static void sluice_begin(sluice_output *out, uint32_t origin) {
    if (out->pass_through) abort(); /* a record pushed after sluice_pass_through */
    out->ends = sluice_grow(out->ends, &out->cap, out->len + 1, sizeof *out->ends);
    if (!out->reordered && origin == out->len) return; /* a map so far: no origins */
    out->origins = sluice_grow(out->origins, &out->origins_cap, out->len + 1,
                               sizeof *out->origins);
    if (!out->reordered) {
        for (size_t i = 0; i < out->len; i++) out->origins[i] = (uint32_t)i;
        out->reordered = true;
    }
    out->origins[out->len] = origin;
}

uint8_t *sluice_push_begin(sluice_output *out, const sluice_record *from, size_t max) {
    sluice_begin(out, from->index);
    out->data = sluice_grow(out->data, &out->data_cap, out->data_len + max, 1);
    return out->data + out->data_len;
}

void sluice_output_reserve(sluice_output *out, size_t records, size_t bytes) {
    out->ends = sluice_grow(out->ends, &out->cap, out->len + records, sizeof *out->ends);
    out->data = sluice_grow(out->data, &out->data_cap, out->data_len + bytes, 1);
}

void sluice_push_end(sluice_output *out, size_t used) {
    out->data_len += used;
    out->ends[out->len++] = (uint32_t)out->data_len;
}

void sluice_push(sluice_output *out, const sluice_record *from, const void *bytes, size_t len) {
    uint8_t *dst = sluice_push_begin(out, from, len);
    if (len) memcpy(dst, bytes, len);
    sluice_push_end(out, len);
}

void sluice_reject_record(sluice_output *out, const sluice_record *record, const char *reason) {
    out->rejects = sluice_grow(out->rejects, &out->rejects_cap, out->rejects_len + 1,
                               sizeof *out->rejects);
    sluice_reject *r = &out->rejects[out->rejects_len++];
    r->index = record->index;
    r->reason = strdup(reason);
}

void sluice_pass_through(sluice_output *out) {
    if (out->len) abort(); /* records were pushed before */
    out->pass_through = true;
}

size_t sluice_output_len(const sluice_output *out, const sluice_batch *input) {
    return out->pass_through ? input->len : out->len;
}

const uint8_t *sluice_output_value(const sluice_output *out, const sluice_batch *input, size_t i,
                                   size_t *len) {
    if (out->pass_through) return sluice_column_get(&input->values, (uint32_t)i, len);
    size_t start = i ? out->ends[i - 1] : 0;
    *len = out->ends[i] - start;
    return out->data + start;
}

void sluice_output_free(sluice_output *out) {
    free(out->data);
    free(out->ends);
    free(out->origins);
    for (size_t i = 0; i < out->rejects_len; i++) free(out->rejects[i].reason);
    free(out->rejects);
    memset(out, 0, sizeof *out);
}

void sluice_builder_push(sluice_builder *b, const void *bytes, size_t len) {
    b->data = sluice_grow(b->data, &b->data_cap, b->data_len + len, 1);
    if (len) memcpy(b->data + b->data_len, bytes, len);
    b->data_len += len;
    b->ends = sluice_grow(b->ends, &b->cap, b->len + 1, sizeof *b->ends);
    b->ends[b->len++] = (uint32_t)b->data_len;
}

sluice_batch sluice_builder_batch(const sluice_builder *b) {
    sluice_batch batch;
    memset(&batch, 0, sizeof batch);
    batch.values.data = b->data;
    batch.values.ends = b->ends;
    batch.values.len = (uint32_t)b->len;
    batch.len = (uint32_t)b->len;
    return batch;
}

void sluice_builder_free(sluice_builder *b) {
    free(b->data);
    free(b->ends);
    memset(b, 0, sizeof *b);
}

sluice_batch sluice_batch_of(sluice_builder *b, const char *const *values, size_t n) {
    for (size_t i = 0; i < n; i++) sluice_builder_push(b, values[i], strlen(values[i]));
    return sluice_builder_batch(b);
}

void sluice_bytes_set(sluice_bytes *b, const void *data, size_t len) {
    b->data = sluice_grow(b->data, &b->cap, len ? len : 1, 1);
    if (len) memmove(b->data, data, len);
    b->len = len;
}

void sluice_bytes_free(sluice_bytes *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---- errors -------------------------------------------------------------------------- */

static char *sluice_vformat(const char *fmt, va_list ap) {
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    char *s = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (!s) abort();
    vsnprintf(s, (size_t)(n > 0 ? n + 1 : 1), fmt, ap);
    return s;
}

sluice_error sluice_retryable(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sluice_error e = {SLUICE_RETRYABLE, sluice_vformat(fmt, ap), 0};
    va_end(ap);
    return e;
}

sluice_error sluice_fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sluice_error e = {SLUICE_FATAL, sluice_vformat(fmt, ap), 0};
    va_end(ap);
    return e;
}

sluice_error sluice_bad_record(const sluice_record *record, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sluice_error e = {SLUICE_BAD_RECORD, sluice_vformat(fmt, ap), record->index};
    va_end(ap);
    return e;
}

/* ---- aggregate: grouping by key ------------------------------------------------------ */

#ifdef SLUICE_KIND_AGGREGATE
/* One distinct key of a call and its accumulator. */
typedef struct sluice_group {
    const uint8_t *key;
    size_t key_len;
    uint64_t hash;
    sluice_bytes acc;
    bool kept; /* at least one record was added */
} sluice_group;

static uint64_t sluice_fnv(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* The group of `key` in `groups`, added (empty) when new; `table` maps hashes to group
 * indices + 1 by open addressing and doubles at half full. */
static sluice_group *sluice_group_of(sluice_group **groups, size_t *len, size_t *cap,
                                     size_t **table, size_t *slots, const uint8_t *key,
                                     size_t key_len) {
    uint64_t h = sluice_fnv(key, key_len);
    size_t s = h & (*slots - 1);
    for (; (*table)[s]; s = (s + 1) & (*slots - 1)) {
        sluice_group *g = &(*groups)[(*table)[s] - 1];
        if (g->hash == h && g->key_len == key_len && memcmp(g->key, key, key_len) == 0) return g;
    }
    *groups = sluice_grow(*groups, cap, *len + 1, sizeof **groups);
    sluice_group fresh = {key, key_len, h, {0}, false};
    (*groups)[(*len)++] = fresh;
    (*table)[s] = *len;
    if (*len * 2 > *slots) {
        free(*table);
        *slots *= 2;
        *table = calloc(*slots, sizeof **table);
        if (!*table) abort();
        for (size_t k = 0; k < *len; k++) {
            size_t t = (*groups)[k].hash & (*slots - 1);
            while ((*table)[t]) t = (t + 1) & (*slots - 1);
            (*table)[t] = k + 1;
        }
    }
    return &(*groups)[*len - 1];
}

void sluice_aggregate_add(const sluice_batch *input, sluice_builder *keys, sluice_builder *accs,
                          sluice_output *rejects) {
    size_t len = 0, cap = 0, slots = 64;
    sluice_group *groups = NULL;
    size_t *table = calloc(slots, sizeof *table);
    sluice_bytes saved = {0};
    if (!table) abort();
    for (uint32_t i = 0; i < input->len; i++) {
        sluice_record r = sluice_record_at(input, i);
        const uint8_t *key = r.key ? r.key : (const uint8_t *)"";
        sluice_group *g = sluice_group_of(&groups, &len, &cap, &table, &slots, key, r.key_len);
        sluice_bytes_set(&saved, g->acc.data, g->acc.len);
        const char *reason = plugin_add(&g->acc, &r);
        if (reason) {
            sluice_bytes_set(&g->acc, saved.data, saved.len); /* add must not half-apply */
            sluice_reject_record(rejects, &r, reason);
        } else {
            g->kept = true;
        }
    }
    for (size_t k = 0; k < len; k++) {
        if (groups[k].kept) {
            sluice_builder_push(keys, groups[k].key, groups[k].key_len);
            sluice_builder_push(accs, groups[k].acc.data, groups[k].acc.len);
        }
        sluice_bytes_free(&groups[k].acc);
    }
    sluice_bytes_free(&saved);
    free(groups);
    free(table);
}
#endif

/* ---- the host, natively: the log goes to standard error, metrics nowhere -------------- */

#ifdef SLUICE_NATIVE
void sluice_log(sluice_level level, const char *fmt, ...) {
    static const char *const names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"};
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s ", names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void sluice_counter_add(const char *name, uint64_t delta) {
    (void)name;
    (void)delta;
}

void sluice_gauge_set(const char *name, double value) {
    (void)name;
    (void)value;
}
#endif

/* ---- the glue: the generated bindings' exports, per world (WebAssembly only) ----------
 *
 * Ownership, as the bindings of `wit-bindgen c` have it: an export owns its arguments and
 * frees them (the *_free functions); what it returns is freed by the generated post-return
 * function after the host has copied it out, so the output's buffers are handed over, never
 * copied. An empty list is handed over as NULL (post-return frees only non-empty ones). */

#ifndef SLUICE_NATIVE
#if defined(SLUICE_KIND_TRANSFORM)
#include "transformer.h"
#define SLUICE_W(x) transformer_##x
#elif defined(SLUICE_KIND_SINK)
#include "sink.h"
#define SLUICE_W(x) sink_##x
#elif defined(SLUICE_KIND_RECEIVER)
#include "receiver.h"
#define SLUICE_W(x) receiver_##x
#elif defined(SLUICE_KIND_AGGREGATE)
#include "aggregator.h"
#define SLUICE_W(x) aggregator_##x
#else
#error "define one of SLUICE_KIND_TRANSFORM, _SINK, _RECEIVER or _AGGREGATE (the Makefile does)"
#endif

typedef SLUICE_W(string_t) sl_string;
typedef sluice_plugin_types_bytes_column_t sl_column;

/* A NUL-terminated copy of `s` (malloc'd). */
static char *sl_cstr(const sl_string *s) {
    char *c = malloc(s->len + 1);
    if (!c) abort();
    if (s->len) memcpy(c, s->ptr, s->len);
    c[s->len] = 0;
    return c;
}

/* `s` (malloc'd, NUL-terminated) handed over as a WIT string. */
static sl_string sl_give_string(char *s) {
    sl_string out = {(uint8_t *)s, s ? strlen(s) : 0};
    if (out.len == 0) {
        free(s);
        out.ptr = NULL;
    }
    return out;
}

static sluice_column sl_view(const sl_column *c) {
    sluice_column v = {c->data.ptr, c->ends.ptr, (uint32_t)c->ends.len};
    return v;
}

/* The builder's records handed over as a WIT column (the builder is left empty). */
__attribute__((unused)) static sl_column sl_give_column(sluice_builder *b) {
    sl_column c;
    c.data.ptr = b->data_len ? b->data : NULL;
    c.data.len = b->data_len;
    c.ends.ptr = b->len ? b->ends : NULL;
    c.ends.len = b->len;
    if (!b->data_len) free(b->data);
    if (!b->len) free(b->ends);
    memset(b, 0, sizeof *b);
    return c;
}

static sluice_batch sl_batch(const sluice_plugin_types_batch_t *in) {
    sluice_batch b;
    memset(&b, 0, sizeof b);
    b.values = sl_view(&in->values);
    b.len = b.values.len;
    if (in->keys.is_some) {
        b.keys = sl_view(&in->keys.val.column);
        b.key_present = in->keys.val.present.ptr;
    }
    if (in->timestamps.len == b.len && b.len) b.timestamps = in->timestamps.ptr;
    return b;
}

static void sl_error(sluice_error e, sluice_plugin_types_error_t *err) {
    switch (e.kind) {
    case SLUICE_RETRYABLE:
        err->tag = SLUICE_PLUGIN_TYPES_ERROR_RETRYABLE;
        err->val.retryable = sl_give_string(e.message);
        break;
    case SLUICE_BAD_RECORD:
        err->tag = SLUICE_PLUGIN_TYPES_ERROR_BAD_RECORD;
        err->val.bad_record.index = e.index;
        err->val.bad_record.reason = sl_give_string(e.message);
        break;
    default:
        err->tag = SLUICE_PLUGIN_TYPES_ERROR_FATAL;
        err->val.fatal = sl_give_string(e.message);
        break;
    }
}

/* The parameters, kept for the instance's life (plugins may keep pointers into them). */
static char **sl_param_keys, **sl_param_values;

static bool sl_init(sluice_plugin_types_params_t *params, sl_string *err) {
    size_t n = params->len;
    sl_param_keys = calloc(n + 1, sizeof *sl_param_keys);
    sl_param_values = calloc(n + 1, sizeof *sl_param_values);
    if (!sl_param_keys || !sl_param_values) abort();
    for (size_t i = 0; i < n; i++) {
        sl_param_keys[i] = sl_cstr(&params->ptr[i].f0);
        sl_param_values[i] = sl_cstr(&params->ptr[i].f1);
    }
    sluice_plugin_types_params_free(params);
    sluice_params p = {(const char *const *)sl_param_keys, (const char *const *)sl_param_values, n};
    const char *wrong = plugin_init(&p);
    if (wrong) {
        SLUICE_W(string_dup)(err, wrong);
        return false;
    }
    return true;
}

/* The context, its stream copied (free ctx->stream after the call). */
static sluice_context sl_context(sluice_plugin_types_batch_context_t *in) {
    sluice_context c;
    c.stream = sl_cstr(&in->stream);
    c.partition = in->partition;
    c.batch_id = in->batch_id;
    c.batch_time_ms = in->batch_time_ms;
    c.part = in->part;
    sluice_plugin_types_batch_context_free(in);
    return c;
}

void sluice_log(sluice_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *text = sluice_vformat(fmt, ap);
    va_end(ap);
    sl_string s = {(uint8_t *)text, strlen(text)};
    sluice_plugin_host_log((sluice_plugin_host_level_t)level, &s);
    free(text);
}

void sluice_counter_add(const char *name, uint64_t delta) {
    sl_string s = {(uint8_t *)name, strlen(name)};
    sluice_plugin_host_counter_add(&s, delta);
}

void sluice_gauge_set(const char *name, double value) {
    sl_string s = {(uint8_t *)name, strlen(name)};
    sluice_plugin_host_gauge_set(&s, value);
}

#if defined(SLUICE_KIND_TRANSFORM) || defined(SLUICE_KIND_AGGREGATE)
#ifdef SLUICE_KIND_TRANSFORM
typedef sluice_plugin_types_list_bad_record_t sl_rejects;
#else
typedef exports_sluice_plugin_aggregate_list_bad_record_t sl_rejects;
#endif

/* The rejects of `out` handed over as a WIT list (reasons moved, not copied). */
static sl_rejects sl_give_rejects(sluice_output *out) {
    sl_rejects list = {NULL, out->rejects_len};
    if (out->rejects_len) {
        list.ptr = malloc(out->rejects_len * sizeof *list.ptr);
        if (!list.ptr) abort();
        for (size_t i = 0; i < out->rejects_len; i++) {
            list.ptr[i].index = out->rejects[i].index;
            list.ptr[i].reason = sl_give_string(out->rejects[i].reason);
            out->rejects[i].reason = NULL;
        }
    }
    out->rejects_len = 0;
    return list;
}
#endif

#if defined(SLUICE_KIND_TRANSFORM)
bool exports_sluice_plugin_transform_init(exports_sluice_plugin_transform_params_t *params,
                                          sl_string *err) {
    return sl_init(params, err);
}

bool exports_sluice_plugin_transform_transform(exports_sluice_plugin_transform_batch_context_t *ctx,
                                               exports_sluice_plugin_transform_batch_t *input,
                                               exports_sluice_plugin_transform_output_t *ret,
                                               exports_sluice_plugin_transform_error_t *err) {
    sluice_context c = sl_context(ctx);
    sluice_batch b = sl_batch(input);
    sluice_output out;
    memset(&out, 0, sizeof out);
    sluice_error e = plugin_transform(&c, &b, &out);
    free((char *)c.stream);
    if (e.kind != SLUICE_OK) {
        sluice_output_free(&out);
        sluice_plugin_types_batch_free(input);
        sl_error(e, err);
        return false;
    }
    memset(ret, 0, sizeof *ret);
    if (out.pass_through) {
        /* The input's columns become the output's: no copy. */
        ret->values = input->values;
        memset(&input->values, 0, sizeof input->values);
    } else {
        ret->values.data.ptr = out.data_len ? out.data : NULL;
        ret->values.data.len = out.data_len;
        if (!out.data_len) free(out.data);
        ret->values.ends.ptr = out.len ? out.ends : NULL;
        ret->values.ends.len = out.len;
        if (!out.len) free(out.ends);
        if (out.reordered) {
            ret->origins.ptr = out.origins;
            ret->origins.len = out.len;
        } else {
            free(out.origins);
            if (out.len && out.len != b.len) { /* a prefix of the input: say so */
                ret->origins.ptr = malloc(out.len * sizeof *ret->origins.ptr);
                if (!ret->origins.ptr) abort();
                for (size_t i = 0; i < out.len; i++) ret->origins.ptr[i] = (uint32_t)i;
                ret->origins.len = out.len;
            }
        }
        out.data = NULL;
        out.ends = NULL;
        out.origins = NULL;
    }
    ret->keys.is_some = false;
    ret->rejected = sl_give_rejects(&out);
    sluice_output_free(&out);
    sluice_plugin_types_batch_free(input);
    return true;
}
#endif

#if defined(SLUICE_KIND_SINK)
bool exports_sluice_plugin_deliver_init(exports_sluice_plugin_deliver_params_t *params,
                                        sl_string *err) {
    return sl_init(params, err);
}

bool exports_sluice_plugin_deliver_write(exports_sluice_plugin_deliver_batch_context_t *ctx,
                                         exports_sluice_plugin_deliver_batch_t *input,
                                         exports_sluice_plugin_deliver_error_t *err) {
    sluice_context c = sl_context(ctx);
    sluice_batch b = sl_batch(input);
    sluice_error e = plugin_write(&c, &b);
    free((char *)c.stream);
    sluice_plugin_types_batch_free(input);
    if (e.kind != SLUICE_OK) {
        sl_error(e, err);
        return false;
    }
    return true;
}

bool exports_sluice_plugin_deliver_commit(sl_string *stream, uint64_t batch_id,
                                          exports_sluice_plugin_deliver_error_t *err) {
    char *s = sl_cstr(stream);
    SLUICE_W(string_free)(stream);
    sluice_error e = plugin_commit(s, batch_id);
    free(s);
    if (e.kind != SLUICE_OK) {
        sl_error(e, err);
        return false;
    }
    return true;
}
#endif

#if defined(SLUICE_KIND_RECEIVER)
bool exports_sluice_plugin_source_init(exports_sluice_plugin_source_params_t *params,
                                       sl_string *err) {
    return sl_init(params, err);
}

uint32_t exports_sluice_plugin_source_partitions(void) { return plugin_partitions(); }

bool exports_sluice_plugin_source_open(uint32_t partition, sl_string *maybe_position,
                                       exports_sluice_plugin_source_error_t *err) {
    char *position = NULL;
    if (maybe_position) {
        position = sl_cstr(maybe_position);
        SLUICE_W(string_free)(maybe_position);
    }
    sluice_error e = plugin_open(partition, position);
    free(position);
    if (e.kind != SLUICE_OK) {
        sl_error(e, err);
        return false;
    }
    return true;
}

bool exports_sluice_plugin_source_poll(uint32_t partition, uint32_t max_records,
                                       uint32_t max_bytes,
                                       exports_sluice_plugin_source_polled_t *ret,
                                       exports_sluice_plugin_source_error_t *err) {
    sluice_builder records;
    memset(&records, 0, sizeof records);
    char *position = NULL;
    bool end = false;
    sluice_error e = plugin_poll(partition, max_records, max_bytes, &records, &position, &end);
    if (e.kind != SLUICE_OK) {
        sluice_builder_free(&records);
        free(position);
        sl_error(e, err);
        return false;
    }
    memset(ret, 0, sizeof *ret);
    ret->records.values = sl_give_column(&records);
    ret->position.is_some = position != NULL;
    if (position) ret->position.val = sl_give_string(position);
    ret->end = end;
    return true;
}
#endif

#if defined(SLUICE_KIND_AGGREGATE)
bool exports_sluice_plugin_aggregate_init(exports_sluice_plugin_aggregate_params_t *params,
                                          sl_string *err) {
    return sl_init(params, err);
}

bool exports_sluice_plugin_aggregate_can_retract(void) { return plugin_can_retract(); }

bool exports_sluice_plugin_aggregate_add(exports_sluice_plugin_aggregate_batch_context_t *ctx,
                                         exports_sluice_plugin_aggregate_batch_t *input,
                                         exports_sluice_plugin_aggregate_partials_t *ret,
                                         exports_sluice_plugin_aggregate_error_t *err) {
    (void)err;
    sluice_context c = sl_context(ctx);
    free((char *)c.stream);
    sluice_batch b = sl_batch(input);
    sluice_builder keys, accs;
    sluice_output rejects;
    memset(&keys, 0, sizeof keys);
    memset(&accs, 0, sizeof accs);
    memset(&rejects, 0, sizeof rejects);
    sluice_aggregate_add(&b, &keys, &accs, &rejects);
    ret->keys = sl_give_column(&keys);
    ret->accs = sl_give_column(&accs);
    ret->rejected = sl_give_rejects(&rejects);
    sluice_output_free(&rejects);
    sluice_plugin_types_batch_free(input);
    return true;
}

/* merge (retract = false) or retract, row by row. */
static bool sl_pairwise(bool retract, sl_column *keys, sl_column *left, sl_column *right,
                        sl_column *ret, sluice_plugin_types_error_t *err) {
    sluice_column k = sl_view(keys), l = sl_view(left), r = sl_view(right);
    sluice_builder out;
    sluice_bytes acc = {0};
    sluice_error e = sluice_ok();
    memset(&out, 0, sizeof out);
    if (l.len != k.len || r.len != k.len)
        e = sluice_fatal("%u keys but %u and %u accumulators", k.len, l.len, r.len);
    for (uint32_t i = 0; e.kind == SLUICE_OK && i < k.len; i++) {
        size_t ln, rn;
        const uint8_t *lp = sluice_column_get(&l, i, &ln), *rp = sluice_column_get(&r, i, &rn);
        sluice_bytes_set(&acc, lp, ln);
        e = retract ? plugin_retract(&acc, rp, rn) : plugin_merge(&acc, rp, rn);
        sluice_builder_push(&out, acc.data, acc.len);
    }
    sluice_bytes_free(&acc);
    sluice_plugin_types_bytes_column_free(keys);
    sluice_plugin_types_bytes_column_free(left);
    sluice_plugin_types_bytes_column_free(right);
    if (e.kind != SLUICE_OK) {
        sluice_builder_free(&out);
        sl_error(e, err);
        return false;
    }
    *ret = sl_give_column(&out);
    return true;
}

bool exports_sluice_plugin_aggregate_merge(sl_column *keys, sl_column *left, sl_column *right,
                                           sl_column *ret,
                                           exports_sluice_plugin_aggregate_error_t *err) {
    return sl_pairwise(false, keys, left, right, ret, err);
}

bool exports_sluice_plugin_aggregate_retract(sl_column *keys, sl_column *acc, sl_column *expired,
                                             sl_column *ret,
                                             exports_sluice_plugin_aggregate_error_t *err) {
    return sl_pairwise(true, keys, acc, expired, ret, err);
}

bool exports_sluice_plugin_aggregate_finish(sl_column *keys, sl_column *accs, sl_column *ret,
                                            exports_sluice_plugin_aggregate_error_t *err) {
    sluice_column k = sl_view(keys), a = sl_view(accs);
    sluice_builder out;
    sluice_bytes value = {0};
    sluice_error e = sluice_ok();
    memset(&out, 0, sizeof out);
    if (a.len != k.len) e = sluice_fatal("%u keys but %u accumulators", k.len, a.len);
    for (uint32_t i = 0; e.kind == SLUICE_OK && i < k.len; i++) {
        size_t kn, an;
        const uint8_t *kp = sluice_column_get(&k, i, &kn), *ap = sluice_column_get(&a, i, &an);
        value.len = 0;
        e = plugin_finish(kp, kn, ap, an, &value);
        sluice_builder_push(&out, value.data, value.len);
    }
    sluice_bytes_free(&value);
    sluice_plugin_types_bytes_column_free(keys);
    sluice_plugin_types_bytes_column_free(accs);
    if (e.kind != SLUICE_OK) {
        sluice_builder_free(&out);
        sl_error(e, err);
        return false;
    }
    *ret = sl_give_column(&out);
    return true;
}
#endif
#endif /* !SLUICE_NATIVE */
