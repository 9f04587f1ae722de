/*
 * slot.c — find, create and drop the replication slot, and start streaming from it with
 * wal2json's options. Each decision, and its error with the way out, is made here, and
 * state.dir/slot, the record of the slot pgcdc created, is read and written here.
 */
#include "pgcdc/slot.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pgcdc/common.h"
#include "pgcdc/errors.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/repl.h"
#include "pgcdc/snapshot_signal.h"

#define NUMERIC_AS_STRING "numeric-data-types-as-string"

void pgcdc_slot_init(struct pgcdc_slot *sl, const struct pgcdc_config *cfg)
{
    memset(sl, 0, sizeof(*sl));
    sl->cfg = cfg;
    sl->numeric_strings = -1;
    snprintf(sl->statefile, sizeof(sl->statefile), "%s/slot", cfg->state_dir);
}

static const char *const state_names[] = {
    [PGCDC_SLOT_SNAPSHOTTING] = "snapshotting",
    [PGCDC_SLOT_CREATED] = "created",
    [PGCDC_SLOT_STREAMING] = "streaming",
};

/*
 * state.dir/slot, one key=value a line:
 *   slot=pgcdc
 *   system_identifier=7312345678901234567
 *   consistent_point=0/16B2F40
 *   state=snapshotting | created | streaming
 * A file with the slot line alone was written by an older pgcdc once streaming began: it
 * reads as streaming, with the server and the consistent point unknown (not checked).
 */
int pgcdc_slot_read_record(struct pgcdc_slot *sl, char *err, size_t errlen)
{
    struct pgcdc_slot_record *r = &sl->rec;
    memset(r, 0, sizeof(*r));
    FILE *fp = fopen(sl->statefile, "r");
    if (!fp) {
        if (errno == ENOENT)
            return PGCDC_OK;
        snprintf(err, errlen, "cannot read %s: %s; fix its permissions", sl->statefile,
                 strerror(errno));
        return PGCDC_ERR_CONFIG;
    }
    char line[512];
    bool bad = false;
    r->state = PGCDC_SLOT_STREAMING;
    while (fgets(line, sizeof(line), fp)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *v = strchr(line, '=');
        if (!v)
            continue;
        *v++ = '\0';
        if (strcmp(line, "slot") == 0)
            snprintf(r->slot, sizeof(r->slot), "%s", v);
        else if (strcmp(line, "system_identifier") == 0)
            snprintf(r->sysid, sizeof(r->sysid), "%s", v);
        else if (strcmp(line, "consistent_point") == 0 &&
                 pgcdc_lsn_parse_str(v, &r->created_lsn) < 0)
            bad = true;
        else if (strcmp(line, "state") == 0)
            for (int i = PGCDC_SLOT_SNAPSHOTTING; i <= PGCDC_SLOT_STREAMING; i++)
                if (strcmp(v, state_names[i]) == 0)
                    r->state = (enum pgcdc_slot_state)i;
    }
    fclose(fp);
    if (!r->slot[0] || bad) {
        snprintf(err, errlen,
                 "%s is unreadable: restore it from a backup, or move "
                 "state.dir aside (see docs/operations.md, \"state.dir lost\")",
                 sl->statefile);
        return PGCDC_ERR_CONFIG;
    }
    r->present = true;
    return PGCDC_OK;
}

int pgcdc_slot_sync_dir_of(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int pgcdc_slot_replace_file(FILE *fp, bool written, const char *tmp, const char *path)
{
    if (!written || ferror(fp) || fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        int e = errno;
        fclose(fp);
        errno = e;
        return -1;
    }
    if (fclose(fp) != 0 || rename(tmp, path) != 0 || pgcdc_slot_sync_dir_of(path) != 0)
        return -1;
    return 0;
}

/* Write sl->rec to state.dir/slot: tmp, fsync, rename, fsync the directory. */
static int write_record(struct pgcdc_slot *sl, char *err, size_t errlen)
{
    const struct pgcdc_slot_record *r = &sl->rec;
    char tmp[4200], lsn[PGCDC_LSN_BUFLEN];
    snprintf(tmp, sizeof(tmp), "%s.tmp", sl->statefile);
    if (mkdir(sl->cfg->state_dir, 0755) < 0 && errno != EEXIST)
        goto fail;
    FILE *fp = fopen(tmp, "w");
    if (!fp)
        goto fail;
    int w = fprintf(fp, "slot=%s\nsystem_identifier=%s\nconsistent_point=%s\nstate=%s\n", r->slot,
                    r->sysid, pgcdc_lsn_format(r->created_lsn, lsn), state_names[r->state]);
    if (pgcdc_slot_replace_file(fp, w >= 0, tmp, sl->statefile) < 0)
        goto fail;
    return PGCDC_OK;
fail:
    snprintf(err, errlen, "cannot write %s: %s", sl->statefile, strerror(errno));
    return pgcdc_errors_errno(errno, PGCDC_ERRFILE_IO);
}

int pgcdc_slot_forget(struct pgcdc_slot *sl, char *err, size_t errlen)
{
    char snap[4200];
    memset(&sl->rec, 0, sizeof(sl->rec));
    /* The snapshot record belongs to the slot: the next slot takes its own snapshot. */
    snprintf(snap, sizeof(snap), "%s/snapshot", sl->cfg->state_dir);
    if (unlink(snap) < 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove %s: %s", snap, strerror(errno));
        return PGCDC_ERR;
    }
    if (unlink(sl->statefile) < 0) {
        if (errno == ENOENT)
            return PGCDC_OK;
        goto fail;
    }
    if (pgcdc_slot_sync_dir_of(sl->statefile) < 0)
        goto fail;
    return PGCDC_OK;
fail:
    snprintf(err, errlen, "cannot remove %s: %s", sl->statefile, strerror(errno));
    return PGCDC_ERR;
}

int pgcdc_slot_mark_streamed(struct pgcdc_slot *sl, char *err, size_t errlen)
{
    if (sl->rec.present && sl->rec.state == PGCDC_SLOT_STREAMING && sl->rec.sysid[0])
        return PGCDC_OK;
    if (sl->rec.present && !sl->rec.sysid[0]) {
        /* An older pgcdc's record: complete it with what this connection learnt. */
        snprintf(sl->rec.sysid, sizeof(sl->rec.sysid), "%s", sl->sysid);
        if (!sl->rec.created_lsn)
            sl->rec.created_lsn = sl->server_confirmed;
    }
    if (!sl->rec.present) {
        /* Adopted (snapshot.mode = never, or a sink already past it): the slot's position
         * now stands in for its creation, since confirmed_flush_lsn never goes back. */
        sl->rec.present = true;
        snprintf(sl->rec.slot, sizeof(sl->rec.slot), "%s", sl->cfg->source_slot);
        snprintf(sl->rec.sysid, sizeof(sl->rec.sysid), "%s", sl->sysid);
        sl->rec.created_lsn = sl->server_confirmed;
    }
    sl->rec.state = PGCDC_SLOT_STREAMING;
    return write_record(sl, err, errlen);
}

int pgcdc_slot_identify(struct pgcdc_slot *sl, struct pgcdc_repl *repl, char *err, size_t errlen)
{
    PGconn *c = (PGconn *)pgcdc_repl_conn(repl);
    PGresult *res = PQexec(c, "IDENTIFY_SYSTEM");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
        int rc = pgcdc_errors_pg(c, res, PGCDC_ERRCTX_SOURCE);
        snprintf(err, errlen, "IDENTIFY_SYSTEM failed: %s",
                 res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(c));
        err[strcspn(err, "\n")] = '\0';
        PQclear(res);
        return rc;
    }
    snprintf(sl->sysid, sizeof(sl->sysid), "%s", PQgetvalue(res, 0, 0));
    /* systemid | timeline | xlogpos | dbname: xlogpos is the server's flushed position. */
    if (PQnfields(res) < 3 || pgcdc_lsn_parse_str(PQgetvalue(res, 0, 2), &sl->server_xlogpos) < 0)
        sl->server_xlogpos = 0;
    PQclear(res);
    return PGCDC_OK;
}

/* The three ways out of a slot that state.dir does not record (README, "Choices"). */
#define WAYS_OUT                                                                                   \
    "restore state.dir from a backup; or set snapshot.mode = never to continue from the "          \
    "slot's confirmed position; or `pgcdc slot drop` to start over with a new snapshot"

/* The slot does not exist: new (the caller creates it), or dropped under us (fatal). */
static int slot_missing(const struct pgcdc_config *cfg, const struct pgcdc_slot_record *rec,
                        enum pgcdc_slot_action *act, char *err, size_t errlen)
{
    if (rec->present && rec->state != PGCDC_SLOT_SNAPSHOTTING) {
        snprintf(err, errlen,
                 "replication slot \"%s\" no longer exists (dropped while pgcdc was "
                 "stopped or running?): the changes since the last confirmed LSN are gone. "
                 "To start over with a fresh snapshot, remove %s and the sink's data, "
                 "then run again",
                 cfg->source_slot, cfg->state_dir);
        return PGCDC_ERR;
    }
    if (!cfg->source_create_slot) {
        snprintf(err, errlen,
                 "replication slot \"%s\" does not exist: create it with `pgcdc slot "
                 "create`, or set source.create_slot = true",
                 cfg->source_slot);
        return PGCDC_ERR;
    }
    /* New; or ours, gone before its snapshot became durable: nothing was streamed after. */
    *act = PGCDC_SLOT_CREATE;
    return PGCDC_OK;
}

/* The slot exists and state.dir records it: stream from it, or retake a cut snapshot. */
static int slot_recorded(const struct pgcdc_config *cfg, const struct pgcdc_slot_record *rec,
                         const struct pgcdc_slot_info *info, uint64_t sink_resume_lsn,
                         enum pgcdc_slot_action *act, char *err, size_t errlen)
{
    *act = PGCDC_SLOT_USE;
    if (rec->state == PGCDC_SLOT_STREAMING || cfg->snapshot_mode == PGCDC_SNAPSHOT_NEVER)
        return PGCDC_OK;
    if (rec->state == PGCDC_SLOT_CREATED) {
        snprintf(err, errlen,
                 "replication slot \"%s\" was made by `pgcdc slot create`, without a snapshot, "
                 "and snapshot.mode = %s needs the snapshot the slot exports when it is "
                 "created: set snapshot.mode = never to stream from the slot, or `pgcdc slot "
                 "drop` it and run again to take the snapshot",
                 cfg->source_slot,
                 cfg->snapshot_mode == PGCDC_SNAPSHOT_INITIAL_ONLY ? "initial_only" : "initial");
        return PGCDC_ERR_CONFIG;
    }
    /* Snapshotting: it became durable just before a crash, or it was cut short; with its
     * tables recorded, the rest is taken at a new point (snapshot.h). */
    if (rec->resumable || (sink_resume_lsn > 0 && sink_resume_lsn >= rec->created_lsn))
        return PGCDC_OK;
    if (info->active) {
        snprintf(err, errlen,
                 "replication slot \"%s\" must be recreated to take the snapshot a crash cut "
                 "short, but it is in use by pid %d: stop that process",
                 cfg->source_slot, info->active_pid);
        return PGCDC_ERR_BUSY;
    }
    *act = PGCDC_SLOT_RECREATE;
    return PGCDC_OK;
}

int pgcdc_slot_decide(const struct pgcdc_config *cfg, const struct pgcdc_slot_record *rec,
                      const struct pgcdc_slot_info *info, const char *sysid,
                      uint64_t sink_resume_lsn, enum pgcdc_slot_action *act, char *err,
                      size_t errlen)
{
    const char *slot = cfg->source_slot;
    char a[PGCDC_LSN_BUFLEN], b[PGCDC_LSN_BUFLEN];
    *act = PGCDC_SLOT_USE;
    if (rec->present && strcmp(rec->slot, slot) != 0) {
        snprintf(err, errlen,
                 "state.dir \"%s\" records the replication slot \"%s\", not source.slot \"%s\": "
                 "set source.slot = %s, or give \"%s\" its own state.dir",
                 cfg->state_dir, rec->slot, slot, rec->slot, slot);
        return PGCDC_ERR_CONFIG;
    }
    if (rec->present && rec->sysid[0] && sysid && sysid[0] && strcmp(rec->sysid, sysid) != 0) {
        snprintf(err, errlen,
                 "state.dir \"%s\" records slot \"%s\" on the server with system_identifier %s, "
                 "but source.dsn reaches system_identifier %s: point source.dsn at that "
                 "server, or give this one its own state.dir",
                 cfg->state_dir, slot, rec->sysid, sysid);
        return PGCDC_ERR_CONFIG;
    }
    if (!info->exists)
        return slot_missing(cfg, rec, act, err, errlen);
    if (strcmp(info->plugin, "wal2json") != 0) {
        snprintf(err, errlen,
                 "replication slot \"%s\" uses the plugin \"%s\", pgcdc needs wal2json: pick "
                 "another source.slot, or drop that slot if it is unused",
                 slot, info->plugin);
        return PGCDC_ERR;
    }
    if (rec->present && info->confirmed_flush < rec->created_lsn) {
        /* A slot's confirmed position starts at its consistent point and never goes back:
         * this one began before ours did, so it is someone else's. */
        snprintf(err, errlen,
                 "replication slot \"%s\" is not the one state.dir \"%s\" records (created at "
                 "%s; this one is at %s): pgcdc will not use or drop it. Move state.dir aside, "
                 "then: " WAYS_OUT,
                 slot, cfg->state_dir, pgcdc_lsn_format(rec->created_lsn, a),
                 pgcdc_lsn_format(info->confirmed_flush, b));
        return PGCDC_ERR_CONFIG;
    }
    if (rec->present)
        return slot_recorded(cfg, rec, info, sink_resume_lsn, act, err, errlen);
    /* No record: never drop it. Use it when told to, or when the sink already holds
     * everything the slot no longer has (a file checkpoint restored, docs/operations.md). */
    if (cfg->snapshot_mode == PGCDC_SNAPSHOT_NEVER ||
        (sink_resume_lsn > 0 && sink_resume_lsn >= info->confirmed_flush))
        return PGCDC_OK;
    snprintf(err, errlen,
             "replication slot \"%s\" exists, but state.dir \"%s\" has no record of pgcdc "
             "creating it (state.dir lost or emptied, or a slot made by someone else), and "
             "pgcdc will not drop it and the changes it holds: " WAYS_OUT,
             slot, cfg->state_dir);
    return PGCDC_ERR_CONFIG;
}

/* Whether state.dir/snapshot records the tables of a snapshot this slot began. */
static int note_resumable(struct pgcdc_slot *sl, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/snapshot", sl->cfg->state_dir);
    if (access(path, F_OK) == 0) {
        sl->rec.resumable = sl->rec.present;
        return PGCDC_OK;
    }
    if (errno == ENOENT)
        return PGCDC_OK;
    snprintf(err, errlen, "cannot read %s: %s; fix its permissions", path, strerror(errno));
    return PGCDC_ERR_CONFIG;
}

int pgcdc_slot_find(struct pgcdc_slot *sl, struct pgcdc_repl *repl, uint64_t sink_resume_lsn,
                    bool *fresh, char *err, size_t errlen)
{
    const struct pgcdc_config *cfg = sl->cfg;
    struct pgcdc_slot_info info;
    enum pgcdc_slot_action act;
    *fresh = false;
    int rc = pgcdc_repl_slot_info(repl, cfg->source_slot, &info, err, errlen);
    if (rc < 0 || (rc = pgcdc_slot_identify(sl, repl, err, errlen)) < 0 ||
        (rc = pgcdc_slot_read_record(sl, err, errlen)) < 0 ||
        (rc = note_resumable(sl, err, errlen)) < 0 ||
        (rc = pgcdc_slot_decide(cfg, &sl->rec, &info, sl->sysid, sink_resume_lsn, &act, err,
                                errlen)) < 0)
        return rc;
    sl->server_confirmed = info.exists ? info.confirmed_flush : 0;
    if (act == PGCDC_SLOT_USE) {
        if (!sl->rec.present)
            pgcdc_log(PGCDC_LOG_INFO, "using the existing slot, which state.dir had no record of",
                      "slot", cfg->source_slot, "reason",
                      cfg->snapshot_mode == PGCDC_SNAPSHOT_NEVER ? "snapshot.mode=never"
                                                                 : "the sink holds its position",
                      NULL);
        return PGCDC_OK;
    }
    if (act == PGCDC_SLOT_RECREATE) {
        pgcdc_log(PGCDC_LOG_WARN,
                  "the snapshot pgcdc started on this slot never became durable; recreating "
                  "the slot to take it again",
                  "slot", cfg->source_slot, NULL);
        if ((rc = pgcdc_repl_drop_slot(repl, cfg->source_slot, err, errlen)) < 0)
            return rc;
    } else if (sl->rec.present) {
        pgcdc_log(PGCDC_LOG_WARN,
                  "the slot of a snapshot that never became durable is gone; taking it again",
                  "slot", cfg->source_slot, NULL);
    }
    sl->server_confirmed = 0;
    *fresh = true;
    return PGCDC_OK;
}

int pgcdc_slot_create(struct pgcdc_slot *sl, struct pgcdc_repl *repl, char *snapshot_name,
                      size_t snaplen, enum pgcdc_slot_state state, uint64_t *consistent, char *err,
                      size_t errlen)
{
    const char *slot = sl->cfg->source_slot;
    *consistent = 0;
    int rc = pgcdc_repl_create_slot(repl, slot, snapshot_name, snaplen, consistent, err, errlen);
    if (rc < 0)
        return rc;
    sl->rec =
        (struct pgcdc_slot_record){.present = true, .created_lsn = *consistent, .state = state};
    snprintf(sl->rec.slot, sizeof(sl->rec.slot), "%s", slot);
    snprintf(sl->rec.sysid, sizeof(sl->rec.sysid), "%s", sl->sysid);
    sl->server_confirmed = 0;
    if ((rc = write_record(sl, err, errlen)) < 0) {
        /* Created a moment ago and not recorded: no later run could tell it is ours. */
        char e2[256];
        if (pgcdc_repl_drop_slot(repl, slot, e2, sizeof(e2)) < 0)
            pgcdc_log(PGCDC_LOG_WARN, "could not drop the slot just created", "slot", slot, "error",
                      e2, NULL);
        memset(&sl->rec, 0, sizeof(sl->rec));
        return rc;
    }
    if (!snapshot_name) { /* with a snapshot, the snapshot's own line says it */
        char l[PGCDC_LSN_BUFLEN];
        pgcdc_log(PGCDC_LOG_INFO, "created replication slot", "slot", slot, "consistent_point",
                  pgcdc_lsn_format(*consistent, l), NULL);
    }
    return PGCDC_OK;
}

uint64_t pgcdc_slot_flush_to_report(const struct pgcdc_slot *sl, uint64_t durable)
{
    return durable > sl->server_confirmed ? durable : sl->server_confirmed;
}

void pgcdc_slot_note_numeric_strings(struct pgcdc_slot *sl, bool supported)
{
    if (sl->numeric_strings == (supported ? 1 : 0))
        return;
    sl->numeric_strings = supported ? 1 : 0;
    if (!supported)
        pgcdc_log(PGCDC_LOG_WARN,
                  "the source's wal2json is older than 2.6: numeric and float NaN and "
                  "Infinity values arrive as null (upgrade wal2json to keep them)",
                  NULL);
}

/*
 * wal2json's own table filter only knows "schema.table" with '*' for a whole part;
 * we pass it when the patterns fit (less decoding traffic), and always filter here too.
 */
static bool wal2json_pattern_ok(const char *list)
{
    char buf[4096];
    if (!list || snprintf(buf, sizeof(buf), "%s", list) >= (int)sizeof(buf))
        return false;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        char *dot = strchr(tok, '.');
        if (!dot || strchr(dot + 1, '.') || strpbrk(tok, "\\\"' "))
            return false;
        *dot = '\0';
        const char *parts[2] = {tok, dot + 1};
        for (int i = 0; i < 2; i++)
            if (strchr(parts[i], '*') && strcmp(parts[i], "*") != 0)
                return false;
    }
    return true;
}

static void strip_spaces(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (; *src && o + 1 < cap; src++)
        if (*src != ' ')
            dst[o++] = *src;
    dst[o] = '\0';
}

/* Room for the fixed options, two table patterns and the numeric option, NULL-terminated. */
#define MAX_OPTS 40

/* Pattern text handed to wal2json, with spaces taken out. */
struct patterns {
    char inc[4096], exc[4096];
};

/*
 * wal2json's options, NULL-terminated in opts (the strings borrowed from here, p and
 * static storage); returns how many. add-tables/filter-tables only when every pattern
 * fits its syntax, numeric-data-types-as-string last unless the plugin is known to
 * refuse it.
 */
static int plugin_options(const struct pgcdc_slot *sl, const char **opts, struct patterns *p)
{
    const struct pgcdc_config *cfg = sl->cfg;
    static const char *const fixed[] = {"format-version",    "2", "include-xids",        "1",
                                        "include-timestamp", "1", "include-lsn",         "1",
                                        "include-pk",        "1", "include-type-oids",   "1",
                                        "include-types",     "0", "include-transaction", "1"};
    int n = 0;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        opts[n++] = fixed[i];
    /* wal2json filters by leaf name; with partitions_as_root selection is by root name. */
    bool server_filter = !cfg->source_partitions_as_root;
    if (server_filter && cfg->source_tables_include &&
        wal2json_pattern_ok(cfg->source_tables_include)) {
        strip_spaces(p->inc, sizeof(p->inc), cfg->source_tables_include);
        /* Snapshot requests arrive through the signal table, selected or not. */
        strncat(p->inc, "," PGCDC_SIGNAL_SCHEMA "." PGCDC_SIGNAL_TABLE,
                sizeof(p->inc) - strlen(p->inc) - 1);
        opts[n++] = "add-tables";
        opts[n++] = p->inc;
    }
    if (server_filter && cfg->source_tables_exclude &&
        wal2json_pattern_ok(cfg->source_tables_exclude)) {
        strip_spaces(p->exc, sizeof(p->exc), cfg->source_tables_exclude);
        opts[n++] = "filter-tables";
        opts[n++] = p->exc;
    }
    if (sl->numeric_strings != 0) {
        opts[n++] = NUMERIC_AS_STRING;
        opts[n++] = "1";
    }
    opts[n] = NULL;
    return n;
}

int pgcdc_slot_start(struct pgcdc_slot *sl, struct pgcdc_repl *repl, uint64_t startpos, char *err,
                     size_t errlen)
{
    const char *opts[MAX_OPTS];
    struct patterns p;
    int n = plugin_options(sl, opts, &p);
    const char *slot = sl->cfg->source_slot;
    int rc = pgcdc_repl_start(repl, slot, startpos, opts, err, errlen);
    if (rc < 0 && sl->numeric_strings != 0 && strstr(err, NUMERIC_AS_STRING)) {
        /* wal2json before 2.6 refuses the option; the connection is still usable. */
        pgcdc_slot_note_numeric_strings(sl, false);
        opts[n - 2] = NULL;
        *err = '\0';
        rc = pgcdc_repl_start(repl, slot, startpos, opts, err, errlen);
    } else if (rc == PGCDC_OK && sl->numeric_strings < 0) {
        pgcdc_slot_note_numeric_strings(sl, true);
    }
    return rc;
}

int pgcdc_slot_lock_state_dir(const char *dir, int *lockfd, char *err, size_t errlen)
{
    char path[4096];
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "state.dir \"%s\" cannot be created: %s; create it or point "
                 "state.dir elsewhere", dir, strerror(errno));
        return PGCDC_ERR_CONFIG;
    }
    snprintf(path, sizeof(path), "%s/lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "state.dir \"%s\" is not writable: %s; fix its permissions or "
                 "point state.dir elsewhere", dir, strerror(errno));
        return PGCDC_ERR_CONFIG;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = "?";
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        if (n > 0) {
            pid[n] = '\0';
            pid[strcspn(pid, "\n")] = '\0';
        }
        snprintf(err, errlen, "state.dir \"%s\" is in use by another pgcdc (pid %s): stop it, "
                 "or give each pgcdc its own state.dir and slot", dir, pid);
        close(fd);
        return PGCDC_ERR;
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) < 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        return PGCDC_ERR;
    }
    *lockfd = fd; /* held until exit */
    return PGCDC_OK;
}
