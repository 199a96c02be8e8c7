/*
 * Cryptographic helpers over OpenSSL: random bytes and identifiers, SHA-256, constant-time
 * comparison, hex, and AES-256-GCM for secrets at rest (BYOK provider keys). Pure functions of
 * their arguments (plus the kernel's random source); any thread may call them.
 */
#ifndef RB_COMMON_CRYPTO_H
#define RB_COMMON_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define RB_SHA256_LEN          32
#define RB_AES_KEY_LEN         32
#define RB_AES_NONCE_LEN       12
#define RB_AES_TAG_LEN         16
#define RB_ID_SUFFIX_LEN       8   /* "ws-" + 8 base36 characters */
#define RB_SECRET_BODY_LEN     40  /* random characters after the "rb_"/"rbw_" prefix */
#define RB_SORTABLE_TIME_LEN   9   /* base62 ms since 1970: 62^9 ms is 428,000 years */
#define RB_SORTABLE_RANDOM_LEN 23  /* base62 random characters after the time: ~137 bits */
#define RB_TOKEN_LEN_MIN       16  /* a configured bearer token (the metrics token): shortest */
#define RB_TOKEN_LEN_MAX       128 /* and longest */

/** Fills buf with n bytes from the kernel's CSPRNG; aborts if the kernel refuses (never silently
 * weak). */
void rb_random_bytes(void *buf, size_t n);
/** Writes prefix + 8 random lowercase base36 characters ("ws-k3j9x0ab") into out (cap >= len+1). */
void rb_random_id(const char *prefix, char *out, size_t cap);
/** Writes prefix + RB_SECRET_BODY_LEN random base62 characters (a bearer secret) into out. */
void rb_random_secret(const char *prefix, char *out, size_t cap);
/** Writes prefix + RB_SORTABLE_TIME_LEN base62 digits of unix_ms + RB_SORTABLE_RANDOM_LEN random
 * base62 characters into out. The digits run 0-9A-Za-z, in ASCII order, so ids made later sort
 * after ids made earlier (byte order, and PostgreSQL's C and C.UTF-8 collations): a btree keyed by
 * them grows at its right edge instead of touching a random page per insert. Ids made in the same
 * millisecond are ordered at random. */
void rb_sortable_id(const char *prefix, uint64_t unix_ms, char *out, size_t cap);
/** SHA-256 of data into out[RB_SHA256_LEN]. */
void rb_sha256(const void *data, size_t len, uint8_t out[RB_SHA256_LEN]);
/** 1 when a and b (both n bytes) are equal; time depends only on n. */
int rb_ct_equal(const void *a, const void *b, size_t n);
/** Lowercase hex of n bytes into out (cap >= 2n+1). */
void rb_hex(const uint8_t *in, size_t n, char *out, size_t cap);
/** Parses 2n hex characters into out[n]; returns 0, or -1 when malformed. */
int rb_unhex(const char *hex, size_t hexlen, uint8_t *out, size_t n);
/** AES-256-GCM encryption with a fresh random nonce; ct has room for len bytes. */
rb_err_t rb_aes_gcm_seal(const uint8_t key[RB_AES_KEY_LEN], const void *pt, size_t len, uint8_t *ct,
                         uint8_t nonce[RB_AES_NONCE_LEN], uint8_t tag[RB_AES_TAG_LEN]);
/** AES-256-GCM decryption; RB_ERR_CRYPTO when the tag does not verify (tampered or wrong key). */
rb_err_t rb_aes_gcm_open(const uint8_t key[RB_AES_KEY_LEN], const uint8_t *ct, size_t len,
                         const uint8_t nonce[RB_AES_NONCE_LEN], const uint8_t tag[RB_AES_TAG_LEN],
                         uint8_t *pt);

/**
 * The master key that encrypts BYOK provider keys at rest, parsed from its text form: exactly 64
 * hex characters (32 bytes), surrounding whitespace ignored (RIGBOX_MASTER_KEY, or the master key
 * file). key_id (cap >= 17) gets the first 16 hex characters of SHA-256(key): stored beside each
 * ciphertext so a rotated master key can be told apart. RB_ERR_CONFIG when malformed.
 */
rb_err_t rb_master_key_parse(const char *text, size_t len, uint8_t key[RB_AES_KEY_LEN],
                             char *key_id, size_t cap);

/** Loads the master key from value (RIGBOX_MASTER_KEY's text) if not NULL, else from the file at
 *  path (may be NULL). Returns 1 when loaded (key and key_id set), 0 when none is configured or the
 *  file does not exist, -1 when it is malformed or cannot be read (a directory, no permission).
 *  The text is wiped from memory after parsing. */
int rb_master_key_load(const char *value, const char *path, uint8_t key[RB_AES_KEY_LEN],
                       char *key_id, size_t cap);

/** Loads a configured bearer token (printable ASCII, no spaces, RB_TOKEN_LEN_MIN to
 *  RB_TOKEN_LEN_MAX characters; whitespace around it ignored) into out (cap > RB_TOKEN_LEN_MAX):
 *  from value (an environment variable's text) if not NULL, else from the file at path (may be
 *  NULL). Returns 1 when loaded, 0 when none is configured or the file does not exist, -1 when it
 *  is malformed or cannot be read. */
int rb_token_load(const char *value, const char *path, char *out, size_t cap);

#endif
