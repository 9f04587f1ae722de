/*
 * migrate_prune.c — in `pgcdc migrate`, DIR/data's segments the target has durably applied
 * are deleted (unless migrate.keep_segments), so DIR needs room for the snapshot and the
 * backlog, not for every change since the start.
 *
 * What may go (segdir.h for the names, replay_read.c for how replay resumes): a closed
 * segment S whose successor N in name order is closed too and starts (N's first commit
 * LSN, in its name) below the applied commit LSN C. Commit LSNs never decrease along the
 * segments, so every event of S commits at or before N's first, below C: applied, and
 * not part of a partly applied snapshot at C (that one shares C). It is exactly a segment
 * that a restarted replay passes over without reading. What always stays:
 *   - the open segment and .part segments (the sink's, not yet vouched for);
 *   - the newest closed segment: the sink numbers its next segment after the highest
 *     number it finds at open, so deleting it could let a restarted capture reuse a
 *     number; and the snapshot's resume (snapshot_state.c) reads the last segment.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "pgcdc/log.h"
#include "pgcdc/migrate_progress.h"
#include "pgcdc/segdir.h"

int pgcdc_migrate_prune_segments(const char *dir, uint64_t commit)
{
    struct pgcdc_segdir_list l;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), n = 0;
    if (dfd < 0)
        return -1;
    if (pgcdc_segdir_list_all(dfd, &l) < 0) {
        int e = errno;
        close(dfd);
        errno = e;
        return -1;
    }
    for (size_t i = 0; i + 1 < l.n; i++) {
        const struct pgcdc_segdir_entry *s = &l.e[i], *next = &l.e[i + 1];
        bool closed = !s->open && !s->part, next_closed = !next->open && !next->part;
        if (!closed || !next_closed || next->first_lsn == 0 || next->first_lsn >= commit)
            continue;
        if (unlinkat(dfd, s->name, 0) == 0)
            n++;
        else if (errno != ENOENT)
            pgcdc_log(PGCDC_LOG_WARN, "migrate: cannot delete an applied segment", "segment",
                      s->name, NULL);
    }
    pgcdc_segdir_list_free(&l);
    close(dfd);
    return n;
}
