/*
 * JSON reading (over jsmn) and writing.
 *
 * Reader: rb_json_parse tokenizes a document once; the document *borrows* the text (which must stay
 * valid and unchanged until rb_json_free) and owns its token array. Values are addressed by token
 * index (int): the root is 0, and -1 means "absent" everywhere (every function accepts -1 and
 * treats it as a missing value, so lookups chain without checks). Strings are unescaped on demand
 * (\n, \", \uXXXX and surrogate pairs to UTF-8; a lone or mismatched surrogate is an error).
 * Limits: nesting depth and token count (rb_json_limits_t); past them parsing fails with
 * RB_ERR_LIMIT, never a crash. Parsing is strict RFC 8259: one value, no trailing garbage, no
 * unquoted keys, no leading zeros or bare fractions, no raw control characters in strings. Bytes >=
 * 0x80 inside strings are passed through as they are (not checked as UTF-8). Documents longer than
 * INT_MAX bytes fail with RB_ERR_LIMIT.
 *
 * Writer: rb_jw_t appends correctly escaped JSON to an rb_buf_t; commas and nesting are tracked for
 * the caller. Invalid UTF-8 bytes in strings are written as U+FFFD (one per maximal ill-formed
 * subpart); U+2028/U+2029 are escaped. Misuse (a value without a key inside an object, an
 * unbalanced end, nesting past 63) is a programmer error and trips RB_ASSERT. At the top level
 * values are written back to back without commas, so one writer may emit several documents. Appends
 * past the buffer's len_max are dropped and set out->overflow: check it once at the end.
 *
 * Both are pure and single-threaded (one document or writer per thread at a time).
 */
#ifndef RB_COMMON_JSON_H
#define RB_COMMON_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

#define RB_JSON_DEPTH_MAX_DEFAULT  64
#define RB_JSON_TOKENS_MAX_DEFAULT 524288

typedef enum {
    RB_JSON_ABSENT = 0, /* index -1 */
    RB_JSON_OBJECT,
    RB_JSON_ARRAY,
    RB_JSON_STRING,
    RB_JSON_NUMBER,
    RB_JSON_TRUE,
    RB_JSON_FALSE,
    RB_JSON_NULL,
} rb_json_type_t;

typedef struct st_rb_json_limits_t {
    unsigned depth_max;  /* deepest nesting of objects/arrays; 0 = default */
    unsigned tokens_max; /* most tokens in one document; 0 = default */
} rb_json_limits_t;

typedef struct st_rb_json_t rb_json_t;

/** Parses text[0..len). limits may be NULL (defaults). Returns RB_OK, RB_ERR_PARSE or RB_ERR_LIMIT;
 *  on success *out is owned by the caller (free with rb_json_free) and borrows text. */
rb_err_t rb_json_parse(const char *text, size_t len, const rb_json_limits_t *limits,
                       rb_json_t **out);
/** Frees the document (NULL is fine). */
void rb_json_free(rb_json_t *doc);
/** Validates text[0..len) as rb_json_parse does (same errors and limits) but tokenizes only the
 *  value of the root object's first member named key: RB_OK with *out its document (owned, free
 *  with rb_json_free; it borrows text, its root is that value) and its byte span [*start, *end) in
 *  text; RB_ERR_NOTFOUND when the root has no such member (or is not an object); RB_ERR_INVAL when
 *  a root member name up to it is written with escapes, which only a whole parse compares
 *  (rb_json_parse, then rb_json_member). For a large document of which one member is read. */
rb_err_t rb_json_parse_member(const char *text, size_t len, const rb_json_limits_t *limits,
                              const char *key, rb_json_t **out, size_t *start, size_t *end);

/** Number of tokens (values and keys) in the document: valid indexes are 0 .. count-1. */
size_t rb_json_tokens(const rb_json_t *doc);
/** The type of value v (RB_JSON_ABSENT for -1). */
rb_json_type_t rb_json_type(const rb_json_t *doc, int v);
/** The member value named key (exact, unescaped comparison) in object obj, or -1. */
int rb_json_member(const rb_json_t *doc, int obj, const char *key);
/** Follows a path from v: "usage.prompt_tokens_details.cached_tokens", "choices[0].delta",
 *  "[2]"; "" returns v. -1 when any step is missing or of the wrong type, or the path is malformed
 *  ("a..b", "[x]"). Keys containing '.' or '[' are reachable only with rb_json_member. */
int rb_json_find(const rb_json_t *doc, int v, const char *path);
/** Element count of an array or member count of an object; 0 otherwise. */
size_t rb_json_count(const rb_json_t *doc, int v);
/** The i-th element of array arr, or -1. */
int rb_json_index(const rb_json_t *doc, int arr, size_t i);
/** Iterates an array: pass *el = -1 first; each call sets *el to the next element and returns 1,
 *  or returns 0 at the end (or when arr is not an array). */
int rb_json_elem_next(const rb_json_t *doc, int arr, int *el);
/** Iterates an object: pass *key = -1 first; each call sets *key and *val to the next member and
 *  returns 1, or returns 0 at the end. */
int rb_json_next(const rb_json_t *doc, int obj, int *key, int *val);

/** Raw text of v: for strings the still-escaped bytes between the quotes; for objects/arrays the
 *  whole text including brackets. Sets *len; returns NULL for -1. Valid while the text is. */
const char *rb_json_raw(const rb_json_t *doc, int v, size_t *len);
/** Byte offsets [start, end) of v in the text, strings including their quotes. -1 if absent. */
int rb_json_span(const rb_json_t *doc, int v, size_t *start, size_t *end);

/** v as an integer (a number with no fraction/exponent, in int64 range; "-0" is 0): 0, or -1. */
int rb_json_int64(const rb_json_t *doc, int v, int64_t *out);
/** v as a double: 0, or -1 when not a number, longer than 127 bytes, or out of double range. */
int rb_json_double(const rb_json_t *doc, int v, double *out);
/** v as a boolean: 0, or -1 when not true/false. */
int rb_json_bool(const rb_json_t *doc, int v, int *out);
/** Unescapes string v into buf (NUL-terminated, *len_out excludes the NUL; len_out may be NULL).
 *  "\u0000" yields an embedded NUL (use *len_out). RB_ERR_NOTFOUND when v is not a string,
 *  RB_ERR_LIMIT when cap is too small, RB_ERR_PARSE on a bad escape or a lone surrogate; on error
 *  buf is "" (when cap > 0) and *len_out is 0. Needs at most raw length + 1 bytes. */
rb_err_t rb_json_str(const rb_json_t *doc, int v, char *buf, size_t cap, size_t *len_out);
/** Unescaped copy of string v; returns owned (free with free()), NULL when not a valid string. */
char *rb_json_strdup(const rb_json_t *doc, int v);
/** 1 when v is a string whose unescaped value equals s, else 0. */
int rb_json_str_eq(const rb_json_t *doc, int v, const char *s);

/* Path shorthands: rb_json_find then the typed getter. */
/** rb_json_int64 of rb_json_find(doc, v, path). */
int rb_json_get_int64(const rb_json_t *doc, int v, const char *path, int64_t *out);
/** rb_json_bool of rb_json_find(doc, v, path). */
int rb_json_get_bool(const rb_json_t *doc, int v, const char *path, int *out);
/** rb_json_str of rb_json_find(doc, v, path), as a C string: RB_ERR_INVAL (buf "") when it holds
 *  "\u0000", which would cut it short. */
rb_err_t rb_json_get_str(const rb_json_t *doc, int v, const char *path, char *buf, size_t cap);

/* ---- writer ---- */

typedef struct st_rb_jw_t {
    rb_buf_t *out;   /* borrowed: where the JSON goes */
    unsigned depth;  /* current nesting */
    uint64_t first;  /* bit d set: nothing written yet at depth d (no comma needed) */
    int after_key;   /* a key was just written: the next value needs no comma */
    uint64_t in_obj; /* bit d set: depth d is an object (values there need a key first) */
} rb_jw_t;

/** Starts writing into out (appends; does not clear it). Nesting is limited to 63 levels. */
void rb_jw_init(rb_jw_t *w, rb_buf_t *out);
/** Opens an object ({). */
void rb_jw_obj_begin(rb_jw_t *w);
/** Closes the innermost object (}). */
void rb_jw_obj_end(rb_jw_t *w);
/** Opens an array ([). */
void rb_jw_arr_begin(rb_jw_t *w);
/** Closes the innermost array (]). */
void rb_jw_arr_end(rb_jw_t *w);
/** Writes a member name inside an object; the next call writes its value. */
void rb_jw_key(rb_jw_t *w, const char *key);
/** A NUL-terminated string value (escaped). */
void rb_jw_str(rb_jw_t *w, const char *s);
/** A string of n bytes (may contain NULs, written as \u0000). */
void rb_jw_strn(rb_jw_t *w, const char *s, size_t n);
/** An integer value. */
void rb_jw_int64(rb_jw_t *w, int64_t v);
/** An unsigned integer value. */
void rb_jw_uint64(rb_jw_t *w, uint64_t v);
/** A finite double (NaN/inf are written as null). */
void rb_jw_double(rb_jw_t *w, double v);
/** true (v != 0) or false. */
void rb_jw_bool(rb_jw_t *w, int v);
/** null. */
void rb_jw_null(rb_jw_t *w);
/** Already-encoded JSON, inserted verbatim as one value. */
void rb_jw_raw(rb_jw_t *w, const char *json, size_t n);
/* Member shorthands: rb_jw_key followed by the value. */
/** "key": "s" */
void rb_jw_kstr(rb_jw_t *w, const char *key, const char *s);
/** "key": v */
void rb_jw_kint64(rb_jw_t *w, const char *key, int64_t v);
/** "key": true|false */
void rb_jw_kbool(rb_jw_t *w, const char *key, int v);
/** Writes s JSON-escaped *without* quotes into out (for hand-built templates). */
void rb_json_escape(rb_buf_t *out, const char *s, size_t n);
/** Length (1..4) of the well-formed UTF-8 sequence at s[0..n), n >= 1 (Unicode Table 3-7), or 0
 *  when ill-formed; *bad_len is then the maximal subpart to replace with one U+FFFD (>= 1). */
size_t rb_utf8_seq(const unsigned char *s, size_t n, size_t *bad_len);
/** Appends s[0..n) to out with each ill-formed UTF-8 sequence replaced by U+FFFD and each
 *  well-formed sequence p[0..k) for which esc returns a string replaced by it (esc may write that
 *  string into tmp; NULL keeps the sequence). Bytes 0x20-0x7F other than '"' and '\\' go out as
 *  they are without asking esc (both escapes keep them). The loop of rb_json_escape and
 *  rb_pg_copy_text; inline, so that each caller's esc is inlined into it too. */
static inline void rb_utf8_escape(rb_buf_t *out, const char *s, size_t n,
                                  const char *(*esc)(const unsigned char *p, size_t k, char tmp[8]))
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n, *run = p;
    char tmp[8];

    RB_ASSERT(out != NULL && (s != NULL || n == 0));
    while (p < end) {
        const char *rep;
        size_t k = 1, bad = 0;
        if (*p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') {
            p++;
            continue;
        }
        if (*p >= 0x80 && (k = rb_utf8_seq(p, (size_t)(end - p), &bad)) == 0) {
            rep = "\xEF\xBF\xBD"; /* U+FFFD REPLACEMENT CHARACTER */
            k = bad;
        } else {
            rep = esc(p, k, tmp);
        }
        if (rep != NULL) {
            rb_buf_append(out, run, (size_t)(p - run));
            rb_buf_puts(out, rep);
            run = p + k;
        }
        p += k;
    }
    rb_buf_append(out, run, (size_t)(p - run));
}

#endif
