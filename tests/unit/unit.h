/*
 * unit.h — a header-only test harness: CHECK macros that count and report, and one closing
 * line "N passed, N failed" from UNIT_DONE(), which main returns (non-zero on any failure).
 *
 *     int main(void) { test_x(); test_y(); return UNIT_DONE(); }
 *
 * A failed check prints file:line and what differed on stderr, then the test goes on, so
 * one run shows every failure.
 */
#ifndef PGCDC_UNIT_H
#define PGCDC_UNIT_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int unit_passed, unit_failed;

/* Count one check; on failure print where and what. Returns ok, for follow-up output. */
static inline int unit_check(int ok, const char *file, int line, const char *what)
{
    if (ok) {
        unit_passed++;
    } else {
        unit_failed++;
        fprintf(stderr, "FAIL %s:%d: %s\n", file, line, what);
    }
    return ok;
}

static inline void unit_int_eq(long long a, long long b, const char *sa, const char *sb,
                               const char *file, int line)
{
    if (!unit_check(a == b, file, line, sa))
        fprintf(stderr, "    %s == %s: %lld != %lld\n", sa, sb, a, b);
}

static inline void unit_u64_eq(uint64_t a, uint64_t b, const char *sa, const char *sb,
                               const char *file, int line)
{
    if (!unit_check(a == b, file, line, sa))
        fprintf(stderr, "    %s == %s: %" PRIu64 " != %" PRIu64 "\n", sa, sb, a, b);
}

static inline void unit_str_eq(const char *a, const char *b, const char *sa, const char *sb,
                               const char *file, int line)
{
    int ok = a && b ? strcmp(a, b) == 0 : a == b;
    if (!unit_check(ok, file, line, sa))
        fprintf(stderr, "    %s == %s\n    got:  %s\n    want: %s\n", sa, sb, a ? a : "(null)",
                b ? b : "(null)");
}

static inline void unit_contains(const char *hay, const char *needle, int want, const char *sh,
                                 const char *file, int line)
{
    int has = hay != NULL && strstr(hay, needle) != NULL;
    if (!unit_check(has == want, file, line, sh))
        fprintf(stderr, "    %s %s \"%s\"\n    in: %s\n", sh, want ? "lacks" : "contains", needle,
                hay ? hay : "(null)");
}

static inline void unit_prefix(const char *s, const char *prefix, const char *ss, const char *file,
                               int line)
{
    int ok = s != NULL && strncmp(s, prefix, strlen(prefix)) == 0;
    if (!unit_check(ok, file, line, ss))
        fprintf(stderr, "    %s starts with \"%s\"\n    got: %s\n", ss, prefix, s ? s : "(null)");
}

#define CHECK(cond) unit_check(!!(cond), __FILE__, __LINE__, #cond)
#define CHECK_INT_EQ(a, b) unit_int_eq((long long)(a), (long long)(b), #a, #b, __FILE__, __LINE__)
#define CHECK_U64_EQ(a, b) unit_u64_eq((uint64_t)(a), (uint64_t)(b), #a, #b, __FILE__, __LINE__)
#define CHECK_STR_EQ(a, b) unit_str_eq((a), (b), #a, #b, __FILE__, __LINE__)
/* `hay` (a C string) contains / lacks `needle`. */
#define CHECK_CONTAINS(hay, needle) unit_contains((hay), (needle), 1, #hay, __FILE__, __LINE__)
/* `s` starts with `prefix`. */
#define CHECK_PREFIX(s, prefix) unit_prefix((s), (prefix), #s, __FILE__, __LINE__)
#define CHECK_NOT_CONTAINS(hay, needle) unit_contains((hay), (needle), 0, #hay, __FILE__, __LINE__)

static inline int unit_done(void)
{
    printf("%d passed, %d failed\n", unit_passed, unit_failed);
    return unit_failed != 0;
}

#define UNIT_DONE() unit_done()

#endif
