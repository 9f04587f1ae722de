/*
 * slot.c — find, create and drop the replication slot, and start streaming from it with
 * wal2json's options. Each decision, and its error with the way out, is made here.
 */
#include "pgcdc/slot.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/log.h"
#include "pgcdc/lsn.h"
#include "pgcdc/repl.h"

#define NUMERIC_AS_STRING "numeric-data-types-as-string"

void pgcdc_slot_init(struct pgcdc_slot *sl, const struct pgcdc_config *cfg)
{
    memset(sl, 0, sizeof(*sl));
    sl->cfg = cfg;
    sl->numeric_strings = -1;
    snprintf(sl->statefile, sizeof(sl->statefile), "%s/slot", cfg->state_dir);
}

int pgcdc_slot_mark_streamed(struct pgcdc_slot *sl, char *err, size_t errlen)
{
    if (access(sl->statefile, F_OK) == 0)
        return PGCDC_OK;
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", sl->statefile);
    FILE *fp = fopen(tmp, "w");
    if (!fp || fprintf(fp, "slot=%s\n", sl->cfg->source_slot) < 0 || fflush(fp) != 0 ||
        fsync(fileno(fp)) != 0 || fclose(fp) != 0 || rename(tmp, sl->statefile) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", sl->statefile, strerror(errno));
        return PGCDC_ERR;
    }
    return PGCDC_OK;
}

/* The slot does not exist: new (the caller creates it), or dropped under us (fatal). */
static int slot_missing(const struct pgcdc_config *cfg, bool streamed_before, bool *fresh,
                        char *err, size_t errlen)
{
    if (streamed_before) {
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
    *fresh = true;
    return PGCDC_OK; /* the caller creates it (with or without a snapshot) */
}

/*
 * The slot exists but no completed snapshot is recorded: a crash cut it short, or the slot
 * was made by hand. Only a new slot exports a snapshot that meets its stream exactly.
 */
static int slot_without_snapshot(struct pgcdc_repl *repl, const struct pgcdc_config *cfg,
                                 const struct pgcdc_slot_info *info, bool *fresh, char *err,
                                 size_t errlen)
{
    if (info->active) {
        snprintf(err, errlen,
                 "replication slot \"%s\" exists, is in use by pid %d, and no completed "
                 "snapshot is recorded in %s: stop that process, or set snapshot.mode = never",
                 cfg->source_slot, info->active_pid, cfg->state_dir);
        return PGCDC_ERR;
    }
    pgcdc_log(PGCDC_LOG_WARN, "no completed snapshot recorded; recreating the slot to take one",
              "slot", cfg->source_slot, NULL);
    int rc = pgcdc_repl_drop_slot(repl, cfg->source_slot, err, errlen);
    if (rc < 0)
        return rc;
    *fresh = true;
    return PGCDC_OK;
}

int pgcdc_slot_find(struct pgcdc_slot *sl, struct pgcdc_repl *repl, uint64_t sink_resume_lsn,
                    bool *fresh, char *err, size_t errlen)
{
    const struct pgcdc_config *cfg = sl->cfg;
    struct pgcdc_slot_info info;
    int rc = pgcdc_repl_slot_info(repl, cfg->source_slot, &info, err, errlen);
    if (rc < 0)
        return rc;
    bool streamed_before = access(sl->statefile, F_OK) == 0;
    *fresh = false;
    if (!info.exists)
        return slot_missing(cfg, streamed_before, fresh, err, errlen);
    if (strcmp(info.plugin, "wal2json") != 0) {
        snprintf(err, errlen,
                 "replication slot \"%s\" uses the plugin \"%s\", pgcdc needs wal2json: pick "
                 "another source.slot, or drop that slot if it is unused",
                 cfg->source_slot, info.plugin);
        return PGCDC_ERR;
    }
    if (!streamed_before && cfg->snapshot_mode != PGCDC_SNAPSHOT_NEVER) {
        if (sink_resume_lsn > 0)
            return PGCDC_OK; /* the snapshot became durable just before a crash */
        return slot_without_snapshot(repl, cfg, &info, fresh, err, errlen);
    }
    return PGCDC_OK;
}

int pgcdc_slot_create(struct pgcdc_slot *sl, struct pgcdc_repl *repl, char *err, size_t errlen)
{
    uint64_t consistent = 0;
    int rc = pgcdc_repl_create_slot(repl, sl->cfg->source_slot, NULL, 0, &consistent, err, errlen);
    if (rc == PGCDC_OK) {
        char l[PGCDC_LSN_BUFLEN];
        pgcdc_log(PGCDC_LOG_INFO, "created replication slot", "slot", sl->cfg->source_slot,
                  "consistent_point", pgcdc_lsn_format(consistent, l), NULL);
    }
    return rc;
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
