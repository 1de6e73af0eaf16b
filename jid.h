/* jid.h - JID parsing, validation and normalisation (RFC 7622, ASCII case folding). */
#ifndef COUPLET_JID_H
#define COUPLET_JID_H

#include <stddef.h>

#define JID_PART_MAX 1023

typedef struct jid {
    char local[JID_PART_MAX + 1];      /* "" when absent; lowercased */
    char domain[JID_PART_MAX + 1];     /* lowercased, trailing dot removed */
    char resource[JID_PART_MAX + 1];   /* "" when absent; kept as given */
} jid;

/* 0 on success, -1 when s is not a valid JID (empty parts, parts over 1023 bytes, forbidden characters,
 * invalid UTF-8). Local and domain parts are case-folded (ASCII) so equal JIDs compare equal with strcmp. */
int jid_parse(const char *s, jid *out);
/* writes "local@domain" (or "domain"); returns the length, or -1 if out is too small */
int jid_bare(const jid *j, char *out, size_t n);
/* writes "local@domain/resource" (parts present only); returns the length, or -1 if too small */
int jid_full(const jid *j, char *out, size_t n);
/* a resourcepart / MUC nick: non-empty, at most 1023 bytes, valid UTF-8, no control characters,
 * no unassigned or non-printable code points that we can cheaply detect; 1 if valid */
int jid_resource_valid(const char *s);
/* compare the bare parts of two JID strings (already normalised); 1 if equal */
int jid_bare_equal(const char *a, const char *b);

#endif
