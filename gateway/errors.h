/*
 * gw_errors: the gateway's own error answers, written in the caller's dialect (DESIGN.md §3).
 *
 *   OpenAI routes:    {"error":{"message":"…","type":"…","param":null|"…","code":null|"…"}}
 *   Anthropic routes: {"type":"error","error":{"type":"…","message":"…"}}
 *
 * The type follows each provider's own conventions for the status (OpenAI: invalid_request_error,
 * authentication_error, rate_limit_error, api_error…; Anthropic: invalid_request_error,
 * authentication_error, not_found_error, request_too_large, rate_limit_error, api_error,
 * overloaded_error…). `code` is the gateway's machine-readable reason (model_not_found,
 * model_not_priced, invalid_api_key, upstream_unreachable, upstream_timeout…); the Anthropic shape
 * has no code field, so there the code only picks the type.
 *
 * Pure body builders plus one sender; gw_errors_send must run on the request's loop thread.
 */
#ifndef RB_GATEWAY_ERRORS_H
#define RB_GATEWAY_ERRORS_H

#include <h2o.h>

#include "common/buf.h"
#include "gateway/adapter.h"

/** The error "type" a provider of dialect d uses for an HTTP status (static string). */
const char *gw_errors_type(gw_dialect_t d, int status);
/** Appends the dialect's error document to out; code and param may be NULL (JSON null). */
void gw_errors_body(rb_buf_t *out, gw_dialect_t d, int status, const char *code,
                    const char *message, const char *param);
/** The provider's error answer (status, body) to a call made with the operator's key, as its
 *  caller gets it: written into out in dialect d; returns the status to answer with. The provider
 *  may name the operator's account in it (OpenAI's 401 quotes the key's first and last
 *  characters, a 429 the organisation and its limits), so:
 *    - 401 and 403 (the operator's key refused) become 502 upstream_auth_failed: the caller's own
 *      credentials are fine, and only the operator can act;
 *    - the account out of credit (OpenAI's insufficient_quota, Anthropic's "credit balance is too
 *      low") becomes 502 upstream_quota_exhausted, for the same reason;
 *    - a status below 400 (a redirect) becomes 502 upstream_error;
 *    - 429 keeps the provider's type and code, with a message of the gateway's own;
 *    - otherwise the provider's type, code, param and message are kept, the message with every
 *      word that may identify the account (sk-…, org-…, proj_…, a UUID) masked;
 *    - a body that is no provider error document becomes the gateway's error for the status. */
int gw_errors_from_provider(gw_dialect_t d, int status, const char *body, size_t len,
                            rb_buf_t *out);
/** Masks, in s[0, len), each word that may identify a provider account (sk-…, org-…, proj_…,
 *  a UUID) with '*'s of the same length. */
void gw_errors_mask_account(char *s, size_t len);
/** rb_server_error_body hook of the AI listener: h2o's own refusals (413 body too large, 404 no
 *  such route, 400 malformed) in the caller's dialect, Anthropic's under /v1/messages, with an
 *  X-Rigbox-Request-Id. */
void gw_errors_early(h2o_req_t *req, int status, rb_buf_t *out);
/** Sends gw_errors_early's answer (a route that is not one, under a route's prefix). */
void gw_errors_early_send(h2o_req_t *req, int status);
/** Sends a complete error response (JSON body, X-Rigbox-Request-Id when request_id != NULL). */
void gw_errors_send(h2o_req_t *req, gw_dialect_t d, int status, const char *code,
                    const char *message, const char *param, const char *request_id);

#endif
