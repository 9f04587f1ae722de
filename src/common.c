/*
 * common.c — the growable buffer and clocks shared by every module.
 */
#include "pgcdc/common.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

volatile sig_atomic_t pgcdc_stop_requested = 0;

static void on_stop_signal(int sig)
{
    (void)sig;
    pgcdc_stop_requested = 1;
}

void pgcdc_install_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int pgcdc_buf_reserve(struct pgcdc_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1; /* +1: keep room for the NUL */
    if (need <= b->cap)
        return PGCDC_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return PGCDC_ERR;
    b->data = p;
    b->cap = cap;
    return PGCDC_OK;
}

int pgcdc_buf_append(struct pgcdc_buf *b, const void *p, size_t n)
{
    if (n == 0) /* p may be NULL (an empty span) */
        return pgcdc_buf_reserve(b, 0);
    if (pgcdc_buf_reserve(b, n) < 0)
        return PGCDC_ERR;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return PGCDC_OK;
}

int pgcdc_buf_append_str(struct pgcdc_buf *b, const char *s)
{
    return pgcdc_buf_append(b, s, strlen(s));
}

int pgcdc_buf_append_char(struct pgcdc_buf *b, char c)
{
    if (pgcdc_buf_reserve(b, 1) < 0)
        return PGCDC_ERR;
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
    return PGCDC_OK;
}

int pgcdc_buf_append_u64(struct pgcdc_buf *b, uint64_t v)
{
    char tmp[PGCDC_U64_BUFLEN];
    return pgcdc_buf_append(b, tmp, pgcdc_u64_str(v, tmp));
}

int pgcdc_buf_append_i64(struct pgcdc_buf *b, int64_t v)
{
    if (v < 0) {
        if (pgcdc_buf_append_char(b, '-') < 0)
            return PGCDC_ERR;
        return pgcdc_buf_append_u64(b, (uint64_t)0 - (uint64_t)v);
    }
    return pgcdc_buf_append_u64(b, (uint64_t)v);
}

int pgcdc_buf_append_json_str(struct pgcdc_buf *b, const char *s, size_t n)
{
    /* Worst case every byte becomes \u00XX. */
    if (pgcdc_buf_reserve(b, n * 6 + 2) < 0)
        return PGCDC_ERR;
    char *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++)
        o = pgcdc_json_escape_byte(o, (unsigned char)s[i]);
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return PGCDC_OK;
}

void pgcdc_buf_free(struct pgcdc_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int64_t pgcdc_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t pgcdc_now_ms(void)
{
    return pgcdc_now_us() / 1000;
}

int64_t pgcdc_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
