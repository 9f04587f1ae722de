/*
 * http.c — the shared libcurl layer (http.h): one easy handle per destination driven by a
 * multi handle, the response classifier, Retry-After and the backoff.
 *
 * The easy handle is reset (curl_easy_reset) before every request rather than recreated:
 * a reset keeps its live connections, TLS session cache and DNS cache, which is what makes
 * the next request reuse the connection (keep-alive) instead of opening a new one.
 */
#include "pgcdc/http.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#define DEFAULT_TIMEOUT_MS 10000L
#define DEFAULT_KEEP_BODY 1024
#define HEADERS_MAX 16384 /* response header bytes kept; S3 needs ETag, x-amz-* */

struct pgcdc_http_client {
    CURLM *multi;
    CURL *easy;
    char *ca_file; /* owned, or NULL */
    long timeout_ms;
    long connect_timeout_ms;
    char *user_agent; /* owned */
    bool running;
    struct curl_slist *hdrs;       /* owned: the running request's headers (curl borrows them) */
    struct pgcdc_http_request req; /* the running request (body borrowed from the caller) */
    uint64_t body_pos;             /* bytes of a memory or file body handed to curl */
    size_t keep_body_max;
    int64_t started_ms;
    char errbuf[CURL_ERROR_SIZE];
    struct pgcdc_http_response resp;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int64_t pgcdc_http_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Pure parts ---- */

enum pgcdc_http_class pgcdc_http_classify(long status, int curl_code)
{
    switch (curl_code) {
    case CURLE_OK:
        break;
    /* The certificate or the CA bundle: the same request fails the same way again. */
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        return PGCDC_HTTP_TLS;
    /* A URL curl cannot use, or a callback that aborted: no retry changes that. */
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_READ_ERROR:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
        return PGCDC_HTTP_PERMANENT;
    default:
        /* Name resolution, refused or reset connections, timeouts, a handshake cut short,
         * an empty reply: the network or the server, which may be back soon. */
        return PGCDC_HTTP_RETRY;
    }
    if (status >= 200 && status <= 299)
        return PGCDC_HTTP_OK;
    if (status == 408 || status == 429 || (status >= 500 && status <= 599))
        return PGCDC_HTTP_RETRY;
    if (status == 413)
        return PGCDC_HTTP_TOO_LARGE;
    return PGCDC_HTTP_PERMANENT;
}

const char *pgcdc_http_class_name(enum pgcdc_http_class cls)
{
    switch (cls) {
    case PGCDC_HTTP_OK:
        return "ok";
    case PGCDC_HTTP_RETRY:
        return "retry";
    case PGCDC_HTTP_TOO_LARGE:
        return "too_large";
    case PGCDC_HTTP_PERMANENT:
        return "permanent";
    case PGCDC_HTTP_TLS:
        return "tls";
    }
    return "?";
}

static int month_index(const char *m)
{
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (int i = 0; i < 12; i++)
        if (strncmp(m, months[i], 3) == 0)
            return i;
    return -1;
}

int64_t pgcdc_http_parse_retry_after(const char *value, time_t now)
{
    if (value == NULL)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (isdigit((unsigned char)*value)) {
        int64_t secs = 0;
        const char *p = value;
        for (; isdigit((unsigned char)*p); p++) {
            if (secs > INT64_MAX / 10000)
                return -1;
            secs = secs * 10 + (*p - '0');
        }
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '\0')
            return -1;
        return secs * 1000;
    }
    /* IMF-fixdate, the only form RFC 9110 lets a sender produce:
     * "Sun, 06 Nov 1994 08:49:37 GMT". Parsed by hand: strptime's %a/%b follow the locale. */
    char wday[4], mon[4], zone[4];
    int day, year, hh, mm, ss, used = 0;
    if (sscanf(value, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d %3s%n", wday, &day, mon, &year,
               &hh, &mm, &ss, zone, &used) != 8)
        return -1;
    int m = month_index(mon);
    if (m < 0 || strcmp(zone, "GMT") != 0 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 ||
        year < 1970)
        return -1;
    const char *rest = value + used;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (*rest != '\0')
        return -1;
    struct tm tm = {0};
    tm.tm_year = year - 1900;
    tm.tm_mon = m;
    tm.tm_mday = day;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    time_t at = timegm(&tm);
    if (at == (time_t)-1)
        return -1;
    return at <= now ? 0 : (int64_t)(at - now) * 1000;
}

bool pgcdc_http_url_ok(const char *url, char *err, size_t errlen)
{
    const char *host;
    if (url == NULL || url[0] == '\0') {
        seterr(err, errlen, "the URL is empty");
        return false;
    }
    if (strncasecmp(url, "http://", 7) == 0)
        host = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        host = url + 8;
    else {
        seterr(err, errlen, "the URL must start with http:// or https://");
        return false;
    }
    if (*host == '\0' || *host == '/' || *host == ':' || *host == '?' || *host == '#') {
        seterr(err, errlen, "the URL has no host");
        return false;
    }
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            seterr(err, errlen, "the URL contains a space or a control character");
            return false;
        }
    CURLU *u = curl_url();
    if (u == NULL) {
        seterr(err, errlen, "out of memory");
        return false;
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    curl_url_cleanup(u);
    if (uc != CURLUE_OK) {
        seterr(err, errlen, "the URL cannot be parsed (%s)", curl_url_strerror(uc));
        return false;
    }
    return true;
}

bool pgcdc_http_token_ok(const char *name)
{
    /* RFC 9110 5.6.2: token = 1*tchar */
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (name == NULL || name[0] == '\0')
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && strchr(extra, *p) == NULL)
            return false;
    return true;
}

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: jitter only needs to spread clients apart, not to be unpredictable. */
    if (*s == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        *s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
             0x9E3779B97F4A7C15ULL;
    }
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

int64_t pgcdc_http_backoff_next(struct pgcdc_http_backoff *b, int64_t retry_after_ms)
{
    uint64_t initial = b->initial_ms ? b->initial_ms : 100;
    uint64_t max = b->max_ms ? b->max_ms : 30000;
    if (initial > max)
        initial = max;
    uint64_t base = initial;
    for (uint32_t i = 0; i < b->attempt && base < max; i++)
        base *= 2;
    if (base > max)
        base = max;
    if (b->attempt < UINT32_MAX)
        b->attempt++;
    uint64_t half = base / 2;
    int64_t delay = (int64_t)(base - half + rng_next(&b->rng) % (half + 1));
    if (retry_after_ms > PGCDC_HTTP_RETRY_AFTER_MAX_MS)
        retry_after_ms = PGCDC_HTTP_RETRY_AFTER_MAX_MS;
    if (retry_after_ms > delay)
        delay = retry_after_ms;
    return delay;
}

void pgcdc_http_backoff_reset(struct pgcdc_http_backoff *b)
{
    b->attempt = 0;
}

int pgcdc_http_response_header(const struct pgcdc_http_response *resp, const char *name, char *out,
                               size_t outlen)
{
    size_t nlen = strlen(name);
    const char *p = resp->headers.data;
    if (p == NULL)
        return -1;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            const char *e = p + len;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
                e--;
            size_t vlen = (size_t)(e - v);
            if (vlen + 1 > outlen)
                return -1;
            memcpy(out, v, vlen);
            out[vlen] = '\0';
            return (int)vlen;
        }
        if (eol == NULL)
            break;
        p = eol + 1;
    }
    return -1;
}

/* ---- The client ---- */

static size_t on_body(char *data, size_t size, size_t n, void *opaque)
{
    struct pgcdc_http_client *c = opaque;
    size_t len = size * n;
    size_t room = c->keep_body_max > c->resp.body.len ? c->keep_body_max - c->resp.body.len : 0;
    if (room > 0 && pgcdc_buf_append(&c->resp.body, data, len < room ? len : room) != 0)
        return 0; /* out of memory: abort the transfer */
    return len;   /* the rest is read and dropped: a 2xx body is ignored */
}

static size_t on_header(char *data, size_t size, size_t n, void *opaque)
{
    struct pgcdc_http_client *c = opaque;
    size_t len = size * n;
    /* A new status line (after a 100 Continue, or a redirect) starts a new header block. */
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
        pgcdc_buf_reset(&c->resp.headers);
    if (c->resp.headers.len + len <= HEADERS_MAX &&
        pgcdc_buf_append(&c->resp.headers, data, len) != 0)
        return 0;
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *opaque)
{
    struct pgcdc_http_client *c = opaque;
    size_t cap = size * n;
    const struct pgcdc_http_request *r = &c->req;
    if (r->read_fn != NULL) {
        size_t got = r->read_fn(buf, cap, r->read_opaque);
        return got == (size_t)-1 ? CURL_READFUNC_ABORT : got;
    }
    uint64_t left = r->body_len - c->body_pos;
    size_t want = left < cap ? (size_t)left : cap;
    if (want == 0)
        return 0;
    if (r->body_from_fd) {
        ssize_t got;
        do
            got = pread(r->body_fd, buf, want, r->body_offset + (off_t)c->body_pos);
        while (got < 0 && errno == EINTR);
        if (got <= 0)
            return CURL_READFUNC_ABORT; /* a file shorter than promised: CURLE_ABORTED_... */
        c->body_pos += (uint64_t)got;
        return (size_t)got;
    }
    memcpy(buf, (const char *)r->body + c->body_pos, want);
    c->body_pos += want;
    return want;
}

static int on_seek(void *opaque, curl_off_t offset, int origin)
{
    struct pgcdc_http_client *c = opaque;
    if (origin != SEEK_SET)
        return CURL_SEEKFUNC_CANTSEEK;
    if (c->req.read_fn != NULL) {
        if (offset != 0 || c->req.rewind_fn == NULL || c->req.rewind_fn(c->req.read_opaque) != 0)
            return CURL_SEEKFUNC_CANTSEEK;
        return CURL_SEEKFUNC_OK;
    }
    if (offset < 0 || (uint64_t)offset > c->req.body_len)
        return CURL_SEEKFUNC_FAIL;
    c->body_pos = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static bool g_curl_ready;

int pgcdc_http_client_new(struct pgcdc_http_client **out, const struct pgcdc_http_opts *o,
                          char *err, size_t errlen)
{
    *out = NULL;
    int rc = PGCDC_ERR;
    if (!g_curl_ready) {
        /* Once per process; pgcdc is single-threaded where it uses curl. */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            seterr(err, errlen, "libcurl could not initialise");
            return PGCDC_ERR;
        }
        g_curl_ready = true;
    }
    struct pgcdc_http_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        goto oom;
    c->timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    c->connect_timeout_ms = o && o->connect_timeout_ms > 0 ? o->connect_timeout_ms
                            : c->timeout_ms < 10000        ? c->timeout_ms
                                                           : 10000;
    if (o && o->ca_file && o->ca_file[0]) {
        if (access(o->ca_file, R_OK) != 0) {
            seterr(err, errlen, "cannot read the CA file %s: %s", o->ca_file, strerror(errno));
            rc = PGCDC_ERR_CONFIG;
            goto fail;
        }
        if ((c->ca_file = strdup(o->ca_file)) == NULL)
            goto oom;
    }
    c->user_agent = strdup(o && o->user_agent ? o->user_agent : "pgcdc/" PGCDC_VERSION);
    c->multi = curl_multi_init();
    c->easy = curl_easy_init();
    if (c->user_agent == NULL || c->multi == NULL || c->easy == NULL)
        goto oom;
    /* One request at a time, one connection kept for it. */
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 1L);
    c->resp.retry_after_ms = -1;
    *out = c;
    return 0;
oom:
    seterr(err, errlen, "out of memory creating the HTTP client");
fail:
    pgcdc_http_client_free(c);
    return rc;
}

void pgcdc_http_client_free(struct pgcdc_http_client *c)
{
    if (c == NULL)
        return;
    pgcdc_http_cancel(c);
    if (c->easy)
        curl_easy_cleanup(c->easy);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    curl_slist_free_all(c->hdrs);
    free(c->ca_file);
    free(c->user_agent);
    pgcdc_buf_free(&c->resp.body);
    pgcdc_buf_free(&c->resp.headers);
    free(c);
}

bool pgcdc_http_busy(const struct pgcdc_http_client *c)
{
    return c->running;
}

const struct pgcdc_http_response *pgcdc_http_result(const struct pgcdc_http_client *c)
{
    return &c->resp;
}

void pgcdc_http_cancel(struct pgcdc_http_client *c)
{
    if (!c->running)
        return;
    /* curl closes a connection left half-way through a request; it is not reused. */
    curl_multi_remove_handle(c->multi, c->easy);
    c->running = false;
}

#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        if ((cc = curl_easy_setopt(e, opt, val)) != CURLE_OK)                                      \
            goto bad;                                                                              \
    } while (0)

int pgcdc_http_start(struct pgcdc_http_client *c, const struct pgcdc_http_request *r, char *err,
                     size_t errlen)
{
    if (c->running) {
        seterr(err, errlen, "an HTTP request is already running on this client");
        return PGCDC_ERR;
    }
    CURL *e = c->easy;
    CURLcode cc = CURLE_OK;
    curl_easy_reset(e); /* keeps live connections and the TLS session cache */
    curl_slist_free_all(c->hdrs);
    c->hdrs = NULL;
    c->req = *r;
    c->body_pos = 0;
    c->keep_body_max = r->keep_body_max ? r->keep_body_max : DEFAULT_KEEP_BODY;
    pgcdc_buf_reset(&c->resp.body);
    pgcdc_buf_reset(&c->resp.headers);
    c->resp.cls = PGCDC_HTTP_RETRY;
    c->resp.status = 0;
    c->resp.curl_code = 0;
    c->resp.retry_after_ms = -1;
    c->resp.elapsed_ms = 0;
    c->resp.reason[0] = '\0';
    c->errbuf[0] = '\0';

    bool has_body = r->body != NULL || r->body_from_fd || r->read_fn != NULL;
    const char *method = r->method ? r->method : has_body ? "POST" : "GET";

    for (size_t i = 0; i < r->nheaders; i++) {
        struct curl_slist *n = curl_slist_append(c->hdrs, r->headers[i]);
        if (n == NULL)
            goto oom;
        c->hdrs = n;
    }
    /* No "Expect: 100-continue": it costs a round trip (or a 1 s wait) per large body, and
     * the body is sent either way. */
    struct curl_slist *n = curl_slist_append(c->hdrs, "Expect:");
    if (n == NULL)
        goto oom;
    c->hdrs = n;

    SETOPT(CURLOPT_URL, r->url);
    SETOPT(CURLOPT_HTTPHEADER, c->hdrs);
    SETOPT(CURLOPT_NOSIGNAL, 1L); /* no SIGALRM for DNS timeouts: signals are ours */
    SETOPT(CURLOPT_ERRORBUFFER, c->errbuf);
    SETOPT(CURLOPT_TIMEOUT_MS, c->timeout_ms);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L); /* a redirect is the receiver's answer: permanent */
    SETOPT(CURLOPT_USERAGENT, c->user_agent);
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->ca_file)
        SETOPT(CURLOPT_CAINFO, c->ca_file);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, c);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, c);
    if (r->aws_sigv4)
        SETOPT(CURLOPT_AWS_SIGV4, r->aws_sigv4);
    if (r->userpwd)
        SETOPT(CURLOPT_USERPWD, r->userpwd);

    if (has_body) {
        curl_off_t len =
            r->read_fn != NULL && r->body_len == SIZE_MAX ? -1 : (curl_off_t)r->body_len;
        SETOPT(CURLOPT_READFUNCTION, on_read);
        SETOPT(CURLOPT_READDATA, c);
        SETOPT(CURLOPT_SEEKFUNCTION, on_seek);
        SETOPT(CURLOPT_SEEKDATA, c);
        if (strcmp(method, "PUT") == 0) {
            SETOPT(CURLOPT_UPLOAD, 1L);
            SETOPT(CURLOPT_INFILESIZE_LARGE, len);
        } else {
            SETOPT(CURLOPT_POST, 1L);
            SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, len);
            if (strcmp(method, "POST") != 0)
                SETOPT(CURLOPT_CUSTOMREQUEST, method);
        }
    } else if (strcmp(method, "HEAD") == 0) {
        SETOPT(CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "POST") == 0) {
        SETOPT(CURLOPT_POSTFIELDS, "");
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    } else if (strcmp(method, "GET") != 0) {
        SETOPT(CURLOPT_CUSTOMREQUEST, method);
    }

    CURLMcode mc = curl_multi_add_handle(c->multi, e);
    if (mc != CURLM_OK) {
        seterr(err, errlen, "libcurl refused the request: %s", curl_multi_strerror(mc));
        return PGCDC_ERR;
    }
    c->running = true;
    c->started_ms = pgcdc_http_now_ms();
    return 0;
bad:
    seterr(err, errlen, "libcurl refused an option of the request: %s", curl_easy_strerror(cc));
    return PGCDC_ERR;
oom:
    seterr(err, errlen, "out of memory building an HTTP request");
    return PGCDC_ERR;
}

/* Put "HTTP <status>: <start of body>" (or curl's reason) into resp.reason. */
static void describe(struct pgcdc_http_client *c)
{
    struct pgcdc_http_response *rp = &c->resp;
    if (rp->curl_code != CURLE_OK) {
        const char *why = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rp->curl_code);
        snprintf(rp->reason, sizeof rp->reason, "%s", why);
        return;
    }
    int off = snprintf(rp->reason, sizeof rp->reason, "HTTP %ld", rp->status);
    if (rp->body.len == 0 || off < 0 || (size_t)off >= sizeof rp->reason - 3)
        return;
    /* The start of the body, on one line, without control characters. */
    size_t room = sizeof rp->reason - (size_t)off - 3, w = 0;
    char *dst = rp->reason + off;
    memcpy(dst, ": ", 2);
    dst += 2;
    size_t show = rp->body.len < 200 ? rp->body.len : 200;
    for (size_t i = 0; i < show && w < room; i++) {
        unsigned char ch = (unsigned char)rp->body.data[i];
        dst[w++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    while (w > 0 && dst[w - 1] == ' ')
        w--;
    dst[w] = '\0';
}

int pgcdc_http_poll(struct pgcdc_http_client *c, int timeout_ms, char *err, size_t errlen)
{
    if (!c->running)
        return 0;
    int still = 0, numfds = 0;
    CURLMcode mc = curl_multi_perform(c->multi, &still);
    if (mc == CURLM_OK && still > 0 && timeout_ms > 0) {
        mc = curl_multi_poll(c->multi, NULL, 0, timeout_ms, &numfds);
        if (mc == CURLM_OK)
            mc = curl_multi_perform(c->multi, &still);
    }
    if (mc != CURLM_OK) {
        seterr(err, errlen, "libcurl failed: %s", curl_multi_strerror(mc));
        return PGCDC_ERR;
    }
    int left = 0;
    CURLMsg *m;
    while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE || m->easy_handle != c->easy)
            continue;
        struct pgcdc_http_response *rp = &c->resp;
        rp->curl_code = (int)m->data.result;
        long status = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        rp->status = status;
        curl_multi_remove_handle(c->multi, c->easy);
        c->running = false;
        rp->elapsed_ms = pgcdc_http_now_ms() - c->started_ms;
        rp->cls = pgcdc_http_classify(status, rp->curl_code);
        char ra[128];
        if (pgcdc_http_response_header(rp, "Retry-After", ra, sizeof ra) >= 0)
            rp->retry_after_ms = pgcdc_http_parse_retry_after(ra, time(NULL));
        describe(c);
        return 1;
    }
    return 0;
}

int pgcdc_http_perform(struct pgcdc_http_client *c, const struct pgcdc_http_request *r, char *err,
                       size_t errlen)
{
    int rc = pgcdc_http_start(c, r, err, errlen);
    if (rc < 0)
        return rc;
    for (;;) {
        if (pgcdc_stop_requested) {
            pgcdc_http_cancel(c);
            seterr(err, errlen, "stopped while waiting for %s", r->url);
            return PGCDC_STOP;
        }
        rc = pgcdc_http_poll(c, 200, err, errlen);
        if (rc < 0) {
            pgcdc_http_cancel(c);
            return rc;
        }
        if (rc == 1)
            return 0;
    }
}
