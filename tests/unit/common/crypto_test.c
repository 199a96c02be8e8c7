#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/crypto.h"
#include "test.h"

static void test_sha256_known_vector(void)
{
    uint8_t d[RB_SHA256_LEN];
    char hex[2 * RB_SHA256_LEN + 1];
    rb_sha256("abc", 3, d);
    rb_hex(d, sizeof(d), hex, sizeof(hex));
    CHECK_STR_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    rb_sha256("", 0, d);
    rb_hex(d, sizeof(d), hex, sizeof(hex));
    CHECK_STR_EQ(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    rb_sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, d); /* two blocks */
    rb_hex(d, sizeof(d), hex, sizeof(hex));
    CHECK_STR_EQ(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_ids_and_secrets(void)
{
    char id[16], id2[16], secret[64];
    rb_random_id("ws-", id, sizeof(id));
    rb_random_id("ws-", id2, sizeof(id2));
    CHECK_INT_EQ(strlen(id), 11);
    CHECK(strncmp(id, "ws-", 3) == 0);
    CHECK(strspn(id + 3, "0123456789abcdefghijklmnopqrstuvwxyz") == 8);
    CHECK(strcmp(id, id2) != 0);
    rb_random_secret("rbw_", secret, sizeof(secret));
    CHECK_INT_EQ(strlen(secret), 4 + RB_SECRET_BODY_LEN);
    CHECK(strspn(secret + 4, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") ==
          RB_SECRET_BODY_LEN);
}

/* Decodes the time digits of a sortable id back into milliseconds. */
static uint64_t sortable_ms(const char *id)
{
    static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    uint64_t ms = 0;
    for (size_t i = 0; i < RB_SORTABLE_TIME_LEN; i++)
        ms = ms * 62 + (uint64_t)(strchr(digits, id[i]) - digits);
    return ms;
}

static void test_sortable_ids(void)
{
    /* 0, a day in 2026, a few ms apart, then the largest time that fits (62^9 - 1) */
    const uint64_t times[] = {0,
                              1796006400000ull,
                              1796006400001ull,
                              1796006400061ull,
                              1796006400062ull,
                              1796006403844ull,
                              13537086546263551ull};
    char prev[64] = "", id[64], twin[64];
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        rb_sortable_id("req_", times[i], id, sizeof(id));
        CHECK_INT_EQ(strlen(id), 4 + RB_SORTABLE_TIME_LEN + RB_SORTABLE_RANDOM_LEN);
        CHECK(strncmp(id, "req_", 4) == 0);
        CHECK(strspn(id + 4, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") ==
              RB_SORTABLE_TIME_LEN + RB_SORTABLE_RANDOM_LEN);
        CHECK(sortable_ms(id + 4) == times[i]);
        CHECK(strcmp(prev, id) < 0); /* later sorts after earlier */
        rb_sortable_id("req_", times[i], twin, sizeof(twin));
        CHECK(strncmp(id, twin, 4 + RB_SORTABLE_TIME_LEN) == 0); /* same ms: same time digits */
        CHECK(strcmp(id, twin) != 0);                            /* but a different id */
        snprintf(prev, sizeof(prev), "%s", id);
    }
}

/* Ids made in one millisecond by two threads, across several refills of each thread's pool of
 * random bytes: all different, and every base62 character turns up in their random parts. */
#define POOLED_IDS 3000
static char pooled[2 * POOLED_IDS][64]; /* one thread's, then the other's */

static void *make_pooled_ids(void *arg)
{
    char(*ids)[64] = arg;
    for (size_t i = 0; i < POOLED_IDS; i++)
        rb_sortable_id("req_", 1796006400000ull, ids[i], sizeof(ids[i]));
    return NULL;
}

static int cmp_ids(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_sortable_ids_pooled(void)
{
    pthread_t t;
    int seen[256] = {0}, kinds = 0;
    CHECK(pthread_create(&t, NULL, make_pooled_ids, pooled + POOLED_IDS) == 0);
    make_pooled_ids(pooled);
    CHECK(pthread_join(t, NULL) == 0);
    qsort(pooled, 2 * POOLED_IDS, sizeof(pooled[0]), cmp_ids);
    for (size_t i = 1; i < 2 * POOLED_IDS; i++)
        CHECK(strcmp(pooled[i - 1], pooled[i]) < 0);
    for (size_t i = 0; i < 2 * POOLED_IDS; i++)
        for (const char *c = pooled[i] + 4 + RB_SORTABLE_TIME_LEN; *c; c++)
            kinds += seen[(unsigned char)*c]++ == 0;
    CHECK_INT_EQ(kinds, 62);
}

static void test_ct_equal_and_hex(void)
{
    uint8_t a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 5}, out[4];
    CHECK(rb_ct_equal(a, a, 4));
    CHECK(!rb_ct_equal(a, b, 4));
    CHECK(rb_ct_equal(a, b, 3));
    CHECK_INT_EQ(rb_unhex("0102ff0A", 8, out, 4), 0);
    CHECK(out[2] == 0xff && out[3] == 0x0a);
    CHECK_INT_EQ(rb_unhex("0102ff0", 7, out, 4), -1);
    CHECK_INT_EQ(rb_unhex("0102fg0a", 8, out, 4), -1);
}

static void test_aes_gcm_round_trip_and_tamper(void)
{
    uint8_t key[RB_AES_KEY_LEN], ct[32], nonce[RB_AES_NONCE_LEN], tag[RB_AES_TAG_LEN], pt[32];
    const char *msg = "sk-test-provider-key";
    size_t n = strlen(msg);

    rb_random_bytes(key, sizeof(key));
    CHECK(rb_aes_gcm_seal(key, msg, n, ct, nonce, tag) == RB_OK);
    CHECK(memcmp(ct, msg, n) != 0);
    CHECK(rb_aes_gcm_open(key, ct, n, nonce, tag, pt) == RB_OK);
    CHECK(memcmp(pt, msg, n) == 0);
    ct[0] ^= 1;
    CHECK(rb_aes_gcm_open(key, ct, n, nonce, tag, pt) == RB_ERR_CRYPTO);
    ct[0] ^= 1;
    key[5] ^= 1;
    CHECK(rb_aes_gcm_open(key, ct, n, nonce, tag, pt) == RB_ERR_CRYPTO);
    /* two seals of one message under one key: fresh nonces, so different ciphertexts */
    uint8_t ct2[32], nonce2[RB_AES_NONCE_LEN], tag2[RB_AES_TAG_LEN];
    key[5] ^= 1;
    CHECK(rb_aes_gcm_seal(key, msg, n, ct, nonce, tag) == RB_OK);
    CHECK(rb_aes_gcm_seal(key, msg, n, ct2, nonce2, tag2) == RB_OK);
    CHECK(memcmp(nonce, nonce2, sizeof(nonce)) != 0);
    CHECK(memcmp(ct, ct2, n) != 0);
}

/* A known answer, so a round trip cannot hide a wrong cipher: the GCM spec's test case 15
 * (AES-256, 96-bit IV, no AAD), as OpenSSL and NIST compute it. */
static void test_aes_gcm_known_vector(void)
{
    uint8_t key[RB_AES_KEY_LEN], nonce[RB_AES_NONCE_LEN], tag[RB_AES_TAG_LEN], ct[64], pt[64],
        want[64];
    CHECK_INT_EQ(rb_unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", 64,
                          key, sizeof(key)),
                 0);
    CHECK_INT_EQ(rb_unhex("cafebabefacedbaddecaf888", 24, nonce, sizeof(nonce)), 0);
    CHECK_INT_EQ(rb_unhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
                          "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
                          128, ct, sizeof(ct)),
                 0);
    CHECK_INT_EQ(rb_unhex("b094dac5d93471bdec1a502270e3cc6c", 32, tag, sizeof(tag)), 0);
    CHECK_INT_EQ(rb_unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                          "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
                          128, want, sizeof(want)),
                 0);
    CHECK(rb_aes_gcm_open(key, ct, sizeof(ct), nonce, tag, pt) == RB_OK);
    CHECK(memcmp(pt, want, sizeof(want)) == 0);
}

static void test_master_key_parse(void)
{
    uint8_t key[RB_AES_KEY_LEN];
    char id[17];
    const char *hex = "  00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
    CHECK(rb_master_key_parse(hex, strlen(hex), key, id, sizeof(id)) == RB_OK);
    CHECK(key[0] == 0x00 && key[1] == 0x11 && key[31] == 0xff);
    CHECK_STR_EQ(id, "4773d12e2371bb93"); /* the first 16 hex digits of SHA-256 of the key */
    CHECK(rb_master_key_parse("abcd", 4, key, id, sizeof(id)) == RB_ERR_CONFIG);
    CHECK(rb_master_key_parse(hex, 20, key, id, sizeof(id)) == RB_ERR_CONFIG);
}

static void test_master_key_load(void)
{
    uint8_t key[RB_AES_KEY_LEN];
    char id[17], path[] = "/tmp/rb-master-key-XXXXXX";
    const char *hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");

    fprintf(f, "%s\n", hex);
    fclose(f);
    CHECK_INT_EQ(rb_master_key_load(NULL, path, key, id, sizeof(id)), 1);
    CHECK(key[1] == 0x11);
    CHECK_INT_EQ(rb_master_key_load(hex, "/nonexistent", key, id, sizeof(id)), 1); /* value wins */
    CHECK_INT_EQ(rb_master_key_load("zz", path, key, id, sizeof(id)), -1);
    CHECK_INT_EQ(rb_master_key_load(NULL, "/nonexistent/key", key, id, sizeof(id)), 0);
    CHECK_INT_EQ(rb_master_key_load(NULL, NULL, key, id, sizeof(id)), 0);
    f = fopen(path, "w");
    fputs("not a key\n", f);
    fclose(f);
    CHECK_INT_EQ(rb_master_key_load(NULL, path, key, id, sizeof(id)), -1);
    unlink(path);
}

static void test_token_load(void)
{
    char tok[RB_TOKEN_LEN_MAX + 1], path[] = "/tmp/rb-token-XXXXXX", long_tok[RB_TOKEN_LEN_MAX + 2];
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");

    fputs("  metrics-token-0123456789\r\n", f); /* whitespace around it is not part of it */
    fclose(f);
    CHECK_INT_EQ(rb_token_load(NULL, path, tok, sizeof(tok)), 1);
    CHECK_STR_EQ(tok, "metrics-token-0123456789");
    CHECK_INT_EQ(rb_token_load("from-the-environment-1", path, tok, sizeof(tok)), 1); /* wins */
    CHECK_STR_EQ(tok, "from-the-environment-1");
    CHECK_INT_EQ(rb_token_load(NULL, "/nonexistent/token", tok, sizeof(tok)), 0);
    CHECK_INT_EQ(rb_token_load(NULL, NULL, tok, sizeof(tok)), 0);
    /* malformed: too short, empty, a space or a control character inside, too long */
    CHECK_INT_EQ(rb_token_load("short", NULL, tok, sizeof(tok)), -1);
    CHECK_INT_EQ(rb_token_load("", NULL, tok, sizeof(tok)), -1);
    CHECK_INT_EQ(rb_token_load("metrics token 0123456789", NULL, tok, sizeof(tok)), -1);
    CHECK_INT_EQ(rb_token_load("metrics-token\x01-0123456789", NULL, tok, sizeof(tok)), -1);
    CHECK_INT_EQ(rb_token_load("metrics-tok\xc3\xa9n-0123456789", NULL, tok, sizeof(tok)), -1);
    memset(long_tok, 'a', sizeof(long_tok) - 1);
    long_tok[sizeof(long_tok) - 1] = '\0';
    CHECK_INT_EQ(rb_token_load(long_tok, NULL, tok, sizeof(tok)), -1);
    long_tok[RB_TOKEN_LEN_MAX] = '\0';
    CHECK_INT_EQ(rb_token_load(long_tok, NULL, tok, sizeof(tok)), 1);
    CHECK_INT_EQ(rb_token_load(NULL, "/tmp", tok, sizeof(tok)), -1); /* a directory: unreadable */
    unlink(path);
}

TEST_MAIN(test_sha256_known_vector, test_ids_and_secrets, test_sortable_ids,
          test_sortable_ids_pooled, test_ct_equal_and_hex, test_aes_gcm_round_trip_and_tamper,
          test_aes_gcm_known_vector, test_master_key_parse, test_master_key_load, test_token_load)
