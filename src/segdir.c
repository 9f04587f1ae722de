/*
 * segdir.c — the file sink's directory contract: segment names, the position record and
 * checkpoint formats, and listing segments in stream order (formats in segdir.h).
 */
#include "pgcdc/segdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgcdc/common.h"
#include "pgcdc/lsn.h"

#define CKPT_MAGIC                                                                                 \
    "# pgcdc file sink checkpoint (two slots, the higher intact gen= counts); do not edit\n"

static bool ends_with(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len > n && strcmp(s + len - n, suffix) == 0;
}

/* First commit LSN from "<seq>-<16 hex>..."; 0 when the name has another shape. */
static uint64_t name_lsn(const char *n)
{
    const char *dash = strchr(n, '-');
    if (!dash || strlen(dash) < 17)
        return 0;
    uint64_t v = 0;
    for (int i = 1; i <= 16; i++) {
        int h = pgcdc_hex_digit(dash[i]);
        if (h < 0)
            return 0;
        v = v << 4 | (uint64_t)h;
    }
    return v;
}

bool pgcdc_segdir_parse_name(const char *name, struct pgcdc_segdir_entry *e, size_t *closed_len)
{
    size_t len = strlen(name);
    bool open = ends_with(name, len, PGCDC_SEGDIR_OPEN_SUFFIX);
    bool part = !open && ends_with(name, len, PGCDC_SEGDIR_PART_SUFFIX);
    if (!open && !part && !ends_with(name, len, PGCDC_SEGDIR_CLOSED_SUFFIX))
        return false;
    memset(e, 0, sizeof(*e));
    e->open = open;
    e->part = part;
    e->seq = (uint32_t)strtoul(name, NULL, 10);
    e->first_lsn = name_lsn(name);
    *closed_len =
        open   ? len - (sizeof(PGCDC_SEGDIR_OPEN_SUFFIX) - sizeof(PGCDC_SEGDIR_CLOSED_SUFFIX))
        : part ? len - (sizeof(PGCDC_SEGDIR_PART_SUFFIX) - sizeof(PGCDC_SEGDIR_CLOSED_SUFFIX))
               : len;
    return true;
}

int pgcdc_segdir_name(char *out, size_t outlen, uint32_t seq, uint64_t first_lsn, bool open)
{
    return snprintf(out, outlen, "%010" PRIu32 "-%016" PRIX64 "%s", seq, first_lsn,
                    open ? PGCDC_SEGDIR_OPEN_SUFFIX : PGCDC_SEGDIR_CLOSED_SUFFIX);
}

void pgcdc_segdir_closed_name(const char *name, char *out, size_t outlen)
{
    struct pgcdc_segdir_entry e;
    size_t n = strlen(name);
    pgcdc_segdir_parse_name(name, &e, &n); /* not a segment's: n stays the whole name */
    snprintf(out, outlen, "%.*s", (int)n, name);
}

/* What the open suffix adds to the closed one. */
static const char open_extra[] = ".open";
_Static_assert(sizeof(PGCDC_SEGDIR_OPEN_SUFFIX) ==
                   sizeof(PGCDC_SEGDIR_CLOSED_SUFFIX) + sizeof(open_extra) - 1,
               "the open name is the closed name and \".open\"");

bool pgcdc_segdir_is_open_of(const char *open_name, const char *closed_name)
{
    size_t n = strlen(closed_name);
    return strncmp(open_name, closed_name, n) == 0 && strcmp(open_name + n, open_extra) == 0;
}

int pgcdc_segdir_open_name(const char *closed_name, char *out, size_t outlen)
{
    return snprintf(out, outlen, "%s%s", closed_name, open_extra);
}

int pgcdc_segdir_part_name(const char *closed_name, char *out, size_t outlen)
{
    return snprintf(out, outlen, "%s%s", closed_name,
                    PGCDC_SEGDIR_PART_SUFFIX + sizeof(PGCDC_SEGDIR_CLOSED_SUFFIX) - 1);
}

static int cmp_closed(const void *a, const void *b)
{
    return strcmp(((const struct pgcdc_segdir_entry *)a)->closed,
                  ((const struct pgcdc_segdir_entry *)b)->closed);
}

/* Append a copy of name (and its closed name) to l. Returns 0 or -1 (ENOMEM). */
static int list_add(struct pgcdc_segdir_list *l, size_t *cap, const char *name, bool parts)
{
    struct pgcdc_segdir_entry e;
    size_t closed_len;
    if (!pgcdc_segdir_parse_name(name, &e, &closed_len) || (e.part && !parts))
        return 0;
    if (l->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        struct pgcdc_segdir_entry *ne = realloc(l->e, ncap * sizeof(*ne));
        if (!ne)
            return -1;
        l->e = ne;
        *cap = ncap;
    }
    size_t len = strlen(name);
    /* One block: the name as found, then the closed name. */
    if (!(e.name = malloc(len + 1 + closed_len + 1)))
        return -1;
    memcpy(e.name, name, len + 1);
    memcpy(e.name + len + 1, name, closed_len);
    e.name[len + 1 + closed_len] = '\0';
    e.closed = e.name + len + 1;
    l->e[l->n++] = e;
    return 0;
}

static int list_dir(int dirfd, struct pgcdc_segdir_list *out, bool parts)
{
    size_t cap = 0;
    int fd = dup(dirfd), rc = 0;
    memset(out, 0, sizeof(*out));
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        errno = e;
        return -1;
    }
    rewinddir(d); /* the duplicate shares its position with dirfd's earlier readers */
    struct dirent *de;
    while ((de = readdir(d)))
        if ((rc = list_add(out, &cap, de->d_name, parts)) < 0)
            break;
    closedir(d);
    if (rc < 0) {
        pgcdc_segdir_list_free(out);
        errno = ENOMEM;
        return -1;
    }
    if (out->n > 1)
        qsort(out->e, out->n, sizeof(*out->e), cmp_closed);
    return 0;
}

int pgcdc_segdir_list(int dirfd, struct pgcdc_segdir_list *out)
{
    return list_dir(dirfd, out, false);
}

int pgcdc_segdir_list_all(int dirfd, struct pgcdc_segdir_list *out)
{
    return list_dir(dirfd, out, true);
}

void pgcdc_segdir_list_free(struct pgcdc_segdir_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->e[i].name);
    free(l->e);
    memset(l, 0, sizeof(*l));
}

bool pgcdc_segdir_parse_record(char *text, struct pgcdc_segdir_record *rec)
{
    bool have_lsn = false;
    char *save = NULL;
    memset(rec, 0, sizeof(*rec));
    for (char *line = strtok_r(text, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        if (strncmp(line, "lsn=", 4) == 0)
            have_lsn = pgcdc_lsn_parse_str(line + 4, &rec->lsn) == 0;
        else if (strncmp(line, "segment=", 8) == 0 && strlen(line + 8) < sizeof(rec->seg))
            memcpy(rec->seg, line + 8, strlen(line + 8) + 1);
        else if (strncmp(line, "offset=", 7) == 0)
            rec->off = strtoull(line + 7, NULL, 10);
        else if (strncmp(line, "gen=", 4) == 0)
            rec->gen = strtoull(line + 4, NULL, 10);
        else if (strncmp(line, "confirmed=", 10) == 0 &&
                 pgcdc_lsn_parse_str(line + 10, &rec->confirmed) < 0)
            rec->confirmed = 0;
    }
    return have_lsn;
}

int pgcdc_segdir_format_position(char *buf, size_t buflen, uint64_t lsn, const char *seg,
                                 uint64_t off, uint64_t confirmed)
{
    char l[PGCDC_LSN_BUFLEN], c[PGCDC_LSN_BUFLEN];
    return snprintf(buf, buflen,
                    "# pgcdc file sink position, for readers; do not edit\nlsn=%s\nsegment=%s\n"
                    "offset=%" PRIu64 "\nconfirmed=%s\n",
                    pgcdc_lsn_format(lsn, l), seg, off, pgcdc_lsn_format(confirmed, c));
}

bool pgcdc_segdir_read_position(const char *dir, struct pgcdc_segdir_record *rec)
{
    char path[4096], text[PGCDC_SEGDIR_POSITION_MAX];
    size_t n = 0;
    snprintf(path, sizeof(path), "%s/" PGCDC_SEGDIR_POSITION_FILE, dir);
    memset(rec, 0, sizeof(*rec));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    while (n < sizeof(text) - 1) {
        ssize_t got = read(fd, text + n, sizeof(text) - 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    text[n] = '\0';
    return pgcdc_segdir_parse_record(text, rec);
}

bool pgcdc_segdir_read_epoch(const char *dir, uint64_t *epoch)
{
    char path[4096], text[PGCDC_SEGDIR_EPOCH_LEN + 2];
    snprintf(path, sizeof(path), "%s/" PGCDC_SEGDIR_EPOCH_FILE, dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    close(fd);
    if (n < PGCDC_SEGDIR_EPOCH_LEN)
        return false;
    text[n] = '\0';
    *epoch = strtoull(text, NULL, 10);
    return true;
}

int pgcdc_segdir_epoch_mark(int fd, bool rewinding)
{
    char text[PGCDC_SEGDIR_EPOCH_LEN + 2] = "";
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    if (n < 0)
        return -1;
    text[n] = '\0';
    uint64_t next = strtoull(text, NULL, 10) + 1; /* an empty file counts as 0 */
    if ((next % 2 == 1) != rewinding)
        next++; /* odd while a rewind runs (also one a crash cut short), even after */
    int len = snprintf(text, sizeof(text), "%0*" PRIu64 "\n", PGCDC_SEGDIR_EPOCH_LEN, next);
    if (pwrite(fd, text, (size_t)len, 0) != len) {
        if (errno == 0)
            errno = EIO;
        return -1;
    }
    return 0;
}

/* CRC-32 (IEEE 802.3, as zlib's crc32), four bits at a time. */
static uint32_t crc32_ieee(const char *p, size_t n)
{
    static const uint32_t t[16] = {
        0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4,
        0x4db26158, 0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
        0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
    };
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= (unsigned char)p[i];
        c = (c >> 4) ^ t[c & 15];
        c = (c >> 4) ^ t[c & 15];
    }
    return c ^ 0xffffffffu;
}

void pgcdc_segdir_format_slot(char slot[PGCDC_SEGDIR_CKPT_SLOT], uint64_t gen, uint64_t lsn,
                              const char *seg, uint64_t off)
{
    char l[PGCDC_LSN_BUFLEN];
    int n = snprintf(slot, PGCDC_SEGDIR_CKPT_SLOT,
                     CKPT_MAGIC "gen=%" PRIu64 "\nlsn=%s\nsegment=%s\noffset=%" PRIu64 "\n", gen,
                     pgcdc_lsn_format(lsn, l), seg, off);
    n += snprintf(slot + n, PGCDC_SEGDIR_CKPT_SLOT - (size_t)n, "crc=%08" PRIx32 "\n",
                  crc32_ieee(slot, (size_t)n));
    memset(slot + n, ' ', PGCDC_SEGDIR_CKPT_SLOT - (size_t)n - 1);
    slot[PGCDC_SEGDIR_CKPT_SLOT - 1] = '\n';
}

/* Whether a slot is intact (magic, CRC, lsn= and gen=); if so, what it says. */
static bool check_slot(const char *slot, size_t len, struct pgcdc_segdir_record *c)
{
    const char *crc_at = len > 0 ? memmem(slot, len, "\ncrc=", 5) : NULL;
    if (!crc_at || len < strlen(CKPT_MAGIC) || memcmp(slot, CKPT_MAGIC, strlen(CKPT_MAGIC)) != 0 ||
        (size_t)(crc_at - slot) + 14 > len)
        return false;
    size_t body = (size_t)(crc_at - slot) + 1;
    char text[PGCDC_SEGDIR_CKPT_SLOT + 1], hex[9], *end;
    memcpy(hex, crc_at + 5, 8);
    hex[8] = '\0';
    unsigned long crc = strtoul(hex, &end, 16);
    if (end != hex + 8 || (uint32_t)crc != crc32_ieee(slot, body))
        return false;
    memcpy(text, slot, body);
    text[body] = '\0';
    return pgcdc_segdir_parse_record(text, c) && c->gen > 0;
}

bool pgcdc_segdir_parse_checkpoint(char *buf, size_t n, struct pgcdc_segdir_record *rec,
                                   bool *two_slots)
{
    const size_t slot = PGCDC_SEGDIR_CKPT_SLOT;
    *two_slots = false;
    buf[n] = '\0';
    if (n < strlen(CKPT_MAGIC) || memcmp(buf, CKPT_MAGIC, strlen(CKPT_MAGIC)) != 0) {
        bool ok = pgcdc_segdir_parse_record(buf, rec); /* the plain format */
        rec->gen = 0;
        return ok;
    }
    /* Slot format: the intact slot with the higher generation. */
    struct pgcdc_segdir_record r1;
    size_t len1 = n > slot ? n - slot : 0;
    bool ok0 = check_slot(buf, n < slot ? n : slot, rec);
    bool ok1 = check_slot(buf + slot, len1 < slot ? len1 : slot, &r1);
    if (ok1 && (!ok0 || r1.gen > rec->gen))
        *rec = r1;
    *two_slots = (ok0 || ok1) && n == 2 * slot;
    return ok0 || ok1;
}
