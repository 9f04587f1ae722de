/* test_log.c — logfmt and JSON lines, their escaping, and DSN redaction. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgcdc/log.h"
#include "unit.h"

static int pipefd[2];
static char out[65536];

/* Read what the logger wrote since the last call into `out`. */
static const char *captured(void)
{
    ssize_t n = read(pipefd[0], out, sizeof out - 1);
    out[n > 0 ? n : 0] = '\0';
    return out;
}

/* The timestamp is the clock's; check its shape and return the text after it. */
static const char *after_ts(const char *line, const char *prefix, const char *suffix)
{
    size_t pl = strlen(prefix);

    if (strncmp(line, prefix, pl) != 0)
        return "";
    line += pl;
    /* 2026-11-23T17:49:06.123Z */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'd' ? (line[i] < '0' || line[i] > '9') : line[i] != shape[i])
            return "";
    }
    line += sizeof shape - 1;
    if (strncmp(line, suffix, strlen(suffix)) != 0)
        return "";
    return line + strlen(suffix);
}

static void test_logfmt(void)
{
    pgcdc_log_setup(PGCDC_LOG_INFO, PGCDC_LOG_TEXT);
    pgcdc_log(PGCDC_LOG_INFO, "connected", "slot", "pgcdc", "lsn", "0/16B2F40", NULL);
    CHECK_STR_EQ(after_ts(captured(), "ts=", " "),
                 "level=info msg=\"connected\" slot=pgcdc lsn=0/16B2F40\n");

    pgcdc_log(PGCDC_LOG_WARN, "table has no primary key", "table", "public.nokey", NULL);
    CHECK_STR_EQ(after_ts(captured(), "ts=", " "),
                 "level=warn msg=\"table has no primary key\" table=public.nokey\n");

    pgcdc_log(PGCDC_LOG_ERROR, "x", "empty", "", "space", "a b", "eq", "a=b", "quote", "say \"hi\"",
              "bs", "c:\\dir", "nl", "line1\nline2\r\tend", "ctl", "\x01\x7f", "null", NULL,
              "plain", "ok-value_1.2/3", NULL);
    CHECK_STR_EQ(after_ts(captured(), "ts=", " "),
                 "level=error msg=\"x\" empty=\"\" space=\"a b\" eq=\"a=b\" "
                 "quote=\"say \\\"hi\\\"\" bs=\"c:\\\\dir\" nl=\"line1\\nline2\\r\\tend\" "
                 "ctl=\"\\u0001\\u007f\" null=\"\" plain=ok-value_1.2/3\n");

    /* The message itself is escaped too, and a bad key cannot break the line's shape. */
    pgcdc_log(PGCDC_LOG_INFO, "two\nlines \"q\"", "bad key=", "v", NULL);
    CHECK_STR_EQ(after_ts(captured(), "ts=", " "),
                 "level=info msg=\"two\\nlines \\\"q\\\"\" bad_key_=v\n");

    /* UTF-8 passes through unchanged in logfmt. */
    pgcdc_log(PGCDC_LOG_INFO, "café 😀", "t", "é", NULL);
    CHECK_STR_EQ(after_ts(captured(), "ts=", " "), "level=info msg=\"café 😀\" t=é\n");
}

static void test_json(void)
{
    pgcdc_log_setup(PGCDC_LOG_INFO, PGCDC_LOG_JSON);
    pgcdc_log(PGCDC_LOG_INFO, "connected", "slot", "pgcdc", "lsn", "0/16B2F40", NULL);
    CHECK_STR_EQ(after_ts(captured(), "{\"ts\":\"", "\","),
                 "\"level\":\"info\",\"msg\":\"connected\",\"slot\":\"pgcdc\","
                 "\"lsn\":\"0/16B2F40\"}\n");

    pgcdc_log(PGCDC_LOG_WARN, "q\"b\\n\nt\tc\x01", "k\"ey", "caf\xc3\xa9 \xf0\x9f\x98\x80", "n",
              NULL, "e", "", NULL);
    CHECK_STR_EQ(after_ts(captured(), "{\"ts\":\"", "\","),
                 "\"level\":\"warn\",\"msg\":\"q\\\"b\\\\n\\nt\\tc\\u0001\",\"k\\\"ey\":"
                 "\"café 😀\",\"n\":null,\"e\":\"\"}\n");

    /* Invalid UTF-8 (a lone continuation byte, a truncated sequence, an overlong '/')
     * becomes U+FFFD so that the line stays valid JSON. */
    pgcdc_log(PGCDC_LOG_ERROR, "bad", "v",
              "a\x80"
              "b\xc3"
              "c\xc0\xaf"
              "d",
              NULL);
    CHECK_STR_EQ(after_ts(captured(), "{\"ts\":\"", "\","),
                 "\"level\":\"error\",\"msg\":\"bad\",\"v\":"
                 "\"a\\ufffdb\\ufffdc\\ufffd\\ufffdd\"}\n");
}

static void test_levels(void)
{
    pgcdc_log_setup(PGCDC_LOG_WARN, PGCDC_LOG_TEXT);
    CHECK(pgcdc_log_enabled(PGCDC_LOG_ERROR));
    CHECK(pgcdc_log_enabled(PGCDC_LOG_WARN));
    CHECK(!pgcdc_log_enabled(PGCDC_LOG_INFO));
    CHECK(!pgcdc_log_enabled(PGCDC_LOG_DEBUG));
    pgcdc_log(PGCDC_LOG_INFO, "hidden", NULL);
    pgcdc_log(PGCDC_LOG_DEBUG, "hidden", NULL);
    pgcdc_log(PGCDC_LOG_ERROR, "shown", NULL);
    CHECK_STR_EQ(after_ts(captured(), "ts=", " "), "level=error msg=\"shown\"\n");

    pgcdc_log_setup(PGCDC_LOG_DEBUG, PGCDC_LOG_TEXT);
    CHECK(pgcdc_log_enabled(PGCDC_LOG_DEBUG));
    pgcdc_log(PGCDC_LOG_DEBUG, "d", NULL);
    CHECK_STR_EQ(after_ts(captured(), "ts=", " "), "level=debug msg=\"d\"\n");
    pgcdc_log_setup(PGCDC_LOG_INFO, PGCDC_LOG_TEXT);
}

static void test_long_record(void)
{
    /* Past the logger's stack buffer: still one whole line, nothing cut. */
    size_t n = 20000;
    char *big = malloc(n + 1);
    const char *line;

    memset(big, 'x', n);
    big[n] = '\0';
    pgcdc_log_setup(PGCDC_LOG_INFO, PGCDC_LOG_TEXT);
    pgcdc_log(PGCDC_LOG_INFO, "big", "v", big, "end", "1", NULL);
    line = after_ts(captured(), "ts=", " ");
    CHECK(strncmp(line, "level=info msg=\"big\" v=xxxx", 27) == 0);
    CHECK_INT_EQ(strlen(line), strlen("level=info msg=\"big\" v= end=1\n") + n);
    CHECK(strcmp(line + strlen(line) - 7, " end=1\n") == 0);
    free(big);
}

static void test_errno_kept(void)
{
    errno = ECONNREFUSED;
    pgcdc_log(PGCDC_LOG_INFO, "x", NULL);
    CHECK_INT_EQ(errno, ECONNREFUSED);
    captured();
}

static void check_redact(const char *dsn, const char *want)
{
    char buf[512];

    memset(buf, 'Z', sizeof buf);
    pgcdc_log_redact_dsn(dsn, buf, sizeof buf);
    CHECK_STR_EQ(buf, want);
}

static void test_redact(void)
{
    /* URIs */
    check_redact("postgresql://user:secret@host/db?password=x&sslmode=require",
                 "postgresql://user:****@host/db?password=****&sslmode=require");
    check_redact("postgres://u:p@ep-x.us-east-2.aws.neon.tech/neondb?sslmode=require",
                 "postgres://u:****@ep-x.us-east-2.aws.neon.tech/neondb?sslmode=require");
    check_redact("postgres://user@host:5432/db", "postgres://user@host:5432/db");
    check_redact("postgres://host:5432/db", "postgres://host:5432/db");
    check_redact("postgres://", "postgres://");
    check_redact("postgres:///db?host=/tmp&password=s3cret",
                 "postgres:///db?host=/tmp&password=****");
    check_redact("postgres://u:pw@h1:5432,h2:5433/db", "postgres://u:****@h1:5432,h2:5433/db");
    check_redact("postgres://u:@host/db", "postgres://u:****@host/db");
    check_redact("postgres://:pw@host/db", "postgres://:****@host/db");
    /* An unencoded '@' or '/' in the password still hides all of it. */
    check_redact("postgres://u:p@ss/w@rd@host/db", "postgres://u:****@host/db");
    /* A '?' in the password is not the start of the query string. */
    check_redact("postgresql://app:ab?cd@host/db", "postgresql://app:****@host/db");
    check_redact("postgresql://app:ab?cd@host/db?sslmode=require&password=x",
                 "postgresql://app:****@host/db?sslmode=require&password=****");
    check_redact("postgres://u:p%40ss@host/db?sslpassword=k&application_name=a",
                 "postgres://u:****@host/db?sslpassword=****&application_name=a");
    check_redact("postgres://h/db?PASSWORD=x", "postgres://h/db?PASSWORD=****");
    check_redact("postgres://h/db?password=", "postgres://h/db?password=****");
    check_redact("postgres://h/db?&&password", "postgres://h/db?&&password");

    /* key=value */
    check_redact("host=h password=secret user=u", "host=h password=**** user=u");
    check_redact("password='se cret' host=h", "password=**** host=h");
    check_redact("password = 'se\\'cret' dbname=d", "password=**** dbname=d");
    check_redact("host=h  password=a\\ b  port=5432", "host=h  password=****  port=5432");
    check_redact("password=", "password=****");
    check_redact("password='unterminated", "password=****");
    check_redact("sslpassword=k sslmode=verify-full", "sslpassword=**** sslmode=verify-full");
    check_redact("dbname='my db' user=u", "dbname='my db' user=u");
    check_redact("justaword", "justaword");
    /* An unquoted space in a password: libpq reads the rest as a stray word. */
    check_redact("host=h password=p ss user=u", "host=h password=**** **** user=u");
    check_redact("", "");
    check_redact("   ", "   ");
    check_redact("=x password=y", "=x password=****");
    check_redact("host=h password", "host=h password");
    check_redact("a='b\\", "a='b\\");
    check_redact("password=trailing\\", "password=****");

    /* Never overflows, always terminates, and a cut never reveals the password. */
    char small[12];
    memset(small, 'Z', sizeof small);
    pgcdc_log_redact_dsn("host=h password=secret", small, sizeof small);
    CHECK_STR_EQ(small, "host=h pass");
    memset(small, 'Z', sizeof small);
    pgcdc_log_redact_dsn("postgres://u:secret@h/d", small, sizeof small);
    CHECK_STR_EQ(small, "postgres://");
    char one[1] = {'Z'};
    pgcdc_log_redact_dsn("host=h", one, 1);
    CHECK_INT_EQ(one[0], '\0');
    char nul[4] = "ZZZ";
    pgcdc_log_redact_dsn(NULL, nul, sizeof nul);
    CHECK_STR_EQ(nul, "");
    pgcdc_log_redact_dsn("host=h", NULL, 0); /* no crash */
}

static unsigned next_rand(unsigned *seed)
{
    *seed = *seed * 1103515245 + 12345;
    return *seed >> 16;
}

static void test_redact_fuzz(void)
{
    /* Random strings from a DSN-ish alphabet: no crash, no overrun (ASan watches), always
     * terminated within the buffer. */
    static const char alphabet[] = "ab=' \\@:/?&%password\t";
    char dsn[64], buf[40];
    unsigned seed = 12345;
    int bad = 0;

    for (int iter = 0; iter < 20000; iter++) {
        size_t n = next_rand(&seed) % sizeof dsn;
        size_t outlen = 1 + next_rand(&seed) % sizeof buf;
        for (size_t i = 0; i < n; i++)
            dsn[i] = alphabet[next_rand(&seed) % (sizeof alphabet - 1)];
        dsn[n] = '\0';
        if (iter % 2)
            memcpy(dsn, "postgres://", n < 11 ? n : 11);
        memset(buf, 'Z', sizeof buf);
        pgcdc_log_redact_dsn(dsn, buf, outlen);
        if (memchr(buf, '\0', outlen) == NULL)
            bad++;
    }
    CHECK_INT_EQ(bad, 0);
}

/* libpq's messages about a misread DSN quote pieces of the password: every line masks them. */
static void test_secrets(void)
{
    pgcdc_log_setup(PGCDC_LOG_INFO, PGCDC_LOG_TEXT);
    pgcdc_log_add_secrets("postgres://u:p@ss@db.example.com/app");
    pgcdc_log(PGCDC_LOG_ERROR,
              "cannot connect: could not translate host name \"ss@db.example.com\" to address",
              "error", "host \"ss@db.example.com\": no address; p@ss", NULL);
    CHECK_STR_EQ(after_ts(captured(), "ts=", " "),
                 "level=error msg=\"cannot connect: could not translate host name "
                 "\\\"****@db.example.com\\\" to address\" error=\"host "
                 "\\\"****@db.example.com\\\": no address; ****\"\n");
    /* A piece stands as a whole word only: "ss" in "address" stays; one of under 3 bytes
     * only next to a quote or a delimiter ("p" of "p@ss"). */
    char text[256] = "process \"p\" at address p x";
    pgcdc_log_scrub(text, sizeof text);
    CHECK_STR_EQ(text, "process \"****\" at address p x");
    pgcdc_log_setup(PGCDC_LOG_INFO, PGCDC_LOG_JSON);
    pgcdc_log(PGCDC_LOG_WARN, "x", "error", "missing \"=\" after \"ss\"", NULL);
    CHECK(strstr(captured(), "\"error\":\"missing \\\"=\\\" after \\\"****\\\"\"") != NULL);
    pgcdc_log_forget_secrets();

    /* key=value: a quoted password and the stray word after an unquoted one. */
    pgcdc_log_add_secrets("host=h password=p%40ss word user=u");
    snprintf(text, sizeof text, "missing \"=\" after \"word\"; p@ss; p%%40ss; user u");
    pgcdc_log_scrub(text, sizeof text);
    CHECK_STR_EQ(text, "missing \"=\" after \"****\"; ****; ****; user u");
    pgcdc_log_forget_secrets();
    pgcdc_log_setup(PGCDC_LOG_INFO, PGCDC_LOG_TEXT);
}

int main(void)
{
    if (pipe(pipefd) != 0)
        return 2;
    /* A pipe holds 64 KiB, more than any one record here; read it after each record. */
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    pgcdc_log_set_fd(pipefd[1]);
    test_logfmt();
    test_json();
    test_levels();
    test_long_record();
    test_errno_kept();
    test_redact();
    test_redact_fuzz();
    test_secrets();
    pgcdc_log_set_fd(2);
    return UNIT_DONE();
}
