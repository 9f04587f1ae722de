/*
 * log.c — one record, one line, one write(2).
 *
 * text (logfmt):  ts=2026-11-23T17:49:06.123Z level=info msg="connected" slot=pgcdc
 * json:           {"ts":"2026-11-23T17:49:06.123Z","level":"info","msg":"connected",...}
 *
 * The whole line is assembled in memory and handed to the kernel in a single write, so
 * records from the worker and from anything else sharing stderr never interleave inside a
 * line (writes to a pipe of up to PIPE_BUF bytes are atomic; to a file, O_APPEND-like
 * behaviour of the terminal/journal keeps whole writes together in practice).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/encoding.h"
#include "pgcdc/log.h"

static enum pgcdc_log_level g_level = PGCDC_LOG_INFO;
static enum pgcdc_log_format g_format = PGCDC_LOG_TEXT;
static int g_fd = 2;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void pgcdc_log_setup(enum pgcdc_log_level level, enum pgcdc_log_format format)
{
    g_level = level;
    g_format = format;
}

void pgcdc_log_set_fd(int fd)
{
    g_fd = fd;
}

int pgcdc_log_enabled(enum pgcdc_log_level level)
{
    return level <= g_level;
}

/*
 * The line under construction. It starts in a stack array and moves to the heap only for
 * a long record; if the heap says no, the record is cut short rather than lost, because a
 * log line is most needed exactly when things go wrong.
 */
struct line {
    char *p;
    size_t len, cap;
    bool heap;
    bool full;
};

static void line_put(struct line *l, const char *s, size_t n)
{
    if (l->full)
        return;
    if (l->len + n + 1 > l->cap) {
        size_t ncap = l->cap * 2;
        char *np;

        while (ncap < l->len + n + 1)
            ncap *= 2;
        np = l->heap ? realloc(l->p, ncap) : malloc(ncap);
        if (np == NULL) {
            /* Keep what fits, leaving room for the newline the caller adds. */
            size_t room = l->cap - l->len - 1;
            memcpy(l->p + l->len, s, room < n ? room : n);
            l->len += room < n ? room : n;
            l->full = true;
            return;
        }
        if (!l->heap)
            memcpy(np, l->p, l->len);
        l->p = np;
        l->cap = ncap;
        l->heap = true;
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void line_str(struct line *l, const char *s)
{
    line_put(l, s, strlen(s));
}

static void line_ch(struct line *l, char c)
{
    line_put(l, &c, 1);
}

static void line_hex_escape(struct line *l, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

    line_put(l, esc, sizeof esc);
}

/*
 * A JSON string literal. Server error texts and table names may hold any bytes; invalid
 * UTF-8 becomes U+FFFD so that a log shipper's JSON parser never rejects the line.
 */
static void line_json_str(struct line *l, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i = 0;

    line_ch(l, '"');
    while (i < n) {
        unsigned char c = u[i];
        size_t k;

        switch (c) {
        case '"':
            line_put(l, "\\\"", 2);
            i++;
            continue;
        case '\\':
            line_put(l, "\\\\", 2);
            i++;
            continue;
        case '\n':
            line_put(l, "\\n", 2);
            i++;
            continue;
        case '\r':
            line_put(l, "\\r", 2);
            i++;
            continue;
        case '\t':
            line_put(l, "\\t", 2);
            i++;
            continue;
        default:
            break;
        }
        if (c < 0x20) {
            line_hex_escape(l, c);
            i++;
            continue;
        }
        k = pgcdc_utf8_len(u + i, n - i);
        if (k == 0) {
            line_put(l, "\\ufffd", 6);
            i++;
            continue;
        }
        line_put(l, s + i, k);
        i += k;
    }
    line_ch(l, '"');
}

/* logfmt quotes a value that is empty or holds a space, '=', '"' or a control byte. */
static bool logfmt_needs_quotes(const char *s)
{
    if (*s == '\0')
        return true;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7f)
            return true;
    }
    return false;
}

static void line_logfmt_value(struct line *l, const char *s, bool force_quotes)
{
    if (!force_quotes && !logfmt_needs_quotes(s)) {
        line_str(l, s);
        return;
    }
    line_ch(l, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"')
            line_put(l, "\\\"", 2);
        else if (c == '\\')
            line_put(l, "\\\\", 2);
        else if (c == '\n')
            line_put(l, "\\n", 2);
        else if (c == '\r')
            line_put(l, "\\r", 2);
        else if (c == '\t')
            line_put(l, "\\t", 2);
        else if (c < 0x20 || c == 0x7f)
            line_hex_escape(l, c);
        else
            line_ch(l, (char)c);
    }
    line_ch(l, '"');
}

/* A logfmt key may not hold a space, '=' or '"'; callers pass literals, but be safe. */
static void line_logfmt_key(struct line *l, const char *s)
{
    if (*s == '\0') {
        line_ch(l, '_');
        return;
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        line_ch(l, (c <= ' ' || c == '=' || c == '"' || c == 0x7f) ? '_' : (char)c);
    }
}

/* "2026-11-23T17:49:06.123Z": UTC, milliseconds, what log pipelines parse without help. */
static void format_ts(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a failing stderr */
        }
        p += w;
        n -= (size_t)w;
    }
}

static char *scrub_dup(const char *s);

void pgcdc_log(enum pgcdc_log_level level, const char *msg, ...)
{
    char stackbuf[1024];
    struct line l = {stackbuf, 0, sizeof stackbuf, false, false};
    char ts[40];
    const char *lname;
    va_list ap;
    int saved_errno = errno; /* callers often log, then inspect errno */

    if (!pgcdc_log_enabled(level))
        return;
    lname = (level >= PGCDC_LOG_ERROR && level <= PGCDC_LOG_DEBUG) ? level_names[level] : "info";
    if (msg == NULL)
        msg = "";
    char *clean_msg = scrub_dup(msg);
    if (clean_msg)
        msg = clean_msg;
    format_ts(ts, sizeof ts);

    va_start(ap, msg);
    if (g_format == PGCDC_LOG_JSON) {
        line_str(&l, "{\"ts\":\"");
        line_str(&l, ts);
        line_str(&l, "\",\"level\":\"");
        line_str(&l, lname);
        line_str(&l, "\",\"msg\":");
        line_json_str(&l, msg);
        for (;;) {
            const char *k = va_arg(ap, const char *);
            const char *v;
            if (k == NULL)
                break;
            v = va_arg(ap, const char *);
            char *clean = v ? scrub_dup(v) : NULL;
            line_ch(&l, ',');
            line_json_str(&l, k);
            line_ch(&l, ':');
            if (v == NULL)
                line_str(&l, "null");
            else
                line_json_str(&l, clean ? clean : v);
            free(clean);
        }
        line_ch(&l, '}');
    } else {
        line_str(&l, "ts=");
        line_str(&l, ts);
        line_str(&l, " level=");
        line_str(&l, lname);
        line_str(&l, " msg=");
        line_logfmt_value(&l, msg, true);
        for (;;) {
            const char *k = va_arg(ap, const char *);
            const char *v;
            if (k == NULL)
                break;
            v = va_arg(ap, const char *);
            char *clean = v ? scrub_dup(v) : NULL;
            line_ch(&l, ' ');
            line_logfmt_key(&l, k);
            line_ch(&l, '=');
            line_logfmt_value(&l, clean ? clean : v ? v : "", false);
            free(clean);
        }
    }
    va_end(ap);

    /* line_put always keeps one byte free, so the newline fits even in a cut-short line. */
    l.p[l.len++] = '\n';
    write_all(g_fd, l.p, l.len);
    if (l.heap)
        free(l.p);
    free(clean_msg);
    errno = saved_errno;
}

/*
 * Bounded output for the redactor: never writes past cap-1 and always leaves the text
 * NUL-terminated, whatever the input.
 */
struct rout {
    char *p;
    size_t len, cap;
};

static void rput(struct rout *o, const char *s, size_t n)
{
    while (n > 0 && o->len + 1 < o->cap) {
        o->p[o->len++] = *s++;
        n--;
    }
    o->p[o->len] = '\0';
}

/* libpq has "password" and "sslpassword" (the client key's passphrase); both are secret. */
static bool is_password_key(const char *k, size_t n)
{
    return (n == 8 && strncasecmp(k, "password", 8) == 0) ||
           (n == 11 && strncasecmp(k, "sslpassword", 11) == 0);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * URI form: postgres[ql]://[user[:password]@][host][:port][,...][/db][?k=v&...]
 * libpq ends the user info at the first '@' before a '/', but an unencoded '@' or '/'
 * in a password is a common mistake; taking everything up to the last '@' before the
 * query string as user info hides such a password too (at worst we hide a little more).
 */
static void redact_uri(const char *dsn, size_t prefix, struct rout *o)
{
    const char *rest = dsn + prefix;
    /* Everything up to the last '@' is treated as user info: a password may hold '?', '/'
     * or '@' (unencoded, libpq would misread it, but it must not be logged either). An '@'
     * in a query parameter makes us hide more than needed, never less. */
    const char *at = strrchr(rest, '@');
    const char *q = strchr(at ? at : rest, '?');
    const char *end = q ? q : rest + strlen(rest);
    rput(o, dsn, prefix);
    if (at != NULL) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        if (colon != NULL) {
            rput(o, rest, (size_t)(colon - rest));
            rput(o, ":****", 5);
        } else {
            rput(o, rest, (size_t)(at - rest));
        }
        rest = at;
    }
    rput(o, rest, (size_t)(end - rest));
    if (q == NULL)
        return;

    /* Query parameters: k=v joined by '&'. */
    const char *p = q;
    rput(o, "?", 1);
    p++;
    while (*p) {
        const char *amp = strchr(p, '&');
        const char *pend = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(pend - p));

        if (eq != NULL && is_password_key(p, (size_t)(eq - p))) {
            rput(o, p, (size_t)(eq - p) + 1);
            rput(o, "****", 4);
        } else {
            rput(o, p, (size_t)(pend - p));
        }
        if (amp == NULL)
            break;
        rput(o, "&", 1);
        p = amp + 1;
    }
}

/*
 * One token of the key=value form, found the way libpq's conninfo_parse reads it:
 * whitespace separates pairs, spaces may surround '=', a value is either bare (backslash
 * escapes the next byte) or single-quoted (backslash escapes inside). A word without '='
 * (libpq refuses it) is a token too, with pair false.
 */
struct kv_tok {
    const char *lead;         /* the whitespace before it */
    const char *key, *keyend; /* the key, or the stray word */
    const char *vstart, *end; /* the value (pairs), and the end of the token */
    bool pair;
};

/* The token at p into t; returns false at the end of the string. */
static bool kv_next(const char **pp, struct kv_tok *t)
{
    const char *p = *pp;
    t->lead = p;
    while (*p && is_space(*p))
        p++;
    t->key = p;
    t->pair = false;
    if (*p == '\0') {
        t->keyend = t->vstart = t->end = p;
        *pp = p;
        return p != t->lead; /* trailing blanks are one last, empty token */
    }
    while (*p && *p != '=' && !is_space(*p))
        p++;
    t->keyend = p;
    while (*p && is_space(*p))
        p++;
    t->pair = *p == '=';
    if (!t->pair) {
        t->vstart = t->end = *pp = t->keyend;
        return true;
    }
    p++;
    while (*p && is_space(*p))
        p++;
    t->vstart = p;
    bool quoted = *p == '\'';
    if (quoted)
        p++;
    while (*p && (quoted ? *p != '\'' : !is_space(*p))) {
        if (*p == '\\' && p[1])
            p++;
        p++;
    }
    if (quoted && *p == '\'')
        p++;
    t->end = *pp = p;
    return true;
}

/*
 * key=value form: pairs are copied verbatim except passwords, which become key=****. So
 * do stray words right after a password: an unquoted space in it (libpq quotes the word
 * in its error: missing "=" after "...").
 */
static void redact_kv(const char *dsn, struct rout *o)
{
    struct kv_tok t;
    bool after_password = false;
    for (const char *p = dsn; kv_next(&p, &t);) {
        rput(o, t.lead, (size_t)(t.key - t.lead));
        if (t.key == t.end)
            continue;
        if (t.pair)
            after_password = is_password_key(t.key, (size_t)(t.keyend - t.key));
        if (after_password && !t.pair) {
            rput(o, "****", 4);
        } else if (after_password) {
            rput(o, t.key, (size_t)(t.keyend - t.key));
            rput(o, "=****", 5);
        } else {
            rput(o, t.key, (size_t)(t.end - t.key));
        }
    }
}

void pgcdc_log_redact_dsn(const char *dsn, char *out, size_t outlen)
{
    struct rout o = {out, 0, outlen};

    if (out == NULL || outlen == 0)
        return;
    out[0] = '\0';
    if (dsn == NULL)
        return;
    if (strncmp(dsn, "postgresql://", 13) == 0)
        redact_uri(dsn, 13, &o);
    else if (strncmp(dsn, "postgres://", 11) == 0)
        redact_uri(dsn, 11, &o);
    else
        redact_kv(dsn, &o);
}

/*
 * Secrets remembered from the DSNs pgcdc was given: each password, percent-decoded too,
 * and its pieces between the characters libpq splits a URI or a key=value string at. A
 * misread DSN puts those pieces in libpq's messages (postgres://u:p@ss@h/db: could not
 * translate host name "ss@h"), so every line is masked, whoever wrote its text.
 */
#define MAX_SECRETS 64
#define PIECE_DELIMS "@/:?#&=,; \t"
static char *g_secrets[MAX_SECRETS];
static size_t g_nsecrets;

static void add_secret(const char *s, size_t n)
{
    if (n == 0 || g_nsecrets == MAX_SECRETS)
        return;
    for (size_t i = 0; i < g_nsecrets; i++)
        if (strlen(g_secrets[i]) == n && memcmp(g_secrets[i], s, n) == 0)
            return;
    char *copy = strndup(s, n);
    if (copy) /* out of memory: the line is still redacted by its writer where it can be */
        g_secrets[g_nsecrets++] = copy;
}

/* s and each piece of it between PIECE_DELIMS. */
static void add_with_pieces(const char *s, size_t n)
{
    add_secret(s, n);
    for (size_t i = 0; i < n;) {
        size_t k = i;
        while (k < n && !strchr(PIECE_DELIMS, s[k]))
            k++;
        if (k - i < n)
            add_secret(s + i, k - i);
        i = k + 1;
    }
}

static void add_password(const char *p, size_t n)
{
    char dec[1024];
    size_t d = 0;
    add_with_pieces(p, n);
    for (size_t i = 0; i < n && d < sizeof(dec); i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n && (hi = pgcdc_hex_digit(p[i + 1])) >= 0 && (lo = pgcdc_hex_digit(p[i + 2])) >= 0) {
            dec[d++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            dec[d++] = p[i];
        }
    }
    if (d != n || memcmp(dec, p, n) != 0)
        add_with_pieces(dec, d);
}

static void add_uri_secrets(const char *rest)
{
    /* The same reading as redact_uri: user info ends at the last '@'. */
    const char *at = strrchr(rest, '@');
    const char *colon = at ? memchr(rest, ':', (size_t)(at - rest)) : NULL;
    if (colon)
        add_password(colon + 1, (size_t)(at - colon - 1));
    const char *q = strchr(at ? at : rest, '?');
    for (const char *p = q ? q + 1 : NULL; p && *p;) {
        const char *amp = strchr(p, '&'), *pend = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(pend - p));
        if (eq && is_password_key(p, (size_t)(eq - p)))
            add_password(eq + 1, (size_t)(pend - eq - 1));
        p = amp ? amp + 1 : NULL;
    }
}

static void add_kv_secrets(const char *dsn)
{
    struct kv_tok t;
    bool after_password = false;
    for (const char *p = dsn; kv_next(&p, &t);) {
        if (t.key == t.end)
            continue;
        if (t.pair)
            after_password = is_password_key(t.key, (size_t)(t.keyend - t.key));
        if (!after_password)
            continue;
        const char *v = t.pair ? t.vstart : t.key, *e = t.end;
        if (e - v >= 2 && *v == '\'' && e[-1] == '\'') {
            v++;
            e--;
        }
        add_password(v, (size_t)(e - v));
    }
}

void pgcdc_log_add_secrets(const char *dsn)
{
    if (dsn == NULL)
        return;
    if (strncmp(dsn, "postgresql://", 13) == 0)
        add_uri_secrets(dsn + 13);
    else if (strncmp(dsn, "postgres://", 11) == 0)
        add_uri_secrets(dsn + 11);
    else
        add_kv_secrets(dsn);
}

void pgcdc_log_forget_secrets(void)
{
    for (size_t i = 0; i < g_nsecrets; i++)
        free(g_secrets[i]);
    g_nsecrets = 0;
}

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/*
 * A secret counts where it stands as a whole word, not inside one ("ss" in "ss@h", not in
 * "address"); one shorter than 3 bytes only next to a quote or a DSN delimiter, so that
 * a one-letter piece does not mask every "a" of a message.
 */
static bool bounded(const char *s, size_t at, size_t n)
{
    char before = at ? s[at - 1] : '\0', after = s[at + n];
    if (is_alnum(before) || is_alnum(after))
        return false;
    if (n >= 3)
        return true;
    return (!before || strchr("\"'@/:?,&=#%", before)) && (!after || strchr("\"'@/:?,&=#%", after));
}

/* s with every remembered secret as "****" (malloc'd), or NULL when none occurs. */
static char *scrub_dup(const char *s)
{
    size_t n = strlen(s), found = 0;
    for (size_t k = 0; k < g_nsecrets && !found; k++)
        found = strstr(s, g_secrets[k]) != NULL;
    if (!found)
        return NULL;
    char *out = malloc(n * 4 + 1); /* at worst each byte a secret of its own */
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t best = 0;
        for (size_t k = 0; k < g_nsecrets; k++) {
            size_t len = strlen(g_secrets[k]);
            if (len > best && strncmp(s + i, g_secrets[k], len) == 0 && bounded(s, i, len))
                best = len;
        }
        if (best) {
            memcpy(out + o, "****", 4);
            o += 4;
            i += best;
        } else {
            out[o++] = s[i++];
        }
    }
    out[o] = '\0';
    return out;
}

void pgcdc_log_scrub(char *s, size_t size)
{
    char *clean = size ? scrub_dup(s) : NULL;
    if (clean) {
        snprintf(s, size, "%s", clean);
        free(clean);
    }
}

void pgcdc_log_scrub_dsn_arg(char *val)
{
    char red[4096];
    size_t vlen = strlen(val);
    pgcdc_log_redact_dsn(val, red, sizeof(red));
    size_t rlen = strlen(red);
    if (strcmp(red, val) == 0)
        return;
    if (rlen <= vlen) {
        memcpy(val, red, rlen);
        memset(val + rlen, ' ', vlen - rlen);
    } else {
        memset(val, '*', vlen);
    }
}

void pgcdc_log_one_line(char *s)
{
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    size_t n = strlen(s);
    while (n && s[n - 1] == ' ')
        s[--n] = '\0';
}
