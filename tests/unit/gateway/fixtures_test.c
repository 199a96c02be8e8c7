/*
 * Golden provider-quirk fixtures (tests/fixtures/usage/<provider>/): every <case>.sse is fed
 * through the SSE parser and the usage observer, whole and in random chunk sizes; every <case>.json
 * goes through gw_usage_from_body. The normalised record, printed as key=value lines, must equal
 * <case>.expected.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "gateway/sse.h"
#include "gateway/usage.h"
#include "test.h"

#define FIXTURE_DIR      "tests/fixtures/usage"
#define FIXTURE_FILE_MAX (1 << 20)
#define FIXTURE_ROUNDS   25

static const struct {
    const char *dir;
    gw_route_t route;
} fixture_routes[] = {
    {"openai_chat", GW_ROUTE_CHAT},
    {"openai_completions", GW_ROUTE_COMPLETIONS},
    {"openai_responses", GW_ROUTE_RESPONSES},
    {"openai_embeddings", GW_ROUTE_EMBEDDINGS},
    {"openrouter", GW_ROUTE_CHAT},
    {"deepseek", GW_ROUTE_CHAT},
    {"anthropic", GW_ROUTE_MESSAGES},
    {"anthropic_count_tokens", GW_ROUTE_COUNT_TOKENS},
};

static int fixtures_seen;

/* Reads a whole file into a malloc'd NUL-terminated buffer; NULL when missing. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;

    if (f == NULL)
        return NULL;
    buf = malloc(FIXTURE_FILE_MAX + 1);
    RB_ASSERT(buf != NULL);
    *len = fread(buf, 1, FIXTURE_FILE_MAX, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static void print_usage(rb_buf_t *out, const gw_usage_t *u)
{
    static const char *const bits[] = {"input_uncached", "cache_read", "cache_write_5m",
                                       "cache_write_1h", "output",     "reasoning",
                                       "requests"};
    int any = 0;

    rb_buf_printf(out,
                  "input_uncached=%lld\ncache_read=%lld\ncache_write_5m=%lld\n"
                  "cache_write_1h=%lld\noutput=%lld\nreasoning=%lld\nrequests=%lld\nreported=",
                  (long long)u->input_uncached, (long long)u->cache_read,
                  (long long)u->cache_write_5m, (long long)u->cache_write_1h, (long long)u->output,
                  (long long)u->reasoning, (long long)u->requests);
    for (unsigned b = 0; b < sizeof(bits) / sizeof(bits[0]); b++) {
        if (u->reported & (1u << b)) {
            rb_buf_printf(out, "%s%s", any ? "," : "", bits[b]);
            any = 1;
        }
    }
    rb_buf_printf(out, "%s\nterminal=%d\n", any ? "" : "none", u->terminal);
}

static void on_event(void *ctx, const gw_sse_event_t *ev)
{
    gw_usage_observe(ctx, ev->name, ev->name_len, ev->data, ev->data_len);
}

/* Runs a stream through parser + observer in chunks from the seeded generator (seed 0 = whole). */
static void run_stream(gw_route_t route, const char *text, size_t len, unsigned seed, rb_buf_t *out)
{
    gw_sse_parser_t p;
    gw_usage_observer_t obs;
    rb_err_t err = RB_OK;

    gw_sse_parser_init(&p, 0);
    gw_usage_observer_init(&obs, route, NULL);
    for (size_t i = 0; i < len && err == RB_OK;) {
        size_t n = seed == 0 ? len - i : 1 + (size_t)rand_r(&seed) % 64;
        n = n > len - i ? len - i : n;
        err = gw_sse_feed(&p, text + i, n, on_event, &obs);
        i += n;
    }
    CHECK_INT_EQ(err, RB_OK);
    gw_sse_parser_dispose(&p);
    print_usage(out, &obs.usage);
    rb_buf_printf(out, "done=%d\nprovider_error=%d\nmalformed=%d\noutput_bytes=%lld\n", obs.done,
                  obs.provider_error, obs.malformed, (long long)obs.output_bytes);
}

static void run_body(gw_route_t route, const char *text, size_t len, rb_buf_t *out)
{
    gw_usage_t u;
    rb_err_t err = gw_usage_from_body(route, text, len, NULL, &u);

    rb_buf_printf(out, "result=%s\n", rb_err_name(err));
    print_usage(out, &u);
}

static void check_case(const char *dir, gw_route_t route, const char *file)
{
    char path[1024], exp_path[1024];
    size_t len = 0, exp_len = 0, stem = strlen(file) - (strstr(file, ".sse") != NULL ? 4 : 5);
    char *text, *expected;
    rb_buf_t got;

    snprintf(path, sizeof(path), "%s/%s/%s", FIXTURE_DIR, dir, file);
    snprintf(exp_path, sizeof(exp_path), "%s/%s/%.*s.expected", FIXTURE_DIR, dir, (int)stem, file);
    text = read_file(path, &len);
    expected = read_file(exp_path, &exp_len);
    CHECK(text != NULL && expected != NULL);
    if (text == NULL || expected == NULL) {
        fprintf(stderr, "  missing %s or its .expected\n", path);
        goto Exit;
    }
    fixtures_seen++;
    rb_buf_init(&got, 0);
    if (strstr(file, ".sse") != NULL) {
        run_stream(route, text, len, 0, &got);
        for (unsigned seed = 1; seed <= FIXTURE_ROUNDS; seed++) {
            rb_buf_t again;
            rb_buf_init(&again, 0);
            run_stream(route, text, len, seed, &again);
            CHECK(again.len == got.len && memcmp(again.base, got.base, got.len) == 0);
            rb_buf_free(&again);
        }
    } else {
        run_body(route, text, len, &got);
    }
    CHECK_STR_EQ(rb_buf_cstr(&got), expected);
    if (strcmp(rb_buf_cstr(&got), expected) != 0)
        fprintf(stderr, "  fixture %s\n", path);
    rb_buf_free(&got);
Exit:
    free(text);
    free(expected);
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

static void test_fixtures(void)
{
    for (size_t i = 0; i < sizeof(fixture_routes) / sizeof(fixture_routes[0]); i++) {
        char path[512];
        DIR *d;
        struct dirent *e;

        snprintf(path, sizeof(path), "%s/%s", FIXTURE_DIR, fixture_routes[i].dir);
        d = opendir(path);
        CHECK(d != NULL);
        if (d == NULL) {
            fprintf(stderr, "  no directory %s (run from the repository root)\n", path);
            continue;
        }
        while ((e = readdir(d)) != NULL) {
            if (has_suffix(e->d_name, ".sse") || has_suffix(e->d_name, ".json"))
                check_case(fixture_routes[i].dir, fixture_routes[i].route, e->d_name);
        }
        closedir(d);
    }
    CHECK(fixtures_seen >= 20);
    printf("%d fixtures\n", fixtures_seen);
}

TEST_MAIN(test_fixtures)
