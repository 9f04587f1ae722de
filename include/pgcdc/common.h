/*
 * common.h — return codes, byte spans and the growable buffer shared by every module.
 */
#ifndef PGCDC_COMMON_H
#define PGCDC_COMMON_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PGCDC_VERSION "0.1.0"

/* Return codes. 0 is success; every failure is negative so callers can test `< 0`. */
#define PGCDC_OK 0
#define PGCDC_ERR -1       /* runtime failure: stop, exit 1 */
#define PGCDC_ERR_RETRY -2 /* transient (connection lost, server restarting): back off, retry */
#define PGCDC_ERR_CONFIG -3 /* usage or configuration error: exit 2 */
#define PGCDC_AGAIN -4     /* back-pressure: poll the sink, then offer the same item again */
#define PGCDC_ERR_BUSY -5  /* held by another process (the slot): retry for a bounded time */
#define PGCDC_STOP -6      /* a stop was requested while waiting (back-pressure): wind down */

/* Exit codes, as README's Commands section gives them. */
#define PGCDC_EXIT_OK 0
#define PGCDC_EXIT_RUNTIME 1
#define PGCDC_EXIT_USAGE 2

/* A view into someone else's bytes; never owns memory. */
struct pgcdc_span {
    const char *p;
    size_t len;
};

/*
 * A growable byte buffer, reused across rows so the hot path does not allocate.
 * The buffer owns `data`; pgcdc_buf_free releases it. `data` is always NUL-terminated
 * after a successful append (one spare byte is kept), which lets C string APIs read it.
 */
struct pgcdc_buf {
    char *data;
    size_t len;
    size_t cap;
};

/* Ensure room for `extra` more bytes (plus the NUL). Returns 0, or PGCDC_ERR on ENOMEM. */
int pgcdc_buf_reserve(struct pgcdc_buf *b, size_t extra);
int pgcdc_buf_append(struct pgcdc_buf *b, const void *p, size_t n);
int pgcdc_buf_append_str(struct pgcdc_buf *b, const char *s);
int pgcdc_buf_append_char(struct pgcdc_buf *b, char c);
int pgcdc_buf_append_u64(struct pgcdc_buf *b, uint64_t v);
int pgcdc_buf_append_i64(struct pgcdc_buf *b, int64_t v);
/* Append `s` as a JSON string literal, quotes included, escaping as RFC 8259 requires. */
int pgcdc_buf_append_json_str(struct pgcdc_buf *b, const char *s, size_t n);
static inline void pgcdc_buf_reset(struct pgcdc_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}
void pgcdc_buf_free(struct pgcdc_buf *b);

/*
 * Set by SIGTERM/SIGINT once pgcdc_install_stop_signals ran (SIGPIPE is ignored too); the
 * long-running commands (run, replay) check it in their loops.
 */
extern volatile sig_atomic_t pgcdc_stop_requested;
void pgcdc_install_stop_signals(void);

/*
 * Write byte c as it goes inside a JSON string (PostgreSQL's escape_json: \" \\ \n \r \t
 * \b \f, other controls as \u00XX, the rest as itself) at o, which has room for 6 bytes;
 * returns the position after it.
 */
static inline char *pgcdc_json_escape_byte(char *o, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    switch (c) {
    case '"': *o++ = '\\'; *o++ = '"'; break;
    case '\\': *o++ = '\\'; *o++ = '\\'; break;
    case '\n': *o++ = '\\'; *o++ = 'n'; break;
    case '\r': *o++ = '\\'; *o++ = 'r'; break;
    case '\t': *o++ = '\\'; *o++ = 't'; break;
    case '\b': *o++ = '\\'; *o++ = 'b'; break;
    case '\f': *o++ = '\\'; *o++ = 'f'; break;
    default:
        if (c < 0x20) {
            *o++ = '\\'; *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = hex[c >> 4]; *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    return o;
}

/* The value of one hex digit, or -1. */
static inline int pgcdc_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20; /* 'A'-'F' -> 'a'-'f' */
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The decimal digits of v (at most 20) written at o, two per division; returns the end.
 * No NUL, no locale, no printf: the event encoder and the Kafka headers use it. */
static inline char *pgcdc_put_u64(char *o, uint64_t v)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";
    char tmp[20];
    size_t i = sizeof(tmp);
    while (v >= 100) {
        size_t r = (size_t)(v % 100) * 2;
        v /= 100;
        tmp[--i] = pairs[r + 1];
        tmp[--i] = pairs[r];
    }
    if (v >= 10) {
        tmp[--i] = pairs[v * 2 + 1];
        tmp[--i] = pairs[v * 2];
    } else {
        tmp[--i] = (char)('0' + v);
    }
    memcpy(o, tmp + i, sizeof(tmp) - i);
    return o + (sizeof(tmp) - i);
}

/* v in decimal, NUL-terminated, into out; returns the number of digits. */
#define PGCDC_U64_BUFLEN 21
static inline size_t pgcdc_u64_str(uint64_t v, char out[PGCDC_U64_BUFLEN])
{
    char *e = pgcdc_put_u64(out, v);
    *e = '\0';
    return (size_t)(e - out);
}

/* Wall clock in milliseconds / microseconds since the Unix epoch; monotonic ms for timers. */
int64_t pgcdc_now_ms(void);
int64_t pgcdc_now_us(void);
int64_t pgcdc_mono_ms(void);

#endif
