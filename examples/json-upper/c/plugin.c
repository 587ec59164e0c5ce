/* json-upper in C: keeps the string fields `user` (ASCII upper-cased) and `item` of each JSON
 * object and rejects every other value with one of four reasons (see ../SPEC.md). The JSON
 * parser is strict RFC 8259 over UTF-8 and written out here: no library is needed. */
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

#define NOT_JSON "not valid JSON"
#define MAX_DEPTH 128 /* serde_json's recursion limit; SPEC.md leaves deeper nesting open */

/* ---- UTF-8 --------------------------------------------------------------------------- */

/* Whether p[0..n] is well-formed UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF), as Rust's str::from_utf8 checks. */
static int utf8_valid(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* Eight ASCII bytes at a time. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (p[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n) return 0;
            uint8_t c1 = p[i + 1];
            if ((c1 & 0xC0) != 0x80 || (p[i + 2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && c1 < 0xA0) return 0; /* overlong */
            if (c == 0xED && c1 > 0x9F) return 0; /* surrogate */
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n) return 0;
            uint8_t c1 = p[i + 1];
            if ((c1 & 0xC0) != 0x80 || (p[i + 2] & 0xC0) != 0x80 || (p[i + 3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && c1 < 0x90) return 0; /* overlong */
            if (c == 0xF4 && c1 > 0x8F) return 0; /* past U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* ---- the parser ---------------------------------------------------------------------- */

/* A growing byte buffer for decoded strings. */
typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static void buf_put(buf *b, const uint8_t *s, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) abort();
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* A decoded JSON string: a slice of the input when it has no escapes, else of `scratch`. */
typedef struct str {
    const uint8_t *p;
    size_t len;
} str;

typedef struct parser {
    const uint8_t *p, *end;
    int depth;
} parser;

enum { T_ERROR, T_OBJECT, T_OTHER, T_STRING };

static void ws(parser *ps) {
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(const uint8_t *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return 0;
    }
    *out = v;
    return 1;
}

static void put_utf8(buf *b, uint32_t cp) {
    uint8_t u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (uint8_t)cp; n = 1; }
    else if (cp < 0x800) { u[0] = 0xC0 | cp >> 6; u[1] = 0x80 | (cp & 0x3F); n = 2; }
    else if (cp < 0x10000) {
        u[0] = 0xE0 | cp >> 12; u[1] = 0x80 | (cp >> 6 & 0x3F); u[2] = 0x80 | (cp & 0x3F); n = 3;
    } else {
        u[0] = 0xF0 | cp >> 18; u[1] = 0x80 | (cp >> 12 & 0x3F);
        u[2] = 0x80 | (cp >> 6 & 0x3F); u[3] = 0x80 | (cp & 0x3F); n = 4;
    }
    buf_put(b, u, n);
}

/* Reads a string at ps->p (its opening quote). With `out`, decodes it there (into `scratch`
 * when it has escapes); without, only checks it. Returns 0 when it is not a valid string. */
static int string(parser *ps, str *out, buf *scratch) {
    const uint8_t *start = ++ps->p;
    int escaped = 0;
    if (scratch) scratch->len = 0;
    for (;;) {
        const uint8_t *run = ps->p;
        while (ps->p < ps->end && *ps->p != '"' && *ps->p != '\\' && *ps->p >= 0x20) ps->p++;
        if (ps->p >= ps->end || *ps->p < 0x20) return 0; /* unterminated, or a raw control */
        if (*ps->p == '"') {
            if (out && escaped) buf_put(scratch, run, (size_t)(ps->p - run));
            break;
        }
        /* a backslash */
        if (out) {
            if (!escaped) scratch->len = 0;
            buf_put(scratch, run, (size_t)(ps->p - run));
            escaped = 1;
        }
        if (ps->end - ps->p < 2) return 0;
        uint8_t c = ps->p[1], d;
        ps->p += 2;
        switch (c) {
        case '"': d = '"'; break;
        case '\\': d = '\\'; break;
        case '/': d = '/'; break;
        case 'b': d = '\b'; break;
        case 'f': d = '\f'; break;
        case 'n': d = '\n'; break;
        case 'r': d = '\r'; break;
        case 't': d = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (ps->end - ps->p < 4 || !hex4(ps->p, &cp)) return 0;
            ps->p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return 0; /* a lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {        /* must pair with a low one */
                if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' ||
                    !hex4(ps->p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return 0;
                ps->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (out) put_utf8(scratch, cp);
            continue;
        }
        default: return 0;
        }
        if (out) buf_put(scratch, &d, 1);
    }
    if (out) {
        if (escaped) { out->p = scratch->p; out->len = scratch->len; }
        else { out->p = start; out->len = (size_t)(ps->p - start); }
    }
    ps->p++; /* the closing quote */
    return 1;
}

static int digits(parser *ps) {
    const uint8_t *s = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    return ps->p > s;
}

static int number(parser *ps) {
    if (*ps->p == '-') ps->p++;
    if (ps->p >= ps->end) return 0;
    if (*ps->p == '0') ps->p++;
    else if (!digits(ps)) return 0;
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!digits(ps)) return 0;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
        if (!digits(ps)) return 0;
    }
    return 1;
}

static int literal(parser *ps, const char *word, size_t n) {
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return 0;
    ps->p += n;
    return 1;
}

/* What the top-level object held: each field's last value, when it was a string. */
typedef struct picked {
    int has_user, has_item;
    str user, item;
    buf user_buf, item_buf, key_buf;
} picked;

static int value(parser *ps, picked *top);

/* An object at ps->p; `top` is given for the outermost one only. */
static int object(parser *ps, picked *top) {
    ps->p++;
    ws(ps);
    if (ps->p < ps->end && *ps->p == '}') { ps->p++; return T_OBJECT; }
    for (;;) {
        str key = {0};
        if (ps->p >= ps->end || *ps->p != '"') return T_ERROR;
        if (!string(ps, top ? &key : NULL, top ? &top->key_buf : NULL)) return T_ERROR;
        ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') return T_ERROR;
        ps->p++;
        ws(ps);
        int which = 0; /* 1: user, 2: item */
        if (top && key.len == 4 && memcmp(key.p, "user", 4) == 0) which = 1;
        if (top && key.len == 4 && memcmp(key.p, "item", 4) == 0) which = 2;
        if (which && ps->p < ps->end && *ps->p == '"') {
            if (which == 1) {
                if (!string(ps, &top->user, &top->user_buf)) return T_ERROR;
                top->has_user = 1;
            } else {
                if (!string(ps, &top->item, &top->item_buf)) return T_ERROR;
                top->has_item = 1;
            }
        } else {
            if (value(ps, NULL) == T_ERROR) return T_ERROR;
            if (which == 1) top->has_user = 0; /* the last value counts: not a string */
            if (which == 2) top->has_item = 0;
        }
        ws(ps);
        if (ps->p >= ps->end) return T_ERROR;
        if (*ps->p == '}') { ps->p++; return T_OBJECT; }
        if (*ps->p != ',') return T_ERROR;
        ps->p++;
        ws(ps);
    }
}

static int array(parser *ps) {
    ps->p++;
    ws(ps);
    if (ps->p < ps->end && *ps->p == ']') { ps->p++; return T_OTHER; }
    for (;;) {
        if (value(ps, NULL) == T_ERROR) return T_ERROR;
        ws(ps);
        if (ps->p >= ps->end) return T_ERROR;
        if (*ps->p == ']') { ps->p++; return T_OTHER; }
        if (*ps->p != ',') return T_ERROR;
        ps->p++;
        ws(ps);
    }
}

/* One value at ps->p (no leading whitespace): its type, or T_ERROR. */
static int value(parser *ps, picked *top) {
    if (ps->p >= ps->end) return T_ERROR;
    int t;
    switch (*ps->p) {
    case '{':
    case '[':
        if (++ps->depth > MAX_DEPTH) return T_ERROR;
        t = *ps->p == '{' ? object(ps, top) : array(ps);
        ps->depth--;
        return t;
    case '"': return string(ps, NULL, NULL) ? T_STRING : T_ERROR;
    case 't': return literal(ps, "true", 4) ? T_OTHER : T_ERROR;
    case 'f': return literal(ps, "false", 5) ? T_OTHER : T_ERROR;
    case 'n': return literal(ps, "null", 4) ? T_OTHER : T_ERROR;
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
            return number(ps) ? T_OTHER : T_ERROR;
        return T_ERROR;
    }
}

/* ---- the transformation -------------------------------------------------------------- */

/* Writes `s` as a JSON string at `dst` (room for 6 bytes per input byte + 2), upper-casing
 * ASCII letters when `upper`; returns the end. */
static uint8_t *write_string(uint8_t *dst, str s, int upper) {
    static const char hex[] = "0123456789abcdef";
    *dst++ = '"';
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.p[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *dst++ = upper && c >= 'a' && c <= 'z' ? c - 32 : c;
            continue;
        }
        *dst++ = '\\';
        switch (c) {
        case '"': *dst++ = '"'; break;
        case '\\': *dst++ = '\\'; break;
        case '\b': *dst++ = 'b'; break;
        case '\f': *dst++ = 'f'; break;
        case '\n': *dst++ = 'n'; break;
        case '\r': *dst++ = 'r'; break;
        case '\t': *dst++ = 't'; break;
        default:
            *dst++ = 'u'; *dst++ = '0'; *dst++ = '0';
            *dst++ = (uint8_t)hex[c >> 4]; *dst++ = (uint8_t)hex[c & 15];
        }
    }
    *dst++ = '"';
    return dst;
}

/* Kept across calls so that their buffers are reused. */
static picked scratch;

/* The reason `value` is rejected, or NULL with its fields in `scratch`. */
static const char *fields(const uint8_t *v, size_t n) {
    if (!utf8_valid(v, n)) return NOT_JSON;
    parser ps = {v, v + n, 0};
    scratch.has_user = scratch.has_item = 0;
    ws(&ps);
    int t = value(&ps, &scratch);
    if (t == T_ERROR) return NOT_JSON;
    ws(&ps);
    if (ps.p != ps.end) return NOT_JSON;
    if (t != T_OBJECT) return "not a JSON object";
    if (!scratch.has_user) return "field \"user\" is missing or not a string";
    if (!scratch.has_item) return "field \"item\" is missing or not a string";
    return NULL;
}

const char *plugin_init(const sluice_params *params) {
    static const char *const none[] = {NULL};
    return sluice_params_allow_only(params, none);
}

sluice_error plugin_transform(const sluice_context *ctx, const sluice_batch *input,
                              sluice_output *out) {
    (void)ctx;
    for (uint32_t i = 0; i < input->len; i++) {
        sluice_record r = sluice_record_at(input, i);
        const char *reason = fields(r.value, r.len);
        if (reason) {
            sluice_reject_record(out, &r, reason);
            continue;
        }
        size_t max = 6 * (scratch.user.len + scratch.item.len) + 20;
        uint8_t *start = sluice_push_begin(out, &r, max), *dst = start;
        memcpy(dst, "{\"user\":", 8);
        dst = write_string(dst + 8, scratch.user, 1);
        memcpy(dst, ",\"item\":", 8);
        dst = write_string(dst + 8, scratch.item, 0);
        *dst++ = '}';
        sluice_push_end(out, (size_t)(dst - start));
    }
    return sluice_ok();
}
