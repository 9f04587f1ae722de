/*
 * sink_http.h — events POSTed to a web service (sink.type = http), in order, at least once.
 *
 * Each request is a JSON array of events, byte for byte the file sink's, with
 * Content-Type: application/json, pgcdc-idempotency-key and, with a signing secret,
 * pgcdc-signature. One batch is in flight at a time; a transaction is confirmed only once
 * every batch holding its events got a 2xx. The contract is docs/http.md.
 */
#ifndef PGCDC_SINK_HTTP_H
#define PGCDC_SINK_HTTP_H

#include <stddef.h>

#include "pgcdc/config.h"
#include "pgcdc/sink.h"

/*
 * Create the sink from cfg's sink.http.* keys. The caller owns *out and releases it with
 * (*out)->ops->close. A missing or non-http(s) URL, an unusable header or ca_file is
 * PGCDC_ERR_CONFIG naming the key and the fix.
 */
int pgcdc_sink_http_open(struct pgcdc_sink **out, const struct pgcdc_config *cfg, char *err,
                         size_t errlen);

/*
 * `check`: one HEAD request to sink.http.url (OPTIONS when HEAD is refused with 405 or
 * 501). Any HTTP answer is reachable (0, a line for PASS in msg) except 401 and 403; a TLS
 * failure, 401/403 or no answer is PGCDC_ERR with the reason and the fix in msg.
 */
int pgcdc_sink_http_check(const struct pgcdc_config *cfg, char *msg, size_t msglen);

/* url without its user info, query and fragment (they may hold credentials), for logs. */
void pgcdc_sink_http_url_for_log(const char *url, char *out, size_t outlen);

#endif
