#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"

enum { LOG_LINE_MAX = 4096 };

static rb_log_level_t log_level = RB_LOG_INFO;
static int log_json;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void rb_log_setup(rb_log_level_t level, int json)
{
    RB_ASSERT(level >= RB_LOG_DEBUG && level <= RB_LOG_ERROR);
    log_level = level;
    log_json = json;
}

int rb_log_level_parse(const char *s, rb_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (rb_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

/* Appends s to buf as the inside of a JSON string. */
static size_t put_json_escaped(char *buf, size_t pos, size_t cap, const char *s)
{
    for (; *s != '\0' && pos + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[pos++] = '\\';
            buf[pos++] = (char)c;
        } else if (c < 0x20) {
            pos += (size_t)snprintf(buf + pos, cap - pos, "\\u%04x", c);
        } else {
            buf[pos++] = (char)c;
        }
    }
    return pos;
}

void rb_log(rb_log_level_t level, const char *event, const char *fmt, ...)
{
    char line[LOG_LINE_MAX], kv[LOG_LINE_MAX - 256], ts[40];
    struct timeval tv;
    struct tm tm;
    size_t pos;
    int n;

    if (level < log_level)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = (int)strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - (size_t)n, ".%03dZ", (int)(tv.tv_usec / 1000));

    kv[0] = '\0';
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(kv, sizeof(kv), fmt, ap);
        va_end(ap);
    }
    if (log_json) {
        pos = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"",
                               ts, level_names[level]);
        pos = put_json_escaped(line, pos, sizeof(line) - 16, event);
        pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "\",\"msg\":\"");
        pos = put_json_escaped(line, pos, sizeof(line) - 8, kv);
        pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "\"}\n");
    } else {
        pos = (size_t)snprintf(line, sizeof(line), "ts=%s level=%s event=%s%s%s\n", ts,
                               level_names[level], event, kv[0] != '\0' ? " " : "", kv);
    }
    if (pos >= sizeof(line)) {
        pos = sizeof(line) - 1;
        line[pos - 1] = '\n';
    }
    if (write(STDERR_FILENO, line, pos) < 0) {
        /* nowhere left to report it */
    }
}
