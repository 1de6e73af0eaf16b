/* precis.h - room nicknames under the PRECIS Nickname profile (RFC 8266) of the FreeformClass (RFC 8264). */
#ifndef COUPLET_PRECIS_H
#define COUPLET_PRECIS_H

#include <stddef.h>

/* Enforcement (RFC 8266 §2.3): the nick as it will be shown and stored. in is inlen bytes (not necessarily
 * NUL-terminated). On success writes a NUL-terminated UTF-8 string to out (outsz bytes, including the NUL)
 * and returns its length; on refusal returns -1 and sets *why to a short English reason suitable for an
 * XMPP <text/> ("empty nickname", "nickname contains a control character", "nickname contains an
 * unassigned code point", "nickname is not valid UTF-8", "nickname is too long", ...). */
int precis_nick_enforce(const char *in, size_t inlen, char *out, size_t outsz, const char **why);
/* Comparison key (RFC 8266 §2.4): two nicks are the same nick iff their keys are equal (byte for byte).
 * Same return convention. */
int precis_nick_key(const char *in, size_t inlen, char *out, size_t outsz, const char **why);

#endif
