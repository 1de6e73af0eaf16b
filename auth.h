/* auth.h - accounts (salted SCRAM keys only, in one atomically written file) and SASL mechanisms
 * (PLAIN, SCRAM-SHA-1, SCRAM-SHA-256) on OpenSSL's hash and HMAC primitives. */
#ifndef COUPLET_AUTH_H
#define COUPLET_AUTH_H

#include <stddef.h>
#include <stdio.h>

/* ---- base64 (RFC 4648, standard alphabet, padded) ---- */
size_t auth_b64_encoded_len(size_t n);                 /* including the NUL */
size_t auth_b64_encode(const unsigned char *in, size_t n, char *out);  /* returns strlen(out) */
/* strict: no whitespace, correct padding; returns decoded length or -1. out needs (len/4)*3 bytes */
long auth_b64_decode(const char *in, size_t len, unsigned char *out);

/* ---- accounts ---- */
typedef struct auth_store auth_store;

/* Load (or start empty) data_dir/accounts. NULL with err filled on a corrupt file or I/O error. */
auth_store *auth_store_open(const char *data_dir, int scram_iterations, char *err, size_t errlen);
void auth_store_free(auth_store *s);
size_t auth_store_count(const auth_store *s);
/* Read the file again if it changed since we last read or wrote it (another process ran adduser, passwd,
 * deluser or import). 0: unchanged; 1: reloaded; -1: the new file is refused (err filled) and the accounts
 * loaded before stay in use until the file changes again. Live SASL exchanges are not disturbed. */
int auth_store_refresh(auth_store *s, char *err, size_t errlen);
int auth_store_changed(const auth_store *s);    /* 1 if auth_store_refresh would read the file again */
/* Every account's local part, in no particular order. */
void auth_user_foreach(const auth_store *s, void (*fn)(void *ud, const char *localpart), void *ud);
int auth_user_exists(const auth_store *s, const char *localpart);
/* Each change rewrites the file atomically and is durable when 0 is returned; -1 on error (errno),
 * -2 when the user exists (add) or does not exist (passwd, del). localpart must be normalised. */
int auth_user_add(auth_store *s, const char *localpart, const char *password);
int auth_user_passwd(auth_store *s, const char *localpart, const char *password);
int auth_user_del(auth_store *s, const char *localpart);
/* "localpart password" lines (or "jid password": the domain part is ignored); one atomic write for all.
 * Returns the number added, or -1 with err filled (line number) and nothing written. */
long auth_import(auth_store *s, FILE *in, char *err, size_t errlen);

/* ---- SASL ---- */
enum auth_result {
    AUTH_CONTINUE = 0,          /* send a <challenge/> with out */
    AUTH_SUCCESS,               /* send <success/> with out (may be empty: "=" is not used, empty element) */
    AUTH_FAILURE,               /* send <failure/> with condition from auth_sasl_condition */
};

typedef struct auth_sasl auth_sasl;

/* The mechanisms offered, in preference order, NULL-terminated. */
const char *const *auth_mechanisms(void);
/* Start an exchange; NULL if the mechanism is unknown (-> invalid-mechanism). */
auth_sasl *auth_sasl_start(auth_store *s, const char *mechanism);
/* One step. in/out are base64 text as carried in <auth/>/<response/> ("" or "=" for empty).
 * out is filled with base64 text to send (possibly empty). */
int auth_sasl_step(auth_sasl *x, const char *in_b64, char *out, size_t outlen);
/* SASL condition after AUTH_FAILURE: "not-authorized", "malformed-request", "invalid-authzid",
 * "temporary-auth-failure", ... */
const char *auth_sasl_condition(const auth_sasl *x);
/* The authenticated local part after AUTH_SUCCESS. */
const char *auth_sasl_user(const auth_sasl *x);
void auth_sasl_free(auth_sasl *x);

/* ---- exposed for tests and the client side of the scenario runner ---- */
/* SaltedPassword = Hi(password, salt, i); md is "SHA1" or "SHA256"; returns digest length or -1 */
int auth_scram_salted(const char *md, const char *password, const unsigned char *salt, size_t saltlen,
                      int iterations, unsigned char *out);
/* ClientKey, StoredKey, ServerKey from SaltedPassword */
int auth_scram_keys(const char *md, const unsigned char *salted, unsigned char *client_key,
                    unsigned char *stored_key, unsigned char *server_key);
int auth_hmac(const char *md, const unsigned char *key, size_t keylen, const void *data, size_t n,
              unsigned char *out);

/* n bytes from OpenSSL's DRBG, served from a small pool (nonces, stream ids); 0, or -1 on failure */
int auth_random(void *out, size_t n);

#endif
