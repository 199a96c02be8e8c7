#include <string.h>

#include "common/metrics.h"
#include "test.h"

static void test_counter_and_render(void)
{
    rb_metrics_t *m = rb_metrics_create();
    rb_metric_t *a = rb_metrics_get(m, RB_METRIC_COUNTER, "rigbox_requests_total", "Requests",
                                    "route=\"chat\",status=\"200\"");
    rb_metric_t *b = rb_metrics_get(m, RB_METRIC_COUNTER, "rigbox_requests_total", "Requests",
                                    "route=\"chat\",status=\"500\"");
    rb_buf_t out;

    CHECK(a != b);
    CHECK(rb_metrics_get(m, RB_METRIC_COUNTER, "rigbox_requests_total", "Requests",
                         "route=\"chat\",status=\"200\"") == a);
    rb_metric_add(a, 3);
    rb_metric_add(b, 1);
    CHECK_INT_EQ(rb_metric_value(a), 3);
    rb_buf_init(&out, 0);
    rb_metrics_render(m, &out);
    rb_buf_cstr(&out);
    CHECK(strstr(out.base, "# TYPE rigbox_requests_total counter\n") != NULL);
    CHECK(strstr(out.base, "rigbox_requests_total{route=\"chat\",status=\"200\"} 3\n") != NULL);
    CHECK(strstr(out.base, "rigbox_requests_total{route=\"chat\",status=\"500\"} 1\n") != NULL);
    /* one HELP per family */
    CHECK(strstr(strstr(out.base, "# HELP rigbox_requests_total") + 1,
                 "# HELP rigbox_requests_total") == NULL);
    rb_buf_free(&out);
    rb_metrics_destroy(m);
}

static void test_histogram_buckets_are_cumulative(void)
{
    rb_metrics_t *m = rb_metrics_create();
    rb_metric_t *h = rb_metrics_get(m, RB_METRIC_HISTOGRAM, "rigbox_ttfb_seconds", "TTFB", "");
    rb_buf_t out;

    rb_metric_observe_us(h, 500);     /* <= 1 ms */
    rb_metric_observe_us(h, 3000);    /* <= 5 ms */
    rb_metric_observe_us(h, 9000000); /* <= 10 s */
    rb_buf_init(&out, 0);
    rb_metrics_render(m, &out);
    rb_buf_cstr(&out);
    CHECK(strstr(out.base, "rigbox_ttfb_seconds_bucket{le=\"0.001\"} 1\n") != NULL);
    CHECK(strstr(out.base, "rigbox_ttfb_seconds_bucket{le=\"0.005\"} 2\n") != NULL);
    CHECK(strstr(out.base, "rigbox_ttfb_seconds_bucket{le=\"10\"} 3\n") != NULL);
    CHECK(strstr(out.base, "rigbox_ttfb_seconds_bucket{le=\"+Inf\"} 3\n") != NULL);
    CHECK(strstr(out.base, "rigbox_ttfb_seconds_count 3\n") != NULL);
    CHECK(strstr(out.base, "rigbox_ttfb_seconds_sum 9.003500\n") != NULL);
    rb_buf_free(&out);
    rb_metrics_destroy(m);
}

static void test_series_limit_goes_to_overflow(void)
{
    rb_metrics_t *m = rb_metrics_create();
    char labels[32];
    rb_metric_t *last = NULL, *over;
    for (int i = 0; i < RB_METRICS_SERIES_MAX; i++) {
        snprintf(labels, sizeof(labels), "n=\"%d\"", i);
        last = rb_metrics_get(m, RB_METRIC_COUNTER, "x_total", "x", labels);
    }
    over = rb_metrics_get(m, RB_METRIC_COUNTER, "x_total", "x", "n=\"overflow\"");
    CHECK(over != last);
    CHECK(over == rb_metrics_get(m, RB_METRIC_COUNTER, "y_total", "y", ""));
    rb_metrics_destroy(m);
}

TEST_MAIN(test_counter_and_render, test_histogram_buckets_are_cumulative,
          test_series_limit_goes_to_overflow)
