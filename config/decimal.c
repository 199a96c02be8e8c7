/*
 * Exact decimal prices to integer micro-credits. No floating point: a decimal string is read as
 * an integer mantissa and a power-of-ten scale, and the conversion is one integer division,
 * rounded up, with every multiplication overflow-checked (STYLE.md rule 15).
 */
#include "config/config.h"

#include <string.h>

typedef unsigned __int128 u128_t;

enum { MICRO_PER_CREDIT_EXP = 6 }; /* 1 credit = 10^6 micro-credits */

/* A decimal as mantissa / 10^scale, trailing fractional zeros removed. */
typedef struct st_decimal_t {
    u128_t mantissa;
    int scale;
} decimal_t;

static rb_err_t pow10_u128(int exp, u128_t *out)
{
    u128_t v = 1;
    RB_ASSERT(exp >= 0);
    for (int i = 0; i < exp; i++) {
        if (__builtin_mul_overflow(v, (u128_t)10, &v))
            return RB_ERR_LIMIT;
    }
    *out = v;
    return RB_OK;
}

/* Grammar: [0-9]+ ( '.' [0-9]+ )?  — no sign, exponent, spaces or other junk. */
static rb_err_t decimal_parse(const char *s, decimal_t *out)
{
    size_t len = strlen(s), int_len = 0, frac_len = 0, i;
    const char *frac;
    u128_t m = 0;

    RB_ASSERT(out != NULL);
    if (len > CFG_DECIMAL_LEN_MAX)
        return RB_ERR_LIMIT;
    while (s[int_len] >= '0' && s[int_len] <= '9')
        int_len++;
    if (int_len == 0)
        return RB_ERR_PARSE;
    frac = s + int_len;
    if (*frac == '.') {
        frac++;
        while (frac[frac_len] >= '0' && frac[frac_len] <= '9')
            frac_len++;
        if (frac_len == 0 || frac[frac_len] != '\0')
            return RB_ERR_PARSE;
    } else if (*frac != '\0') {
        return RB_ERR_PARSE;
    }
    while (frac_len > 0 && frac[frac_len - 1] == '0')
        frac_len--; /* 2.50 == 2.5: trailing zeros carry no value */
    if (frac_len > CFG_DECIMAL_FRAC_MAX)
        return RB_ERR_LIMIT;
    for (i = 0; i < int_len + frac_len; i++) {
        char c = i < int_len ? s[i] : frac[i - int_len];
        if (__builtin_mul_overflow(m, (u128_t)10, &m) ||
            __builtin_add_overflow(m, (u128_t)(c - '0'), &m))
            return RB_ERR_LIMIT;
    }
    out->mantissa = m;
    out->scale = (int)frac_len;
    return RB_OK;
}

rb_err_t cfg_decimal_to_micro(const char *usd_per_mtok, const char *usd_per_credit, int64_t *out)
{
    decimal_t price, unit;
    u128_t num, den, scale_num, scale_den, q;
    rb_err_t err;

    RB_ASSERT(usd_per_mtok != NULL && usd_per_credit != NULL && out != NULL);
    if ((err = decimal_parse(usd_per_mtok, &price)) != RB_OK)
        return err;
    if ((err = decimal_parse(usd_per_credit, &unit)) != RB_OK)
        return err;
    if (unit.mantissa == 0)
        return RB_ERR_INVAL;
    /* micro = ceil((pm / 10^ps) * 10^6 / (um / 10^us)) = ceil(pm * 10^(6+us) / (um * 10^ps)) */
    if ((err = pow10_u128(MICRO_PER_CREDIT_EXP + unit.scale, &scale_num)) != RB_OK ||
        (err = pow10_u128(price.scale, &scale_den)) != RB_OK)
        return err;
    if (__builtin_mul_overflow(price.mantissa, scale_num, &num) ||
        __builtin_mul_overflow(unit.mantissa, scale_den, &den))
        return RB_ERR_LIMIT;
    q = num / den;
    if (num % den != 0)
        q++; /* round up: the operator never undercharges */
    if (q > (u128_t)INT64_MAX)
        return RB_ERR_LIMIT;
    *out = (int64_t)q;
    RB_ASSERT(*out >= 0);
    return RB_OK;
}
