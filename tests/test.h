/*
 * A minimal unit-test harness: CHECK records a failure and goes on; TEST_MAIN runs the listed test
 * functions and prints the plain closing line "N passed, N failed" that CI reads. Header-only.
 */
#ifndef RB_TESTS_TEST_H
#define RB_TESTS_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int test_failures_;
static int test_checks_;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        test_checks_++;                                                                            \
        if (!(cond)) {                                                                             \
            test_failures_++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        test_checks_++;                                                                            \
        if (a_ != b_) {                                                                            \
            test_failures_++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__,  \
                    #a, #b, a_, b_);                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        test_checks_++;                                                                            \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                     \
            test_failures_++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__,        \
                    __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                     \
        }                                                                                          \
    } while (0)

typedef void (*test_fn_t)(void);

static inline int test_run_(const char *const *names, const test_fn_t *fns, int n)
{
    int passed = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        int before = test_failures_;
        fns[i]();
        if (test_failures_ == before) {
            passed++;
        } else {
            failed++;
            fprintf(stderr, "FAIL %s\n", names[i]);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

/* A stale non-NULL pointer of type T, never dereferenced: set an out-parameter to it before a call
 * that must reset the parameter on failure, so that CHECK(x == NULL) afterwards sees the reset. */
#define TEST_STALE(T) ((T *)(uintptr_t)0x10)

/* TEST_MAIN(test_a, test_b, ...) defines main(). */
#define TEST_MAIN(...)                                                                             \
    int main(void)                                                                                 \
    {                                                                                              \
        static const test_fn_t fns_[] = {__VA_ARGS__};                                             \
        static const char names_[] = #__VA_ARGS__;                                                 \
        const char *names_v_[sizeof(fns_) / sizeof(fns_[0])];                                      \
        static char copy_[sizeof(names_)];                                                         \
        int n_ = (int)(sizeof(fns_) / sizeof(fns_[0])), k_ = 0;                                    \
        memcpy(copy_, names_, sizeof(names_));                                                     \
        names_v_[k_++] = copy_;                                                                    \
        for (char *p_ = copy_; *p_ != '\0' && k_ < n_; p_++) {                                     \
            if (*p_ == ',') {                                                                      \
                *p_ = '\0';                                                                        \
                names_v_[k_++] = p_ + 1 + (p_[1] == ' ');                                          \
            }                                                                                      \
        }                                                                                          \
        return test_run_(names_v_, fns_, n_);                                                      \
    }

#endif
