/*
 * stream.c — `pgcdc run`: the replication loop that ties the modules together.
 *
 * Data path: repl (messages) -> decode (wal2json v2) -> relations (names, selection) ->
 * event (JSON) -> sink -> txn_track -> repl (standby status with flush = the confirmed
 * LSN). The slot is found and started by slot.c, a new one's snapshot taken by
 * snapshot.c. Connection failures back off with jitter and resume from the durable
 * position; the sink is rewound to what is durable, and transactions the sink already
 * holds are skipped when sent again.
 */
#include "pgcdc/stream.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/decode.h"
#include "pgcdc/encoding.h"
#include "pgcdc/event.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/metrics.h"
#include "pgcdc/poll.h"
#include "pgcdc/relations.h"
#include "pgcdc/repl.h"
#include "pgcdc/sink.h"
#include "pgcdc/sink_file.h"
#include "pgcdc/sink_kafka.h"
#include "pgcdc/sink_http.h"
#include "pgcdc/sink_s3.h"
#include "pgcdc/slot.h"
#include "pgcdc/snapshot.h"
#include "pgcdc/snapshot_signal.h"
#include "pgcdc/txn_track.h"

#define TRACK_CAPACITY 65536
#define SYNC_INTERVAL_MS 100   /* group commit: at most this long between syncs under load */
#define PROGRESS_INTERVAL_MS 60000
#define PING_AFTER_MS 10000    /* silence after which we ask the server for a reply */
#define DEAD_AFTER_MS 30000    /* no reply to that for this long: the connection is gone */

/*
 * How the stream loop ends when no error ends it. Errors are returned apart from it, as
 * the negative PGCDC_ERR* codes.
 */
enum loop_outcome {
    LOOP_STOPPED,     /* a stop was requested */
    LOOP_END_REACHED, /* --end-lsn: everything up to it is durable, or what follows is not ours */
    LOOP_IDLE,        /* poll mode: caught up and idle, time to let the compute sleep */
};

struct stream {
    const struct pgcdc_config *cfg;
    uint64_t end_lsn; /* 0: run until signalled */
    bool once;        /* run --once: end_lsn becomes the server's position at connect */
    bool leave;       /* poll mode: caught up and idle, disconnect */
    struct pgcdc_poll poll;
    struct pgcdc_sink *sink;
    struct pgcdc_txn_track *track;
    struct pgcdc_repl *repl;
    struct pgcdc_decoder dec;
    struct pgcdc_encoding enc; /* the server's encoding -> UTF-8 (nothing to do for UTF8) */
    struct pgcdc_buf value, key, name_json, db_json;

    uint64_t skip_upto;   /* transactions ending at or before this are already in the sink */
    uint64_t received;    /* highest position received (status "write") */
    uint64_t sent_flush;  /* last flush position sent to the server */
    uint64_t idle_end;    /* walEnd of the last keepalive received outside a transaction */
    bool in_txn, skipping;
    bool tables_checked;
    bool streaming; /* inside START_REPLICATION's CopyBoth: status updates may be sent */
    struct pgcdc_txn_meta txn;
    struct pgcdc_event_ctx ectx;

    struct pgcdc_slot slot;      /* the slot and its state.dir record */
    struct pgcdc_relations rels; /* what each table wal2json names becomes in events */
    struct pgcdc_snapshot_owed owed; /* tables owed a snapshot at a later point */

    int64_t last_sync_ms, last_status_ms, last_progress_ms;
    int64_t last_recv_ms, ping_sent_ms; /* silence detection; ping_sent_ms 0: none out */
    bool dirty; /* written since the last sync */
    uint64_t n_events, n_txns, n_data; /* n_data: data messages (not keepalives) */

    int lockfd; /* state.dir/lock, held until the run ends */
    /* Reconnecting: the backoff grows until something is confirmed again. */
    int attempt;
    uint64_t confirmed_at_failure;
    int64_t busy_since; /* when the slot was first found busy; 0: it is not */
};

/* What is durable, as reported to the server: never below the slot's own position. */
static uint64_t flush_pos(const struct stream *s)
{
    return pgcdc_slot_flush_to_report(&s->slot, pgcdc_txn_track_confirmed(s->track));
}

static int send_status(struct stream *s, bool force, char *err, size_t errlen)
{
    if (!s->streaming)
        return PGCDC_OK;
    uint64_t confirmed = flush_pos(s);
    int64_t now = pgcdc_mono_ms();
    if (!force && now - s->last_status_ms < s->cfg->status_interval_ms)
        return PGCDC_OK;
    uint64_t written = s->received > confirmed ? s->received : confirmed;
    int rc = pgcdc_repl_send_status(s->repl, written, confirmed, false, err, errlen);
    if (rc < 0)
        return rc;
    atomic_store(&pgcdc_metrics.confirmed_lsn, confirmed);
    atomic_store(&pgcdc_metrics.inflight, pgcdc_txn_track_inflight(s->track));
    atomic_store(&pgcdc_metrics.confirmed_commit_ts_ms, pgcdc_txn_track_confirmed_ts(s->track));
    if (confirmed != s->sent_flush) {
        pgcdc_metrics_progress();
        char l[PGCDC_LSN_BUFLEN];
        pgcdc_log(PGCDC_LOG_DEBUG, "confirmed", "lsn", pgcdc_lsn_format(confirmed, l), NULL);
    }
    s->sent_flush = confirmed;
    s->last_status_ms = now;
    return PGCDC_OK;
}

/*
 * A connection a NAT or load balancer dropped silently looks like an idle server. After
 * PING_AFTER_MS of silence, ask for a reply (the walsender answers a status update that
 * requests one with a keepalive); none within DEAD_AFTER_MS means reconnect.
 */
static int check_alive(struct stream *s, int64_t now, char *err, size_t errlen)
{
    /* Owed snapshots wait for the server's position: ask for it sooner. */
    if (now - s->last_recv_ms < (s->owed.active ? 1000 : PING_AFTER_MS))
        return PGCDC_OK;
    if (!s->ping_sent_ms) {
        uint64_t confirmed = flush_pos(s);
        uint64_t written = s->received > confirmed ? s->received : confirmed;
        int rc = pgcdc_repl_send_status(s->repl, written, confirmed, true, err, errlen);
        if (rc < 0)
            return rc;
        s->ping_sent_ms = now;
        return PGCDC_OK;
    }
    if (now - s->ping_sent_ms >= DEAD_AFTER_MS) {
        snprintf(err, errlen,
                 "no reply from the server for %d s: the replication connection is presumed "
                 "dead", (int)((now - s->last_recv_ms) / 1000));
        return PGCDC_ERR_RETRY;
    }
    return PGCDC_OK;
}

static int sink_sync(struct stream *s, char *err, size_t errlen)
{
    int rc = s->sink->ops->sync(s->sink, err, errlen);
    if (rc < 0) {
        atomic_fetch_add(&pgcdc_metrics.sink_errors, 1);
        return rc;
    }
    atomic_store(&pgcdc_metrics.inflight, pgcdc_txn_track_inflight(s->track));
    s->last_sync_ms = pgcdc_mono_ms();
    s->dirty = false;
    if (pgcdc_txn_track_failed(s->track)) {
        if (!*err)
            snprintf(err, errlen, "the sink failed to deliver a change; stopping before it");
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

/* Offer one record to the sink until it takes it, keeping the server connection alive. */
static int sink_write(struct stream *s, const struct pgcdc_record *r, char *err, size_t errlen)
{
    for (;;) {
        int rc = s->sink->ops->write(s->sink, r, err, errlen);
        if (rc != PGCDC_AGAIN) {
            s->dirty = true;
            if (rc < 0)
                atomic_fetch_add(&pgcdc_metrics.sink_errors, 1);
            else
                pgcdc_metrics_event(r->op, r->value_len);
            return rc;
        }
        if (pgcdc_stop_requested)
            return PGCDC_STOP; /* finish() makes durable what can be, within 10 s */
        if ((rc = s->sink->ops->poll(s->sink, 100, err, errlen)) < 0)
            return rc;
        if ((rc = send_status(s, false, err, errlen)) < 0)
            return rc;
        if (pgcdc_txn_track_failed(s->track)) {
            snprintf(err, errlen, "the sink failed to deliver a change; stopping before it");
            return PGCDC_ERR;
        }
    }
}

static int emit(struct stream *s, const struct pgcdc_relation *rel, const struct pgcdc_change *ch, char op,
                int use_old_key, char *err, size_t errlen)
{
    pgcdc_buf_reset(&s->value);
    pgcdc_buf_reset(&s->key);
    int haskey = 0;
    if (pgcdc_event_encode(&s->value, &s->ectx, ch, op, pgcdc_now_ms()) < 0 ||
        (op != 't' && (haskey = pgcdc_event_key(&s->key, ch, use_old_key)) < 0)) {
        snprintf(err, errlen, "out of memory encoding an event");
        return PGCDC_ERR;
    }
    struct pgcdc_record r = {
        .schema = rel->schema,
        .table = rel->table,
        .op = op,
        .key = haskey ? s->key.data : NULL,
        .key_len = haskey ? s->key.len : 0,
        .value = s->value.data,
        .value_len = s->value.len,
        .lsn = ch->lsn,
        .commit_lsn = s->txn.commit_lsn,
        .xid = s->txn.xid,
    };
    s->n_events++;
    return sink_write(s, &r, err, errlen);
}

/* The snapshot's way to the sink: the stream's own back-pressure handling. */
static int snapshot_write(void *ctx, const struct pgcdc_record *r, char *err, size_t errlen)
{
    struct stream *s = ctx;
    s->n_events++;
    return sink_write(s, r, err, errlen);
}

/* While a snapshot is read mid-stream: the walsender must keep hearing from us. */
static int snapshot_keepalive(void *ctx, char *err, size_t errlen)
{
    return send_status(ctx, false, err, errlen);
}
#define SNAPSHOT_OUT(s)                                                                            \
    {(s)->sink, (s)->track, (s)->ectx.name_json, (s)->ectx.db_json, snapshot_write,              \
     snapshot_keepalive, (s)}

/* Tables owed a snapshot (cut short, added, requested): their new point (snapshot.h). */
static int prepare_owed(struct stream *s, char *err, size_t errlen)
{
    struct pgcdc_snapshot_out out = SNAPSHOT_OUT(s);
    return pgcdc_snapshot_prepare(&s->owed, &s->slot, &out, err, errlen);
}

/* The stream reached the owed tables' point: write their rows there, then any requested since. */
static int run_owed(struct stream *s, char *err, size_t errlen)
{
    struct pgcdc_snapshot_out out = SNAPSHOT_OUT(s);
    int rc = pgcdc_snapshot_run_owed(&s->owed, s->cfg, &out, err, errlen);
    s->dirty = true; /* sync (and confirm) what the snapshot wrote */
    return rc == PGCDC_OK && s->owed.requested ? prepare_owed(s, err, errlen) : rc;
}

static bool end_reached_at(struct stream *s, uint64_t pos)
{
    return s->end_lsn && pos >= s->end_lsn;
}

/* BEGIN: open the transaction in the tracker and the sink, unless the sink holds it. */
static int begin_txn(struct stream *s, const struct pgcdc_change *ch, bool *end, char *err,
                     size_t errlen)
{
    int rc;
    if (s->end_lsn && ch->nextlsn > s->end_lsn) {
        *end = true; /* commits after --end-lsn: not ours */
        return PGCDC_OK;
    }
    if (pgcdc_snapshot_due(&s->owed, ch->lsn) && (rc = run_owed(s, err, errlen)) < 0)
        return rc;
    s->in_txn = true;
    s->txn = (struct pgcdc_txn_meta){
        .xid = ch->xid, .commit_lsn = ch->lsn, .end_lsn = ch->nextlsn, .commit_ts_ms = ch->ts_ms};
    s->skipping = ch->nextlsn <= s->skip_upto;
    if (s->skipping)
        return PGCDC_OK;
    s->ectx.xid = ch->xid;
    s->ectx.commit_lsn = ch->lsn;
    s->ectx.commit_ts_ms = ch->ts_ms;
    while ((rc = pgcdc_txn_track_begin(s->track, ch->nextlsn)) == PGCDC_AGAIN) {
        if (pgcdc_stop_requested)
            return PGCDC_STOP;
        /* The ring is full: make what was written durable (the file sink acknowledges
         * only when it syncs), then wait for acknowledgements (Kafka). */
        if ((rc = sink_sync(s, err, errlen)) < 0 ||
            (pgcdc_txn_track_inflight(s->track) >= TRACK_CAPACITY &&
             (rc = s->sink->ops->poll(s->sink, 100, err, errlen)) < 0) ||
            (rc = send_status(s, false, err, errlen)) < 0)
            return rc;
    }
    pgcdc_txn_track_set_commit_ts(s->track, ch->ts_ms);
    return s->sink->ops->begin(s->sink, &s->txn, err, errlen);
}

static int commit_txn(struct stream *s, const struct pgcdc_change *ch, bool *end, char *err,
                      size_t errlen)
{
    int rc;
    if (!s->in_txn) {
        snprintf(err, errlen, "wal2json sent a commit without a begin");
        return PGCDC_ERR_RETRY;
    }
    s->in_txn = false;
    if (ch->nextlsn > s->received)
        s->received = ch->nextlsn;
    if (!s->skipping) {
        if ((rc = s->sink->ops->commit(s->sink, &s->txn, err, errlen)) < 0)
            return rc;
        pgcdc_txn_track_commit(s->track);
        s->n_txns++;
    }
    s->skipping = false;
    *end = end_reached_at(s, ch->nextlsn);
    return s->owed.requested && !s->owed.active ? prepare_owed(s, err, errlen) : PGCDC_OK;
}

/* A row change (or truncate): name its table, and emit it when the table is selected. */
static int handle_row(struct stream *s, const struct pgcdc_change *ch, char *err, size_t errlen)
{
    int rc;
    if (!s->in_txn) {
        snprintf(err, errlen, "wal2json sent a change outside a transaction");
        return PGCDC_ERR_RETRY;
    }
    if (s->skipping)
        return PGCDC_OK;
    const struct pgcdc_relation *rel;
    if ((rc = pgcdc_relations_resolve(&s->rels, ch, &rel, err, errlen)) < 0)
        return rc;
    if (!rel->selected || pgcdc_signal_is(rel->schema, rel->table)) /* a request is heard */
        return pgcdc_snapshot_signal(&s->owed, s->cfg, rel->schema, rel->table, ch,
                                     s->txn.commit_lsn, err, errlen);
    if (pgcdc_snapshot_drops(&s->owed, rel->schema, rel->table, s->txn.commit_lsn))
        return PGCDC_OK; /* in an owed snapshot: the boundary rule */
    if (s->enc.nbad && (rc = pgcdc_encoding_check_change(&s->enc, ch, rel->schema, rel->table,
                                                         s->cfg->source_invalid_utf8, err,
                                                         errlen)) < 0)
        return rc;
    struct pgcdc_change named = pgcdc_relations_name(rel, ch);
    if (ch->action == PGCDC_ACT_UPDATE && s->sink->split_key_changes &&
        pgcdc_event_key_changed(&named)) {
        /* Compacted topics: the old key is deleted, the new key created. */
        if ((rc = emit(s, rel, &named, 'd', 1, err, errlen)) < 0)
            return rc;
        return emit(s, rel, &named, 'c', 0, err, errlen);
    }
    return emit(s, rel, &named, pgcdc_event_op(ch), ch->action == PGCDC_ACT_DELETE, err, errlen);
}

/*
 * Handle one wal2json message. Returns 0 or a negative code (PGCDC_STOP: a stop was
 * requested under back-pressure); *end is set once --end-lsn is reached.
 */
static int handle_change(struct stream *s, const struct pgcdc_change *ch, bool *end, char *err,
                         size_t errlen)
{
    switch (ch->action) {
    case PGCDC_ACT_BEGIN:
        return begin_txn(s, ch, end, err, errlen);
    case PGCDC_ACT_COMMIT:
        return commit_txn(s, ch, end, err, errlen);
    case PGCDC_ACT_INSERT:
    case PGCDC_ACT_UPDATE:
    case PGCDC_ACT_DELETE:
    case PGCDC_ACT_TRUNCATE:
        return handle_row(s, ch, err, errlen);
    default:
        return PGCDC_OK; /* logical messages ('M') are not row changes */
    }
}

/* Connect, check, make sure the slot exists, start streaming. */
static int start(struct stream *s, bool *fresh_slot, char *err, size_t errlen)
{
    const struct pgcdc_config *cfg = s->cfg;
    int rc = pgcdc_repl_connect(&s->repl, cfg->source_dsn, err, errlen);
    if (rc < 0 ||
        (rc = pgcdc_encoding_open(&s->enc, pgcdc_repl_server_encoding(s->repl), err, errlen)) < 0)
        return rc;
    if ((rc = pgcdc_repl_preflight(s->repl, err, errlen)) < 0)
        return rc;
    /* Once per process: the selection is checked against the source. */
    if (!s->tables_checked) {
        if ((rc = pgcdc_relations_check(pgcdc_repl_conn(s->repl), cfg, err, errlen)) < 0)
            return rc;
        s->tables_checked = true;
    }
    return pgcdc_slot_find(&s->slot, s->repl, s->sink->ops->resume_lsn(s->sink), fresh_slot,
                           err, errlen);
}

static int start_streaming(struct stream *s, char *err, size_t errlen)
{
    const struct pgcdc_config *cfg = s->cfg;
    uint64_t startpos = s->skip_upto;
    int rc = pgcdc_slot_start(&s->slot, s->repl, startpos, err, errlen);
    if (rc < 0)
        return rc;
    s->streaming = true;
    atomic_store(&pgcdc_metrics.connected, 1);
    pgcdc_metrics_progress();
    if ((rc = pgcdc_slot_mark_streamed(&s->slot, err, errlen)) < 0)
        return rc;
    if (s->sink->ops->started) {
        if ((rc = s->sink->ops->started(s->sink, err, errlen)) < 0)
            return rc;
        uint64_t resume = s->sink->ops->resume_lsn(s->sink);
        if (resume > s->skip_upto)
            s->skip_upto = resume;
    }
    char l[PGCDC_LSN_BUFLEN];
    pgcdc_log(PGCDC_LOG_INFO, "streaming", "slot", cfg->source_slot, "db",
              pgcdc_repl_dbname(s->repl), "from", pgcdc_lsn_format(startpos, l), NULL);
    return PGCDC_OK;
}

static void progress(struct stream *s, int64_t now)
{
    if (now - s->last_progress_ms < PROGRESS_INTERVAL_MS)
        return;
    s->last_progress_ms = now;
    char ev[24], tx[24], c[PGCDC_LSN_BUFLEN], r[PGCDC_LSN_BUFLEN], inflight[24];
    snprintf(ev, sizeof(ev), "%" PRIu64, s->n_events);
    snprintf(tx, sizeof(tx), "%" PRIu64, s->n_txns);
    snprintf(inflight, sizeof(inflight), "%zu", pgcdc_txn_track_inflight(s->track));
    pgcdc_log(PGCDC_LOG_INFO, "progress", "events", ev, "txns", tx, "confirmed",
              pgcdc_lsn_format(s->sent_flush, c), "received", pgcdc_lsn_format(s->received, r),
              "inflight", inflight, NULL);
}

/*
 * With nothing open, unsynced or unacknowledged, everything before the last keepalive's
 * walEnd is durable or not ours: confirm it (idle tables must not pin WAL). Returns true
 * when that reaches --end-lsn, or when poll mode disconnects now (s->leave).
 */
static bool caught_up(struct stream *s, int64_t now)
{
    if (s->in_txn || s->dirty || pgcdc_txn_track_inflight(s->track) > 0 || !s->idle_end)
        return false;
    pgcdc_txn_track_idle(s->track, s->idle_end);
    pgcdc_metrics_progress(); /* idle and in touch with the server */
    s->leave = pgcdc_poll_idle(&s->poll, s->idle_end, s->n_data, now);
    return s->leave || end_reached_at(s, s->idle_end);
}

/* Note the server's position from a message: the metrics' server_wal_end. */
static void note_server_pos(uint64_t pos)
{
    if (pos > atomic_load(&pgcdc_metrics.server_wal_end))
        atomic_store(&pgcdc_metrics.server_wal_end, pos);
}

/* One message from the server: a change to handle, or a keepalive to note. */
static int on_message(struct stream *s, const struct pgcdc_repl_msg *msg, bool *end, char *err,
                      size_t errlen)
{
    int rc;
    if (msg->type == PGCDC_REPL_DATA) {
        struct pgcdc_change ch;
        const char *data = msg->data;
        size_t len = msg->len;
        if (s->enc.kind != PGCDC_ENC_UTF8 &&
            (rc = pgcdc_encoding_to_utf8(&s->enc, &data, &len, err, errlen)) < 0)
            return rc;
        if ((rc = pgcdc_decode(&s->dec, data, len, &ch, err, errlen)) < 0)
            return rc;
        note_server_pos(msg->data_start);
        s->n_data++;
        return handle_change(s, &ch, end, err, errlen);
    }
    /* Keepalive: walEnd is the sender's position. With nothing open or unsynced,
     * everything before it is either durable or not ours: confirm it (idle tables
     * must not pin WAL). */
    note_server_pos(msg->wal_end);
    if (!s->in_txn && msg->wal_end > s->idle_end) {
        /* Applied once everything before it is durable (see caught_up): the server
         * sends no further keepalive once we report having written up to here. */
        s->idle_end = msg->wal_end;
        if (msg->wal_end > s->received)
            s->received = msg->wal_end;
    }
    if (!s->in_txn && pgcdc_snapshot_due(&s->owed, msg->wal_end) &&
        (rc = run_owed(s, err, errlen)) < 0)
        return rc;
    if (msg->reply_requested)
        return send_status(s, true, err, errlen);
    return PGCDC_OK;
}

/* Nothing to read: wait on the socket until the next thing is due. */
static int wait_input(struct stream *s, bool inflight, char *err, size_t errlen)
{
    int64_t wait = s->cfg->status_interval_ms - (pgcdc_mono_ms() - s->last_status_ms);
    if (inflight || s->dirty)
        wait = 5; /* acknowledgements are due soon */
    if (wait > 100)
        wait = 100; /* re-check the stop flag often */
    if (wait < 1)
        wait = 1;
    int rc = pgcdc_repl_wait(s->repl, (int)wait);
    if (rc < 0)
        snprintf(err, errlen, "replication connection lost while waiting");
    return rc;
}

/*
 * The timers after each read (got: 1 a message, 0 none): group commit, the idle
 * confirmation (*end once it reaches --end-lsn), liveness, status, progress, and the wait
 * when the input is drained.
 */
static int tick(struct stream *s, int got, bool *end, char *err, size_t errlen)
{
    int rc;
    bool drained = got == 0;
    size_t n_inflight = pgcdc_txn_track_inflight(s->track);
    bool inflight = n_inflight > 0;
    /* Committed transactions waiting to become durable (the open one cannot be). */
    bool waiting = n_inflight > (pgcdc_txn_track_open(s->track) ? 1u : 0u);
    int64_t now = pgcdc_mono_ms(); /* once per message: the timers below share it */
    if (got == 1) {
        s->last_recv_ms = now;
        s->ping_sent_ms = 0;
    }
    /* Group commit: sync when the input is drained and a commit waits, and at least
     * every SYNC_INTERVAL_MS while anything is unsynced or unacknowledged. */
    if ((waiting && drained) ||
        ((s->dirty || inflight) && now - s->last_sync_ms >= SYNC_INTERVAL_MS) ||
        now - s->last_sync_ms >= s->cfg->status_interval_ms) {
        if ((rc = sink_sync(s, err, errlen)) < 0)
            return rc;
        /* Tell the server soon after something became durable: less retained WAL,
         * lower latency for --end-lsn, and a keepalive back when it is idle. */
        if (flush_pos(s) != s->sent_flush &&
            now - s->last_status_ms >= SYNC_INTERVAL_MS &&
            (rc = send_status(s, true, err, errlen)) < 0)
            return rc;
    }
    if (caught_up(s, now)) {
        *end = true;
        return PGCDC_OK;
    }
    if ((rc = check_alive(s, now, err, errlen)) < 0)
        return rc;
    if (now - s->last_status_ms >= s->cfg->status_interval_ms &&
        (rc = send_status(s, false, err, errlen)) < 0)
        return rc;
    progress(s, now);
    return drained ? wait_input(s, inflight, err, errlen) : PGCDC_OK;
}

/* Stream until stopped, the end LSN, or an error (returned, negative). */
static int loop(struct stream *s, enum loop_outcome *how, char *err, size_t errlen)
{
    for (;;) {
        if (pgcdc_stop_requested)
            break;
        struct pgcdc_repl_msg msg;
        bool end = false;
        int got = pgcdc_repl_read(s->repl, &msg, err, errlen), rc = PGCDC_OK;
        if (got < 0)
            return got;
        if (got == 1)
            rc = on_message(s, &msg, &end, err, errlen);
        if (rc == PGCDC_STOP)
            break;
        if (rc < 0)
            return rc;
        if (!end && (rc = tick(s, got, &end, err, errlen)) < 0)
            return rc;
        if (end) {
            *how = s->leave ? LOOP_IDLE : LOOP_END_REACHED;
            return PGCDC_OK;
        }
    }
    *how = LOOP_STOPPED;
    return PGCDC_OK;
}

/*
 * Make what was received durable, then say so to the server and end the stream; `stopping`:
 * the run ends here (a poll's end has its own line).
 */
static int finish(struct stream *s, bool stopping, char *err, size_t errlen)
{
    /* SIGTERM must be done within 10 s: 6 s for the sink, up to 3 s for the server. */
    int rc = s->sink->ops->flush(s->sink, 6000, err, errlen);
    if (rc == PGCDC_AGAIN) {
        /* Brokers unreachable: what is unacknowledged is simply not confirmed, and the
         * server sends it again after the restart. Stopping is still a success. */
        pgcdc_log(PGCDC_LOG_WARN, "stopping with unacknowledged changes", "detail", err, NULL);
        rc = PGCDC_OK;
    }
    /* Whatever happened, confirm exactly what is durable before going. */
    uint64_t confirmed = flush_pos(s);
    if (s->repl) {
        char e2[512];
        if (pgcdc_repl_finish(s->repl, confirmed, e2, sizeof(e2)) < 0)
            pgcdc_log(PGCDC_LOG_WARN, "could not send the final status", "error", e2, NULL);
    }
    char l[PGCDC_LSN_BUFLEN];
    if (stopping)
        pgcdc_log(PGCDC_LOG_INFO, "stopped", "confirmed", pgcdc_lsn_format(confirmed, l), NULL);
    if (rc == PGCDC_OK)
        *err = '\0';
    return rc;
}

/*
 * After a lost connection: make durable what can be, drop the rest (the server sends it
 * again from the confirmed LSN), and skip what the sink already holds.
 */
static void reset_after_disconnect(struct stream *s)
{
    char err[512] = "";
    if (s->sink->ops->flush(s->sink, 5000, err, sizeof(err)) < 0)
        pgcdc_log(PGCDC_LOG_WARN, "could not flush the sink before reconnecting", "error", err,
                  NULL);
    uint64_t confirmed = pgcdc_txn_track_confirmed(s->track);
    err[0] = '\0';
    if (s->sink->ops->rewind(s->sink, err, sizeof(err)) < 0)
        pgcdc_log(PGCDC_LOG_WARN, "could not rewind the sink", "error", err, NULL);
    pgcdc_txn_track_abort_all(s->track);
    uint64_t resume = s->sink->ops->resume_lsn(s->sink);
    s->skip_upto = confirmed > resume ? confirmed : resume;
    s->in_txn = s->skipping = false;
    /* Not clean until a sync succeeds: the sink may still owe one (the file sink, a
     * checkpoint whose write failed), and an idle walEnd must not be confirmed before. */
    s->dirty = true;
    s->streaming = false;
    s->idle_end = 0;
    pgcdc_relations_reset(&s->rels); /* tables may have been renamed or repartitioned */
    atomic_store(&pgcdc_metrics.connected, 0);
    atomic_fetch_add(&pgcdc_metrics.reconnects, 1);
    pgcdc_repl_close(s->repl);
    s->repl = NULL;
}

static int open_sink(const struct pgcdc_config *cfg, struct pgcdc_sink **out, char *err,
                     size_t errlen)
{
    if (cfg->sink_type == PGCDC_SINK_KAFKA)
        return pgcdc_sink_kafka_open(out, cfg, err, errlen);
    if (cfg->sink_type == PGCDC_SINK_HTTP)
        return pgcdc_sink_http_open(out, cfg, err, errlen);
    if (cfg->sink_type == PGCDC_SINK_S3)
        return pgcdc_sink_s3_open(out, cfg, err, errlen);
    return pgcdc_sink_file_open(out, cfg, err, errlen);
}

/* Everything the run needs before its first connection. */
static int stream_open(struct stream *s, const struct pgcdc_config *cfg, uint64_t end_lsn,
                       bool once, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->cfg = cfg;
    s->end_lsn = end_lsn;
    s->once = once;
    pgcdc_poll_init(&s->poll, cfg, once);
    s->lockfd = -1;
    pgcdc_relations_init(&s->rels, cfg);
    pgcdc_slot_init(&s->slot, cfg);
    srandom((unsigned)(getpid() ^ pgcdc_now_us()));
    int rc = pgcdc_slot_lock_state_dir(cfg->state_dir, &s->lockfd, err, errlen);
    if (rc < 0 || (rc = open_sink(cfg, &s->sink, err, errlen)) < 0)
        return rc;
    s->skip_upto = s->sink->ops->resume_lsn(s->sink);
    s->confirmed_at_failure = s->skip_upto;
    s->track = pgcdc_txn_track_new(TRACK_CAPACITY, s->skip_upto);
    if (!s->track) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    s->sink->track = s->track;
    pgcdc_decoder_init(&s->dec);
    if (pgcdc_buf_append_json_str(&s->name_json, cfg->sink_kafka_topic_prefix,
                                  strlen(cfg->sink_kafka_topic_prefix)) < 0) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    s->ectx.name_json = s->name_json.data;
    s->ectx.snapshot = "false";
    s->last_progress_ms = pgcdc_mono_ms();
    if (cfg->metrics_listen)
        return pgcdc_metrics_start(cfg->metrics_listen, cfg->metrics_stall_ms, err, errlen);
    return PGCDC_OK;
}

/* Free what stream_open and the sessions built; the lock goes last. */
static void stream_close(struct stream *s)
{
    atomic_store(&pgcdc_metrics.connected, 0);
    pgcdc_metrics_stop();
    if (s->repl)
        pgcdc_repl_close(s->repl);
    if (s->sink)
        s->sink->ops->close(s->sink);
    pgcdc_txn_track_free(s->track);
    pgcdc_decoder_free(&s->dec);
    pgcdc_encoding_close(&s->enc);
    pgcdc_buf_free(&s->value);
    pgcdc_buf_free(&s->key);
    pgcdc_buf_free(&s->name_json);
    pgcdc_buf_free(&s->db_json);
    pgcdc_relations_free(&s->rels);
    pgcdc_snapshot_owed_free(&s->owed);
    if (s->lockfd >= 0)
        close(s->lockfd);
}

/* The connection's database, as the events' source.db. */
static int note_db(struct stream *s, char *err, size_t errlen)
{
    pgcdc_buf_reset(&s->db_json);
    const char *db = pgcdc_repl_dbname(s->repl);
    if (pgcdc_buf_append_json_str(&s->db_json, db, strlen(db)) < 0) {
        snprintf(err, errlen, "out of memory");
        return PGCDC_ERR;
    }
    s->ectx.db_json = s->db_json.data;
    return PGCDC_OK;
}

/*
 * The slot is ready to stream from: created when it is new (with the initial snapshot, or
 * without one under snapshot.mode = never), owed snapshots prepared otherwise. *done when
 * the run ends here instead (initial_only: the snapshot is the whole job).
 */
static int prepare_slot(struct stream *s, bool fresh, bool *done, char *err, size_t errlen)
{
    struct pgcdc_snapshot_out out = SNAPSHOT_OUT(s);
    uint64_t durable = 0;
    int rc = pgcdc_snapshot_prepare_slot(&s->owed, &s->slot, s->repl, &out, fresh, done, &durable,
                                         err, errlen);
    if (durable)
        s->skip_upto = durable;
    return rc;
}

/*
 * Poll mode, caught up and idle: confirm, close every source connection (replication and
 * catalog; the snapshot's close when it ends) while the sink's stay open, and sleep until
 * the next poll, which resumes from what is confirmed.
 */
static int let_go(struct stream *s, char *err, size_t errlen)
{
    int rc = finish(s, false, err, errlen);
    if (rc < 0)
        return rc;
    pgcdc_poll_end(&s->poll, s->n_events, s->n_txns, flush_pos(s));
    pgcdc_repl_close(s->repl);
    s->repl = NULL;
    pgcdc_relations_reset(&s->rels);
    s->streaming = s->leave = false;
    s->idle_end = 0;
    s->attempt = 0;
    uint64_t durable = pgcdc_txn_track_confirmed(s->track);
    uint64_t resume = s->sink->ops->resume_lsn(s->sink);
    s->skip_upto = durable > resume ? durable : resume;
    atomic_store(&pgcdc_metrics.connected, 0);
    pgcdc_poll_sleep(&s->poll);
    return PGCDC_OK;
}

/*
 * One connection's life: connect, the slot (and snapshot), stream until it ends. *done
 * when the run ends with the result returned; otherwise PGCDC_OK after a poll (the next
 * follows), or a failure for after_failure to judge.
 */
static int session(struct stream *s, bool *done, char *err, size_t errlen)
{
    bool fresh = false;
    int64_t connect_ms = pgcdc_mono_ms();
    int rc = start(s, &fresh, err, errlen);
    if (rc < 0)
        return rc;
    if (s->once && !s->end_lsn && !(s->end_lsn = s->slot.server_xlogpos)) {
        snprintf(err, errlen, "IDENTIFY_SYSTEM gave no WAL position for run --once to reach");
        *done = true;
        return PGCDC_ERR;
    }
    if ((rc = note_db(s, err, errlen)) < 0) {
        *done = true; /* out of memory: no retry */
        return rc;
    }
    if ((rc = prepare_slot(s, fresh, done, err, errlen)) < 0 || *done ||
        (rc = start_streaming(s, err, errlen)) < 0)
        return rc;
    s->busy_since = 0;
    s->last_status_ms = s->last_sync_ms = s->last_recv_ms = pgcdc_mono_ms();
    s->ping_sent_ms = 0;
    pgcdc_poll_begin(&s->poll, connect_ms, s->slot.server_xlogpos, flush_pos(s), s->n_events,
                     s->n_txns);
    enum loop_outcome how;
    if ((rc = loop(s, &how, err, errlen)) < 0)
        return rc;
    if (how == LOOP_IDLE)
        return let_go(s, err, errlen);
    rc = finish(s, true, err, errlen); /* stopped or the end reached: either way, cleanly */
    if (rc == PGCDC_ERR_RETRY && how == LOOP_END_REACHED && !pgcdc_stop_requested)
        return rc; /* the last flush failed for now (a refused batch): go again for the end */
    *done = true;
    if (rc == PGCDC_ERR_RETRY) {
        /* Stopping: what the sink could not make durable is not confirmed, and the server
         * sends it again after the restart. */
        pgcdc_log(PGCDC_LOG_WARN, "stopping with unacknowledged changes", "detail", err, NULL);
        rc = PGCDC_OK;
    }
    if (s->once && how == LOOP_END_REACHED)
        pgcdc_poll_end(&s->poll, s->n_events, s->n_txns, flush_pos(s));
    return rc;
}

/* The slot is held by another process: retry for source.slot_busy_timeout_ms, then fail. */
static int slot_busy(struct stream *s, char *err, size_t errlen)
{
    if (!s->busy_since)
        s->busy_since = pgcdc_mono_ms();
    if (pgcdc_mono_ms() - s->busy_since > s->cfg->source_slot_busy_timeout_ms) {
        strncat(err,
                "; another process keeps the slot busy: stop it, or use another "
                "source.slot",
                errlen - strlen(err) - 1);
        return PGCDC_ERR;
    }
    return PGCDC_ERR_RETRY;
}

/*
 * A session failed with rc. Returns PGCDC_ERR_RETRY once the stream is reset and the
 * backoff slept, to go again; otherwise the run's result (0 when a stop interrupted it).
 */
static int after_failure(struct stream *s, int rc, char *err, size_t errlen)
{
    if (rc == PGCDC_ERR_BUSY)
        rc = slot_busy(s, err, errlen);
    if ((rc == PGCDC_ERR_RETRY || rc == PGCDC_STOP || rc == PGCDC_AGAIN) && pgcdc_stop_requested) {
        pgcdc_log(PGCDC_LOG_INFO, "stopped", "detail", err, NULL);
        return PGCDC_OK;
    }
    if (rc != PGCDC_ERR_RETRY) {
        /* Fatal: keep what is durable confirmed, nothing more. */
        if (s->repl && s->streaming) {
            char e2[256] = "";
            s->sink->ops->flush(s->sink, 5000, e2, sizeof(e2));
            pgcdc_repl_finish(s->repl, flush_pos(s), e2, sizeof(e2));
        }
        return rc;
    }
    /* Back off further each time until something gets confirmed again: a stream that
     * starts but fails at once (a full disk, a rejected message) must not make the
     * server decode the same transactions twice a second. */
    uint64_t confirmed_now = pgcdc_txn_track_confirmed(s->track);
    if (confirmed_now > s->confirmed_at_failure)
        s->attempt = 0;
    s->confirmed_at_failure = confirmed_now;
    int ms = pgcdc_poll_backoff_ms(s->attempt++);
    atomic_store(&pgcdc_metrics.poll_failed, 1); /* /healthz in poll mode: until a catch-up */
    char delay[16], from[PGCDC_LSN_BUFLEN];
    snprintf(delay, sizeof(delay), "%dms", ms);
    /* Where the server resends from: with Kafka, what was delivered past it comes twice. */
    pgcdc_log(PGCDC_LOG_WARN, "stream interrupted; retrying", "error", err, "backoff", delay,
              "confirmed", pgcdc_lsn_format(confirmed_now, from), NULL);
    reset_after_disconnect(s);
    *err = '\0';
    pgcdc_poll_nap(ms);
    return PGCDC_ERR_RETRY;
}

int pgcdc_stream_run(const struct pgcdc_config *cfg, uint64_t end_lsn, bool once, char *err,
                     size_t errlen)
{
    struct stream st;
    int rc = stream_open(&st, cfg, end_lsn, once, err, errlen);
    while (rc == PGCDC_OK && !pgcdc_stop_requested) {
        bool done = false;
        rc = session(&st, &done, err, errlen);
        if (done)
            break;
        if (rc == PGCDC_OK)
            continue; /* a poll ended: the next one follows */
        if ((rc = after_failure(&st, rc, err, errlen)) == PGCDC_ERR_RETRY)
            rc = PGCDC_OK; /* go again */
        else
            break;
    }
    stream_close(&st);
    return rc;
}
