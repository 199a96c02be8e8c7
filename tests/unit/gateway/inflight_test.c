/* gw_inflight: a call a process still had under way when it died is found by the next process, as
 * the record of an interrupted call, exactly once; a call that ended is not. Includes a real
 * SIGKILL. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gateway/inflight.h"
#include "gateway/usage.h"
#include "test.h"

static char dir[64];

typedef struct {
    gw_db_usage_row_t rows[8];
    size_t n;
} got_t;

static int collect(void *ctx, const gw_db_usage_row_t *row)
{
    got_t *g = ctx;

    if (g->n < sizeof(g->rows) / sizeof(g->rows[0]))
        g->rows[g->n] = *row;
    g->n++;
    return 0;
}

static int refuse(void *ctx, const gw_db_usage_row_t *row)
{
    (void)row;
    ((got_t *)ctx)->n++;
    return -1;
}

static gw_inflight_call_t call(const char *rid, int priced)
{
    gw_inflight_call_t c = {0};

    rb_copy_str(c.row.request_id, sizeof(c.row.request_id), rid);
    rb_copy_str(c.row.user_id, sizeof(c.row.user_id), "u-aaaaaaaa");
    rb_copy_str(c.row.workspace_id, sizeof(c.row.workspace_id), "ws-bbbbbbbb");
    rb_copy_str(c.row.route, sizeof(c.row.route), "/v1/chat/completions");
    rb_copy_str(c.row.provider, sizeof(c.row.provider), "openai");
    rb_copy_str(c.row.model, sizeof(c.row.model), "gpt-4o-mini");
    rb_copy_str(c.row.upstream_model, sizeof(c.row.upstream_model), "gpt-4o-mini-2024");
    rb_copy_str(c.row.lease_id, sizeof(c.row.lease_id), "lease-1");
    c.row.status = "ok"; /* not kept: the record says error */
    c.row.billed = priced;
    c.row.created_at_ms = 1790000000123;
    c.price = (gw_price_t){.input = 150000, .output = 600000};
    c.priced = priced;
    c.chars_per_token = 4;
    c.input_bytes = 401; /* ceil(401 / 4) = 101 tokens */
    return c;
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/rb-inflight-test.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
}

static void teardown(void)
{
    char path[128];

    snprintf(path, sizeof(path), "%s/inflight", dir);
    unlink(path);
    rmdir(dir);
}

static gw_inflight_t *open_dir(void)
{
    gw_inflight_t *f = NULL;
    char err[256] = "";

    CHECK_INT_EQ(gw_inflight_open(dir, &f, err, sizeof(err)), RB_OK);
    return f;
}

static void test_crash_leaves_the_call(void)
{
    gw_inflight_t *f;
    gw_inflight_call_t a = call("req-a", 1), b = call("req-b", 1), cu = call("req-c", 0);
    got_t got = {0};
    int sa, sb, sc;
    gw_usage_t u = {0};
    int64_t cost = 0;

    setup();
    f = open_dir();

    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got),
                 0); /* a new file holds nothing */
    sa = gw_inflight_begin(f, &a);
    sb = gw_inflight_begin(f, &b);
    sc = gw_inflight_begin(f, &cu);
    CHECK(sa >= 0 && sb >= 0 && sc >= 0 && sa != sb && sb != sc);
    CHECK_INT_EQ(gw_inflight_used(f), 3);
    gw_inflight_progress(f, sa, 100, NULL);
    gw_inflight_progress(f, sa, 999,
                         NULL); /* the latest count is the one kept: ceil(999 / 4) = 250 */
    gw_inflight_end(f, sb);     /* b's own record was written */
    CHECK_INT_EQ(gw_inflight_used(f), 2);
    gw_inflight_close(f); /* as a dead process leaves it: a and c still held */

    f = open_dir();
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got), 2);
    CHECK_STR_EQ(got.rows[0].request_id, "req-a");
    CHECK_STR_EQ(got.rows[1].request_id, "req-c");
    CHECK_STR_EQ(got.rows[0].user_id, "u-aaaaaaaa");
    CHECK_STR_EQ(got.rows[0].workspace_id, "ws-bbbbbbbb");
    CHECK_STR_EQ(got.rows[0].route, "/v1/chat/completions");
    CHECK_STR_EQ(got.rows[0].upstream_model, "gpt-4o-mini-2024");
    CHECK_STR_EQ(got.rows[0].lease_id, "lease-1");
    CHECK_STR_EQ(got.rows[0].status, "error");
    CHECK_STR_EQ(got.rows[0].error_code, GW_INFLIGHT_ERROR_CODE);
    CHECK_STR_EQ(got.rows[0].usage_source, "estimate");
    CHECK_INT_EQ(got.rows[0].input_uncached, 101);
    CHECK_INT_EQ(got.rows[0].output, 250);
    u.input_uncached = 101;
    u.output = 250;
    CHECK_INT_EQ(gw_pricing_cost(&a.price, &u, &cost), RB_OK);
    CHECK(cost > 0);
    CHECK_INT_EQ(got.rows[0].cost_micro, cost);
    CHECK_INT_EQ(got.rows[0].billed, 1);
    CHECK_INT_EQ(got.rows[0].created_at_ms, 1790000000123);
    CHECK_INT_EQ(got.rows[0].ttfb_ms, -1);
    CHECK_INT_EQ(got.rows[0].http_status, 0);
    CHECK_INT_EQ(got.rows[1].output, 0);     /* c never received a byte */
    CHECK_INT_EQ(got.rows[1].cost_micro, 0); /* unpriced */
    CHECK_INT_EQ(got.rows[1].billed, 0);
    got.n = 0;
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got),
                 0); /* recovered once, then freed */
    gw_inflight_close(f);
    f = open_dir();
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got),
                 0); /* and freed in the file too */
    gw_inflight_close(f);
    teardown();
}

/* What the provider stated mid-stream counts: Anthropic's message_start gives the input with its
 * cache reads apart (an estimate from bytes would bill the cached part as uncached input); its
 * output so far is not final, so the bytes received count when they show more. */
static void test_stated_usage(void)
{
    gw_inflight_t *f;
    gw_inflight_call_t c = call("req-anthropic", 1);
    gw_usage_t said = {0}, want = {0};
    got_t got = {0};
    int64_t cost = 0;
    int slot;

    setup();
    f = open_dir();
    said.input_uncached = 12;
    said.cache_read = 90000;
    said.cache_write_5m = 300;
    said.output = 1; /* message_start's placeholder */
    said.reported =
        GW_USAGE_INPUT_UNCACHED | GW_USAGE_CACHE_READ | GW_USAGE_CACHE_WRITE_5M | GW_USAGE_OUTPUT;
    slot = gw_inflight_begin(f, &c);
    gw_inflight_progress(f, slot, 80, &said); /* ceil(80 / 4) = 20 tokens received */
    gw_inflight_close(f);
    f = open_dir();
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got), 1);
    CHECK_INT_EQ(got.rows[0].input_uncached, 12); /* not ceil(401 / 4) = 101 */
    CHECK_INT_EQ(got.rows[0].cache_read, 90000);
    CHECK_INT_EQ(got.rows[0].cache_write_5m, 300);
    CHECK_INT_EQ(got.rows[0].output, 20);
    CHECK_STR_EQ(got.rows[0].usage_source, "estimate");
    want = said;
    want.output = 20;
    CHECK_INT_EQ(gw_pricing_cost(&c.price, &want, &cost), RB_OK);
    CHECK_INT_EQ(got.rows[0].cost_micro, cost);
    gw_inflight_close(f);
    teardown();
}

/* A child takes a slot, then is killed with SIGKILL: the parent, as the next process, finds it. */
static void test_sigkill(void)
{
    gw_inflight_t *f;
    got_t got = {0};
    int status = 0;
    pid_t pid;

    setup();
    pid = fork();

    if (pid == 0) {
        gw_inflight_call_t c = call("req-killed", 1);
        gw_inflight_t *cf = NULL;
        char err[256];
        if (gw_inflight_open(dir, &cf, err, sizeof(err)) != RB_OK)
            _exit(2);
        gw_inflight_progress(cf, gw_inflight_begin(cf, &c), 40, NULL);
        kill(getpid(), SIGKILL);
        _exit(3);
    }
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    f = open_dir();
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got), 1);
    CHECK_STR_EQ(got.rows[0].request_id, "req-killed");
    CHECK_INT_EQ(got.rows[0].output, 10);
    gw_inflight_close(f);
    teardown();
}

static void test_full(void)
{
    gw_inflight_t *f;
    gw_inflight_call_t c = call("req-full", 1);
    got_t got = {0};
    int last = -1;

    setup();
    f = open_dir();

    for (int i = 0; i < GW_INFLIGHT_SLOTS; i++)
        last = gw_inflight_begin(f, &c);
    CHECK(last >= 0);
    CHECK_INT_EQ(gw_inflight_begin(f, &c), -1); /* all taken */
    CHECK_INT_EQ(gw_inflight_used(f), GW_INFLIGHT_SLOTS);
    gw_inflight_progress(f, -1, 5, NULL); /* no slot: no-ops */
    gw_inflight_end(f, -1);
    gw_inflight_end(f, last);
    CHECK_INT_EQ(gw_inflight_begin(f, &c), last); /* the freed one is reused */
    for (int i = 0; i < GW_INFLIGHT_SLOTS; i++)
        gw_inflight_end(f, i);
    CHECK_INT_EQ(gw_inflight_used(f), 0);
    gw_inflight_close(f);
    f = open_dir();
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got), 0);
    gw_inflight_close(f);
    teardown();
}

/* Strings that fill their arrays to the last byte are cut, not read past. */
static void test_unterminated(void)
{
    gw_inflight_t *f;
    gw_inflight_call_t c = call("x", 1);
    got_t got = {0};

    setup();
    f = open_dir();

    memset(c.row.request_id, 'r', sizeof(c.row.request_id));
    memset(c.row.subject, 's', sizeof(c.row.subject));
    CHECK(gw_inflight_begin(f, &c) >= 0);
    gw_inflight_close(f);
    f = open_dir();
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got), 1);
    CHECK_INT_EQ(strlen(got.rows[0].request_id), sizeof(c.row.request_id) - 1);
    CHECK_INT_EQ(strlen(got.rows[0].subject), sizeof(c.row.subject) - 1);
    gw_inflight_close(f);
    teardown();
}

/* A file of another layout is set aside, not read; a new one works. */
static void test_unreadable(void)
{
    char path[128], aside[160];
    gw_inflight_t *f;
    got_t got = {0};
    gw_inflight_call_t c = call("req-new", 1);
    struct stat st;
    FILE *fp;

    setup();

    snprintf(path, sizeof(path), "%s/inflight", dir);
    snprintf(aside, sizeof(aside), "%s/inflight.unreadable", dir);
    fp = fopen(path, "w");
    CHECK(fp != NULL);
    if (fp != NULL) {
        for (int i = 0; i < 100000; i++)
            fputc(0x48, fp); /* "H…": no header of ours */
        fclose(fp);
    }
    f = open_dir();
    CHECK(stat(aside, &st) == 0 && st.st_size == 100000);
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got), 0);
    CHECK(gw_inflight_begin(f, &c) >= 0);
    gw_inflight_close(f);
    f = open_dir();
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got), 1);
    CHECK_STR_EQ(got.rows[0].request_id, "req-new");
    gw_inflight_close(f);
    unlink(aside);
    teardown();
}

/* A record the recorder could not keep (its spool write failed) leaves the slot held: the next
 * process recovers the call again instead of losing it. */
static void test_refused_kept(void)
{
    gw_inflight_call_t c = call("req-kept", 1);
    gw_inflight_t *f;
    got_t got = {0};

    setup();
    f = open_dir();
    CHECK(gw_inflight_begin(f, &c) >= 0);
    gw_inflight_close(f);
    f = open_dir();
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, refuse, &got), 0);
    CHECK_INT_EQ(got.n, 1);
    CHECK_INT_EQ(gw_inflight_used(f), 1); /* still held */
    gw_inflight_close(f);
    f = open_dir();
    got.n = 0;
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got), 1);
    CHECK_STR_EQ(got.rows[0].request_id, "req-kept");
    CHECK_INT_EQ(gw_inflight_used(f), 0);
    gw_inflight_close(f);
    teardown();
}

/* A stop records, in the same process, the calls still under way (gateway_stopped), and only those;
 * their slots are free again and the next process finds nothing. */
static void test_stop_records_unfinished(void)
{
    gw_inflight_t *f;
    gw_inflight_call_t a = call("req-open", 1), b = call("req-ended", 1);
    got_t got = {0};
    int sa, sb;

    setup();
    f = open_dir();
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got), 0);
    sa = gw_inflight_begin(f, &a);
    sb = gw_inflight_begin(f, &b);
    CHECK(sa >= 0 && sb >= 0);
    gw_inflight_progress(f, sa, 400, NULL); /* 100 tokens of output seen */
    gw_inflight_end(f, sb);
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_STOPPED_CODE, collect, &got), 1);
    CHECK_STR_EQ(got.rows[0].request_id, "req-open");
    CHECK_STR_EQ(got.rows[0].error_code, "gateway_stopped");
    CHECK_STR_EQ(got.rows[0].usage_source, "estimate");
    CHECK_INT_EQ(got.rows[0].input_uncached, 101);
    CHECK_INT_EQ(got.rows[0].output, 100);
    CHECK(got.rows[0].cost_micro > 0);
    CHECK_INT_EQ(gw_inflight_used(f), 0);
    gw_inflight_close(f);
    f = open_dir();
    got.n = 0;
    CHECK_INT_EQ(gw_inflight_recover(f, GW_INFLIGHT_ERROR_CODE, collect, &got), 0);
    gw_inflight_close(f);
    teardown();
}

TEST_MAIN(test_crash_leaves_the_call, test_refused_kept, test_stated_usage, test_sigkill, test_full,
          test_unterminated, test_unreadable, test_stop_records_unfinished)
