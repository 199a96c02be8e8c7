/*
 * gateway_seal: test helper for gateway_test.sh. Encrypts a provider key the way the gateway
 * expects stored BYOK keys (AES-256-GCM under the 32-byte master key, no AAD) and prints
 * "CIPHERTEXT_HEX NONCE_HEX TAG_HEX KEY_ID" for an INSERT into ai_configs.
 *
 *   gateway_seal MASTER_KEY_HEX PLAINTEXT
 */
#include <stdio.h>
#include <string.h>

#include "common/crypto.h"

/* Longest plaintext accepted (the schema allows 4096 bytes of ciphertext). */
#define SEAL_PLAINTEXT_MAX 4096

int main(int argc, char **argv)
{
    uint8_t key[RB_AES_KEY_LEN], nonce[RB_AES_NONCE_LEN], tag[RB_AES_TAG_LEN], h[RB_SHA256_LEN];
    uint8_t ct[SEAL_PLAINTEXT_MAX];
    char hex[2 * SEAL_PLAINTEXT_MAX + 1], id[2 * RB_SHA256_LEN + 1];
    size_t len;

    if (argc != 3 || strlen(argv[1]) != 2 * RB_AES_KEY_LEN ||
        rb_unhex(argv[1], strlen(argv[1]), key, sizeof(key)) != 0 || (len = strlen(argv[2])) == 0 ||
        len > SEAL_PLAINTEXT_MAX) {
        fprintf(stderr, "usage: gateway_seal MASTER_KEY_HEX(64) PLAINTEXT\n");
        return 2;
    }
    if (rb_aes_gcm_seal(key, argv[2], len, ct, nonce, tag) != RB_OK)
        return 1;
    rb_hex(ct, len, hex, sizeof(hex));
    printf("%s ", hex);
    rb_hex(nonce, sizeof(nonce), hex, sizeof(hex));
    printf("%s ", hex);
    rb_hex(tag, sizeof(tag), hex, sizeof(hex));
    printf("%s ", hex);
    rb_sha256(key, sizeof(key), h);
    rb_hex(h, 8, id, sizeof(id));
    printf("%s\n", id);
    return 0;
}
