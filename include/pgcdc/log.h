/*
 * log.h — one line per record on stderr, logfmt ("text") or JSON.
 *
 * Fields are NULL-terminated key/value string pairs:
 *     pgcdc_log(PGCDC_LOG_INFO, "connected", "slot", slot, "lsn", lsnbuf, NULL);
 * Nothing here knows which values are secret: callers never pass a DSN or password;
 * pgcdc_log_redact_dsn gives the form that may be logged.
 */
#ifndef PGCDC_LOG_H
#define PGCDC_LOG_H

#include <stddef.h>

enum pgcdc_log_level { PGCDC_LOG_ERROR = 0, PGCDC_LOG_WARN, PGCDC_LOG_INFO, PGCDC_LOG_DEBUG };
enum pgcdc_log_format { PGCDC_LOG_TEXT = 0, PGCDC_LOG_JSON };

void pgcdc_log_setup(enum pgcdc_log_level level, enum pgcdc_log_format format);
int pgcdc_log_enabled(enum pgcdc_log_level level);
void pgcdc_log(enum pgcdc_log_level level, const char *msg, ...);

/* Send records to fd instead of stderr (2); for tests. The fd stays the caller's. */
void pgcdc_log_set_fd(int fd);

/*
 * Copy a libpq connection string (URI or key=value form) into out with every password
 * replaced by "****". Always NUL-terminates; truncates to outlen.
 */
void pgcdc_log_redact_dsn(const char *dsn, char *out, size_t outlen);

/*
 * Rewrite a DSN given on the command line in place with its redacted form (padded with
 * spaces; all '*' if the redacted form is longer), so that ps and /proc/PID/cmdline never
 * show its password. Call it after the value was copied.
 */
void pgcdc_log_scrub_dsn_arg(char *val);

/*
 * Remember the secret parts of dsn (each password, and its pieces a misread DSN may put in
 * libpq's messages) so that no log record shows them, whoever wrote its text: every
 * record is masked ("****") as it is written. Call it for every DSN pgcdc is given.
 */
void pgcdc_log_add_secrets(const char *dsn);

/* Mask the remembered secrets in s (NUL-terminated, size bytes of room) in place, for
 * text printed without pgcdc_log (check's lines). */
void pgcdc_log_scrub(char *s, size_t size);

/* Forget every remembered secret (tests). */
void pgcdc_log_forget_secrets(void);

/* Make a (libpq) message one line in place: newlines, CRs and tabs become spaces,
 * trailing blanks go. */
void pgcdc_log_one_line(char *s);

#endif
