#include "common/crypto.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

void rb_random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            RB_ASSERT(errno == EINTR);
            continue;
        }
        p += got;
        n -= (size_t)got;
    }
}

/* Random bytes for ids that are not secrets (rb_sortable_id: one per gateway request) from a
 * per-thread pool that one getrandom() refills, instead of a system call per id. A process that
 * forks must not use it in both parent and child (they would share the pool); the gateway never
 * forks. */
#define RB_RANDOM_POOL_LEN 4096

static void pooled_random_bytes(void *buf, size_t n)
{
    static __thread uint8_t pool[RB_RANDOM_POOL_LEN];
    static __thread size_t left;
    uint8_t *p = buf;

    while (n > 0) {
        size_t take;
        if (left == 0) {
            rb_random_bytes(pool, sizeof(pool));
            left = sizeof(pool);
        }
        take = n < left ? n : left;
        memcpy(p, pool + sizeof(pool) - left, take);
        left -= take;
        p += take;
        n -= take;
    }
}

/* Uniform characters from alphabet by rejection sampling (no modulo bias), with bytes from fill. */
static void random_chars(void (*fill)(void *, size_t), const char *alphabet, unsigned radix,
                         char *out, size_t n)
{
    unsigned limit = 256 - 256 % radix;
    size_t i = 0;
    while (i < n) {
        uint8_t bytes[64];
        size_t want = n - i < sizeof(bytes) ? n - i : sizeof(bytes);
        fill(bytes, want);
        for (size_t k = 0; k < want; k++) {
            if (bytes[k] < limit)
                out[i++] = alphabet[bytes[k] % radix];
        }
    }
}

void rb_random_id(const char *prefix, char *out, size_t cap)
{
    size_t plen = strlen(prefix);
    RB_ASSERT(cap >= plen + RB_ID_SUFFIX_LEN + 1);
    memcpy(out, prefix, plen);
    random_chars(rb_random_bytes, "0123456789abcdefghijklmnopqrstuvwxyz", 36, out + plen,
                 RB_ID_SUFFIX_LEN);
    out[plen + RB_ID_SUFFIX_LEN] = '\0';
}

/* Base62 in ASCII order, so that fixed-width numbers compare like their values. */
static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

void rb_random_secret(const char *prefix, char *out, size_t cap)
{
    size_t plen = strlen(prefix);
    RB_ASSERT(cap >= plen + RB_SECRET_BODY_LEN + 1);
    memcpy(out, prefix, plen);
    random_chars(rb_random_bytes, base62, 62, out + plen, RB_SECRET_BODY_LEN);
    out[plen + RB_SECRET_BODY_LEN] = '\0';
}

void rb_sortable_id(const char *prefix, uint64_t unix_ms, char *out, size_t cap)
{
    size_t plen = strlen(prefix);
    RB_ASSERT(cap >= plen + RB_SORTABLE_TIME_LEN + RB_SORTABLE_RANDOM_LEN + 1);
    memcpy(out, prefix, plen);
    for (size_t i = RB_SORTABLE_TIME_LEN; i > 0; i--) {
        out[plen + i - 1] = base62[unix_ms % 62];
        unix_ms /= 62;
    }
    RB_ASSERT(unix_ms == 0); /* 62^9 ms: some 428,000 years after 1970 */
    random_chars(pooled_random_bytes, base62, 62, out + plen + RB_SORTABLE_TIME_LEN,
                 RB_SORTABLE_RANDOM_LEN);
    out[plen + RB_SORTABLE_TIME_LEN + RB_SORTABLE_RANDOM_LEN] = '\0';
}

static EVP_MD *sha256_md;

static void sha256_md_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    RB_ASSERT(sha256_md != NULL);
}

/* The digest is fetched once: SHA256() looks it up on every call, which was most of the cost of
 * hashing a token (the gateway hashes one per request). */
void rb_sha256(const void *data, size_t len, uint8_t out[RB_SHA256_LEN])
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    unsigned int n = 0;

    pthread_once(&once, sha256_md_fetch);
    RB_ASSERT(EVP_Digest(data, len, out, &n, sha256_md, NULL) == 1 && n == RB_SHA256_LEN);
}

int rb_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint8_t diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= x[i] ^ y[i];
    return diff == 0;
}

void rb_hex(const uint8_t *in, size_t n, char *out, size_t cap)
{
    static const char digits[] = "0123456789abcdef";
    RB_ASSERT(cap >= 2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int rb_unhex(const char *hex, size_t hexlen, uint8_t *out, size_t n)
{
    if (hexlen != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

rb_err_t rb_aes_gcm_seal(const uint8_t key[RB_AES_KEY_LEN], const void *pt, size_t len, uint8_t *ct,
                         uint8_t nonce[RB_AES_NONCE_LEN], uint8_t tag[RB_AES_TAG_LEN])
{
    rb_err_t err = RB_ERR_CRYPTO;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;

    RB_ASSERT(len <= INT32_MAX);
    rb_random_bytes(nonce, RB_AES_NONCE_LEN);
    if (c == NULL || EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) != 1)
        goto Exit;
    if (EVP_EncryptUpdate(c, ct, &n, pt, (int)len) != 1 ||
        EVP_EncryptFinal_ex(c, ct + n, &fin) != 1)
        goto Exit;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, RB_AES_TAG_LEN, tag) != 1)
        goto Exit;
    RB_ASSERT((size_t)(n + fin) == len);
    err = RB_OK;
Exit:
    EVP_CIPHER_CTX_free(c);
    return err;
}

rb_err_t rb_aes_gcm_open(const uint8_t key[RB_AES_KEY_LEN], const uint8_t *ct, size_t len,
                         const uint8_t nonce[RB_AES_NONCE_LEN], const uint8_t tag[RB_AES_TAG_LEN],
                         uint8_t *pt)
{
    rb_err_t err = RB_ERR_CRYPTO;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;

    RB_ASSERT(len <= INT32_MAX);
    if (c == NULL || EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) != 1)
        goto Exit;
    if (EVP_DecryptUpdate(c, pt, &n, ct, (int)len) != 1)
        goto Exit;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, RB_AES_TAG_LEN, (void *)tag) != 1)
        goto Exit;
    if (EVP_DecryptFinal_ex(c, pt + n, &fin) != 1)
        goto Exit;
    err = RB_OK;
Exit:
    EVP_CIPHER_CTX_free(c);
    return err;
}

rb_err_t rb_master_key_parse(const char *text, size_t len, uint8_t key[RB_AES_KEY_LEN],
                             char *key_id, size_t cap)
{
    uint8_t digest[RB_SHA256_LEN];
    char hex[2 * RB_SHA256_LEN + 1];

    RB_ASSERT(cap >= 17);
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' ' || text[len - 1] == '\r' ||
                       text[len - 1] == '\t'))
        len--;
    while (len > 0 && (text[0] == ' ' || text[0] == '\t' || text[0] == '\n')) {
        text++;
        len--;
    }
    if (rb_unhex(text, len, key, RB_AES_KEY_LEN) != 0)
        return RB_ERR_CONFIG;
    rb_sha256(key, RB_AES_KEY_LEN, digest);
    rb_hex(digest, sizeof(digest), hex, sizeof(hex));
    snprintf(key_id, cap, "%.16s", hex);
    return RB_OK;
}

/* A configured secret's text into text (cap bytes): value (an environment variable's) if not NULL,
 * else the file at path. 1 with *len set; 0 when none is configured (no value, no path, no such
 * file); -1 when the file cannot be read or the text is not shorter than cap. */
static int secret_text(const char *value, const char *path, char *text, size_t cap, size_t *len)
{
    FILE *f;

    if (value != NULL) {
        if ((*len = strlen(value)) >= cap)
            return -1;
        memcpy(text, value, *len);
        return 1;
    }
    if (path == NULL)
        return 0;
    if ((f = fopen(path, "r")) == NULL)
        return errno == ENOENT ? 0 : -1; /* configured but unreadable: not "none" */
    *len = fread(text, 1, cap, f);
    fclose(f);
    return *len < cap ? 1 : -1;
}

int rb_master_key_load(const char *value, const char *path, uint8_t key[RB_AES_KEY_LEN],
                       char *key_id, size_t cap)
{
    char text[256];
    size_t len = 0;
    int rc = secret_text(value, path, text, sizeof(text), &len);

    if (rc == 1)
        rc = rb_master_key_parse(text, len, key, key_id, cap) == RB_OK ? 1 : -1;
    explicit_bzero(text, sizeof(text));
    return rc;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* 1 when text[0..len) is a token: printable ASCII without spaces, of an allowed length. */
static int token_ok(const char *text, size_t len)
{
    if (len < RB_TOKEN_LEN_MIN || len > RB_TOKEN_LEN_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (text[i] <= ' ' || text[i] > '~')
            return 0;
    return 1;
}

int rb_token_load(const char *value, const char *path, char *out, size_t cap)
{
    char text[RB_TOKEN_LEN_MAX + 64];
    size_t len = 0, start = 0;
    int rc;

    RB_ASSERT(out != NULL && cap > RB_TOKEN_LEN_MAX);
    out[0] = '\0';
    rc = secret_text(value, path, text, sizeof(text), &len);
    while (rc == 1 && start < len && is_blank(text[start]))
        start++;
    while (rc == 1 && len > start && is_blank(text[len - 1]))
        len--;
    if (rc == 1 && !token_ok(text + start, len - start))
        rc = -1;
    if (rc == 1) {
        memcpy(out, text + start, len - start);
        out[len - start] = '\0';
    }
    explicit_bzero(text, sizeof(text));
    return rc;
}
