/*
 * Structured logging: one line per event on stderr, either logfmt
 *   ts=2026-11-30T02:10:37.123Z level=info event=listening addr=127.0.0.1:9090
 * or JSON ({"ts":…,"level":…,"event":…,"msg":"addr=…"}), chosen once at start.
 *
 * The level and format are process-wide settings written once by main() before any thread starts
 * (the only global state besides the configuration). Any thread may log; each line is one write(2),
 * so lines from different threads never interleave. Never log a secret: callers pass key ids or
 * hashes, not keys.
 */
#ifndef RB_COMMON_LOG_H
#define RB_COMMON_LOG_H

typedef enum { RB_LOG_DEBUG, RB_LOG_INFO, RB_LOG_WARN, RB_LOG_ERROR } rb_log_level_t;

/** Sets the minimum level and the format (json != 0 for JSON lines). Call before threads start. */
void rb_log_setup(rb_log_level_t level, int json);

/** Parses "debug|info|warn|error"; returns 0 on success, -1 when unknown. */
int rb_log_level_parse(const char *s, rb_log_level_t *out);

/** Logs one event; fmt formats the key=value pairs that follow the event name (may be NULL). */
void rb_log(rb_log_level_t level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define rb_log_debug(event, ...) rb_log(RB_LOG_DEBUG, event, __VA_ARGS__)
#define rb_log_info(event, ...)  rb_log(RB_LOG_INFO, event, __VA_ARGS__)
#define rb_log_warn(event, ...)  rb_log(RB_LOG_WARN, event, __VA_ARGS__)
#define rb_log_error(event, ...) rb_log(RB_LOG_ERROR, event, __VA_ARGS__)

#endif
