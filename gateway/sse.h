/*
 * Incremental Server-Sent Events parser (WHATWG HTML, "Interpreting an event stream").
 *
 * The proxy forwards upstream bytes untouched and feeds a copy here to observe events on the side.
 * Bytes arrive in arbitrary chunks: a line, a "\r\n" pair or a UTF-8 BOM may be split across feeds,
 * and feeding one byte at a time yields exactly the same events (names, data and offsets) as
 * feeding everything at once. Lines end with "\n", "\r\n" or "\r"; a line starting with ':' is a
 * comment; a field without a colon has an empty value; one space after the colon is stripped;
 * "data" lines are joined with "\n"; "id" and "retry" are recognised and ignored (the gateway never
 * reconnects); an event is dispatched at a blank line, and only when at least one "data" line was
 * seen (so "data:" alone dispatches an empty event, as the spec says, while an event with no data
 * line dispatches nothing). An incomplete event at the end of the stream is never dispatched.
 *
 * Memory: the parser owns one buffer, holding the current event's joined data plus the current
 * line, grown on demand up to `line_max` and reused for every event (no allocation per event). When
 * the data of one event plus the line being read would pass line_max, or an "event:" name passes
 * GW_SSE_NAME_MAX, gw_sse_feed returns RB_ERR_LIMIT and the parser stays failed: the caller stops
 * observing but keeps forwarding bytes.
 *
 * Offsets: every event reports [start_off, end_off), its byte range in the whole stream (a
 * cumulative count over all feeds, starting at 0): from the first byte of the first line of its
 * block (comments and other fields included) to the end of the blank line that dispatched it. A
 * CR-terminated blank line ends at the CR; the LF of a "\r\n" pair that follows is skipped and
 * belongs to no event (a stray blank line is harmless to any SSE reader). Removing exactly those
 * bytes removes the event from the stream.
 *
 * Pure: no I/O, clock or globals. One parser per stream, used by one thread.
 */
#ifndef RB_GATEWAY_SSE_H
#define RB_GATEWAY_SSE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Longest "event:" name kept; a longer one is an RB_ERR_LIMIT (real names are < 64 bytes). */
#define GW_SSE_NAME_MAX 128
/* Default for line_max: one event's data (and one line) may hold this many bytes. */
#define GW_SSE_LINE_MAX_DEFAULT (1024 * 1024)
/* The buffer's first allocation; it doubles from here up to line_max. */
#define GW_SSE_BUF_INITIAL 512

/** One dispatched event. All pointers are borrowed and valid only during the callback. */
typedef struct st_gw_sse_event_t {
    const char *name; /* the "event:" field; name_len 0 means the spec's default type "message" */
    size_t name_len;
    const char *data; /* data lines joined with "\n", NUL-terminated (data[data_len] == '\0') */
    size_t data_len;
    uint64_t start_off; /* first byte of the event's block in the stream */
    uint64_t end_off;   /* one past the blank line that dispatched it */
} gw_sse_event_t;

/** Called once per dispatched event, in stream order. */
typedef void (*gw_sse_on_event_cb)(void *ctx, const gw_sse_event_t *ev);

/** Parser state; treat the fields as private. */
typedef struct st_gw_sse_parser_t {
    char *buf; /* owned: [data (data_len)] [current line (line_len)]; +1 byte for a NUL */
    size_t cap;
    size_t line_max;
    size_t data_len;
    size_t line_len;
    int has_data;      /* a "data" field was seen in this block */
    int pending_cr;    /* the previous byte ended a line with CR: skip one LF */
    int failed;        /* a limit was passed: every later feed returns RB_ERR_LIMIT */
    unsigned bom_seen; /* bytes of a leading UTF-8 BOM matched so far (0..3); 4 = decided */
    int block_open;    /* a line of the current block has started */
    uint64_t off;      /* bytes consumed so far */
    uint64_t block_start;
    size_t name_len;
    char name[GW_SSE_NAME_MAX];
} gw_sse_parser_t;

/** Initialises p; line_max bounds one event's data and one line (0 = GW_SSE_LINE_MAX_DEFAULT). */
void gw_sse_parser_init(gw_sse_parser_t *p, size_t line_max);
/** Frees the parser's buffer; p may be re-initialised afterwards. */
void gw_sse_parser_dispose(gw_sse_parser_t *p);
/** Consumes len bytes, calling cb for every event completed by them. Returns RB_OK, or RB_ERR_LIMIT
 *  (now and on every later call) once a limit is passed; events before that point were dispatched.
 */
rb_err_t gw_sse_feed(gw_sse_parser_t *p, const char *bytes, size_t len, gw_sse_on_event_cb cb,
                     void *ctx);
/** Offset of the first byte not yet part of a dispatched event or skipped blank line: bytes from
 * here on may still belong to an event (a proxy that may drop events forwards only up to here). */
uint64_t gw_sse_pending_start(const gw_sse_parser_t *p);

#endif
