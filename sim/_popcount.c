/*
 * bitswarm.sim._popcount -- packed-word popcount kernels of the virtual accelerator.
 *
 * Two kernels on bit-packed uint64 words (golden/SPEC.md section 2: element k is bit k % 64 of
 * word k / 64), both for a batch of input rows a[B][K] against weight rows w[M][K]:
 *
 *   xnor:  out[i][j] = n - 2 * popcount((a[i] XOR w[j]) AND valid)
 *                    = 2 * popcount(XNOR(a[i], w[j]) AND valid) - n        (SPEC section 3)
 *   and:   out[i][j] = popcount(a[i] AND w[j] AND valid)                   (SPEC section 4)
 *
 * where `valid` keeps the first n bits (n in (64*(K-1), 64*K]); padding bits are masked off
 * in both kernels, so the result does not depend on them. Results are exact int32 (|out| <= n,
 * and n < 2^31 is checked).
 *
 * Code paths, chosen at run time:
 *
 *   avx512    AVX-512F + VPOPCNTQ (__builtin_cpu_supports("avx512vpopcntdq")). The weight
 *             rows of a tile (32 outputs) are interleaved into [K][32] so that one zmm
 *             register holds word k of 8 outputs (once per thread and output tile: a thread
 *             keeps them for the next input tile of the same outputs); an input word is
 *             broadcast from memory, and
 *             a 4 x 32 register block (16 zmm accumulators) does XOR/AND, VPOPCNTQ and
 *             VPADDQ with no horizontal reduction. The last word's padding mask is folded into
 *             a VPTERNLOGQ.
 *   portable  Plain C with __builtin_popcountll on a 4 x 4 block of scalar accumulators; on
 *             x86-64 a clone compiled for the POPCNT instruction is used when the CPU has it.
 *
 * window_words cuts the packed windows of a convolution (section 14) out of row-packed maps,
 * one funnel shift per word, for the same two kernels.
 *
 * The caller (bitswarm/sim/popcount.py) adds a pure-numpy path when this module is missing.
 *
 * Threads: the output is cut into tiles of 32 outputs x 64 input rows, which threads take from
 * a shared atomic counter; the GIL is released while they run. By default the helpers are a
 * persistent POSIX thread pool, and the caller waits only for unfinished tiles, not for
 * helpers the scheduler has not run yet (robust on a loaded machine). Compiled with
 * -DBITSWARM_OPENMP -fopenmp, an OpenMP parallel region is used instead (ends in a barrier).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#if defined(BITSWARM_OPENMP)
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BITSWARM_X86 1
#include <immintrin.h>
#else
#define BITSWARM_X86 0
#endif

#define MODE_XNOR 0
#define MODE_AND 1
#define MODE_WINDOWS 2  /* window_words: cut convolution windows out of row-packed maps */

#define PATH_AUTO 0
#define PATH_PORTABLE 1
#define PATH_AVX512 2

#define TILE_J 32   /* outputs per tile: 4 zmm of 8 lanes */
#define TILE_I 64   /* input rows per tile */
#define MAX_THREADS 256
/* Below this many word pairs (B * M * K, about 70 us on one core) one thread is faster. */
#define MIN_PARALLEL_WORK (1 << 20)
/* A window word costs about as much as this many word pairs. */
#define WINDOW_WORD_COST 16
/* Output lines (b, oy) of window_words per tile. */
#define WIN_LINES 4
/* Pool helpers spin this long for the next job before they sleep (microseconds). */
#define SPIN_US 200.0

#define INLINE static inline __attribute__((always_inline))

typedef struct {
    const uint64_t *a;   /* [B][K] */
    const uint64_t *w;   /* [M][K] */
    int32_t *out;        /* [B][M] */
    Py_ssize_t B, M, K;
    int64_t n;
    uint64_t lastmask;   /* valid bits of word K-1 */
    int mode;
    int path;            /* PATH_PORTABLE or PATH_AVX512 (resolved) */
    Py_ssize_t n_itiles, n_tiles;
    Py_ssize_t next;     /* next tile to take (atomic) */
    Py_ssize_t done;     /* tiles finished (atomic) */
    int refs;            /* owners of a shared job: caller + joined helpers (atomic) */
    int joined;          /* helpers that joined (under the pool lock) */
    int max_helpers;     /* at most threads - 1 helpers join */
    unsigned long call;  /* id of the kernel call (tags the interleaved weights in scratch) */
    /* MODE_WINDOWS: a = maps [B * Hp][R], wout = windows [B * Ho * Wo][kern * Wr]; B counts
     * output lines (b, oy), tiles are WIN_LINES lines */
    uint64_t *wout;
    Py_ssize_t Hp, R, C, Ho, Wo;
    int kern, stride;
} job_t;

/* Per-thread scratch: the interleaved weights of one output tile (K * TILE_J words), tagged
 * with the call and tile they hold, so that a thread taking the next input tile of the same
 * outputs does not interleave them again. Kept between calls, freed when the thread exits. */
typedef struct {
    uint64_t *buf;
    size_t cap;
    unsigned long call;  /* 0: holds nothing */
    Py_ssize_t jt;
} scratch_t;

/* ---------------------------------------------------------------------------------------- */
/* portable path                                                                             */
/* ---------------------------------------------------------------------------------------- */

#define PORTABLE_MICRO(NAME, ATTR)                                                            \
    ATTR INLINE void NAME##_micro(const job_t *jb, Py_ssize_t i0, int R, Py_ssize_t j0, int C) \
    {                                                                                         \
        const Py_ssize_t K = jb->K;                                                           \
        uint64_t acc[4][4] = {{0}};                                                           \
        const uint64_t *ar[4], *wr[4];                                                        \
        for (int r = 0; r < 4; r++) ar[r] = jb->a + (i0 + (r < R ? r : 0)) * K;               \
        for (int c = 0; c < 4; c++) wr[c] = jb->w + (j0 + (c < C ? c : 0)) * K;               \
        for (Py_ssize_t k = 0; k < K; k++) {                                                  \
            const uint64_t m = (k == K - 1) ? jb->lastmask : ~(uint64_t)0;                    \
            for (int r = 0; r < 4; r++) {                                                     \
                const uint64_t x = ar[r][k];                                                  \
                for (int c = 0; c < 4; c++) {                                                 \
                    const uint64_t y = jb->mode == MODE_XNOR ? (x ^ wr[c][k]) : (x & wr[c][k]); \
                    acc[r][c] += (uint64_t)__builtin_popcountll(y & m);                       \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        for (int r = 0; r < R; r++) {                                                         \
            int32_t *o = jb->out + (i0 + r) * jb->M + j0;                                     \
            for (int c = 0; c < C; c++)                                                       \
                o[c] = jb->mode == MODE_XNOR ? (int32_t)(jb->n - 2 * (int64_t)acc[r][c])     \
                                             : (int32_t)acc[r][c];                            \
        }                                                                                     \
    }                                                                                         \
    ATTR static void NAME##_tile(const job_t *jb, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0, \
                                 Py_ssize_t j1)                                               \
    {                                                                                         \
        for (Py_ssize_t i = i0; i < i1; i += 4) {                                             \
            const int R = (int)(i1 - i < 4 ? i1 - i : 4);                                     \
            for (Py_ssize_t j = j0; j < j1; j += 4) {                                         \
                const int C = (int)(j1 - j < 4 ? j1 - j : 4);                                 \
                NAME##_micro(jb, i, R, j, C);                                                 \
            }                                                                                 \
        }                                                                                     \
    }

PORTABLE_MICRO(generic, )
#if BITSWARM_X86
PORTABLE_MICRO(hwpopcnt, __attribute__((target("popcnt"))))
#endif

/* ---------------------------------------------------------------------------------------- */
/* AVX-512 VPOPCNTQ path                                                                     */
/* ---------------------------------------------------------------------------------------- */

#if BITSWARM_X86
#define AVX512 __attribute__((target("avx512f,avx512vpopcntdq")))

/* R input rows (1..4) x G groups of 8 outputs (1..4); wb is the tile's interleaved weights
 * [K][G*8]; C outputs of the tile are valid (C > 8*(G-1)). */
AVX512 INLINE void avx_micro(const job_t *jb, const uint64_t *wb, Py_ssize_t i0, const int R,
                             Py_ssize_t j0, const int G, int C, const int mode)
{
    const Py_ssize_t K = jb->K;
    const uint64_t *ar[4];
    __m512i acc[4][4];
    for (int r = 0; r < 4; r++) ar[r] = jb->a + (i0 + (r < R ? r : 0)) * K;
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) acc[r][g] = _mm512_setzero_si512();
    const uint64_t *wk = wb;
    for (Py_ssize_t k = 0; k < K - 1; k++, wk += G * 8) {
        __m512i wv[4];
        for (int g = 0; g < G; g++) wv[g] = _mm512_loadu_si512((const void *)(wk + 8 * g));
        for (int r = 0; r < R; r++) {
            const __m512i av = _mm512_set1_epi64((long long)ar[r][k]);
            for (int g = 0; g < G; g++) {
                const __m512i x = mode == MODE_XNOR ? _mm512_xor_si512(av, wv[g])
                                                    : _mm512_and_si512(av, wv[g]);
                acc[r][g] = _mm512_add_epi64(acc[r][g], _mm512_popcnt_epi64(x));
            }
        }
    }
    {   /* last word: (a OP w) AND lastmask in one VPTERNLOGQ */
        const Py_ssize_t k = K - 1;
        const __m512i mv = _mm512_set1_epi64((long long)jb->lastmask);
        __m512i wv[4];
        for (int g = 0; g < G; g++) wv[g] = _mm512_loadu_si512((const void *)(wk + 8 * g));
        for (int r = 0; r < R; r++) {
            const __m512i av = _mm512_set1_epi64((long long)ar[r][k]);
            for (int g = 0; g < G; g++) {
                /* ternlog truth tables with A = av (0xF0), B = wv (0xCC), C = mask (0xAA):
                 * (A ^ B) & C = 0x28, A & B & C = 0x80 */
                const __m512i x = mode == MODE_XNOR
                                      ? _mm512_ternarylogic_epi64(av, wv[g], mv, 0x28)
                                      : _mm512_ternarylogic_epi64(av, wv[g], mv, 0x80);
                acc[r][g] = _mm512_add_epi64(acc[r][g], _mm512_popcnt_epi64(x));
            }
        }
    }
    const __m512i nv = _mm512_set1_epi64((long long)jb->n);
    for (int r = 0; r < R; r++) {
        int32_t *o = jb->out + (i0 + r) * jb->M + j0;
        for (int g = 0; g < G; g++) {
            __m512i v = acc[r][g];
            if (mode == MODE_XNOR) v = _mm512_sub_epi64(nv, _mm512_slli_epi64(v, 1));
            const int lanes = C - 8 * g < 8 ? C - 8 * g : 8;
            const __mmask8 km = (__mmask8)((1u << lanes) - 1u);
            _mm512_mask_cvtepi64_storeu_epi32((void *)(o + 8 * g), km, v);
        }
    }
}

#define AVX_R_CASES(G, MODE)                                                                  \
    switch (R) {                                                                              \
    case 1: avx_micro(jb, wb, i, 1, j0, G, C, MODE); break;                                   \
    case 2: avx_micro(jb, wb, i, 2, j0, G, C, MODE); break;                                   \
    case 3: avx_micro(jb, wb, i, 3, j0, G, C, MODE); break;                                   \
    default: avx_micro(jb, wb, i, 4, j0, G, C, MODE); break;                                  \
    }

#define AVX_G_CASES(MODE)                                                                     \
    switch (G) {                                                                              \
    case 1: AVX_R_CASES(1, MODE) break;                                                       \
    case 2: AVX_R_CASES(2, MODE) break;                                                       \
    case 3: AVX_R_CASES(3, MODE) break;                                                       \
    default: AVX_R_CASES(4, MODE) break;                                                      \
    }

/* wb[k][l] = w[j0 + l][k] for the tile's outputs, zero rows past j1 (L = 8 * G columns). */
static void avx_interleave(const job_t *jb, uint64_t *wb, Py_ssize_t j0, Py_ssize_t j1)
{
    const Py_ssize_t K = jb->K;
    const int C = (int)(j1 - j0);
    const int L = (C + 7) / 8 * 8;
    for (int l = 0; l < L; l++) {
        if (l < C) {
            const uint64_t *src = jb->w + (j0 + l) * K;
            for (Py_ssize_t k = 0; k < K; k++) wb[k * L + l] = src[k];
        } else {
            for (Py_ssize_t k = 0; k < K; k++) wb[k * L + l] = 0;
        }
    }
}

/* wb: the tile's interleaved weights (avx_interleave). */
AVX512 static void avx_tile(const job_t *jb, const uint64_t *wb, Py_ssize_t i0, Py_ssize_t i1,
                            Py_ssize_t j0, Py_ssize_t j1)
{
    const int C = (int)(j1 - j0);
    const int G = (C + 7) / 8;
    for (Py_ssize_t i = i0; i < i1; i += 4) {
        const int R = (int)(i1 - i < 4 ? i1 - i : 4);
        if (jb->mode == MODE_XNOR) {
            AVX_G_CASES(MODE_XNOR)
        } else {
            AVX_G_CASES(MODE_AND)
        }
    }
}
#endif /* BITSWARM_X86 */

/* ---------------------------------------------------------------------------------------- */
/* CPU features and tiles                                                                    */
/* ---------------------------------------------------------------------------------------- */

static int cpu_avx512 = 0;  /* AVX-512F and VPOPCNTQ usable (CPU and OS) */
static int cpu_popcnt = 0;  /* POPCNT instruction */

static void detect_cpu(void)
{
#if BITSWARM_X86
    __builtin_cpu_init();
    cpu_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
    cpu_popcnt = __builtin_cpu_supports("popcnt");
#endif
}

/* ---------------------------------------------------------------------------------------- */
/* packed windows of row-packed maps (convolution, golden/SPEC.md section 14)                */
/* ---------------------------------------------------------------------------------------- */

/* Output lines l0..l1-1 (line = b * Ho + oy): out[line * Wo + ox][ky * Wr + i] = word i of the
 * kern * C bits of map row oy * s + ky that start at bit ox * s * C (a funnel shift of two
 * source words), the last word of each ky masked to its valid bits; Wr = ceil(kern * C / 64). */
static void window_lines(const job_t *jb, Py_ssize_t l0, Py_ssize_t l1)
{
    const int K = jb->kern, s = jb->stride;
    const Py_ssize_t C = jb->C, Ho = jb->Ho, Wo = jb->Wo, R = jb->R;
    const Py_ssize_t kc = (Py_ssize_t)K * C, Wr = (kc + 63) / 64, n = Wr - 1;
    const uint64_t lastmask = (kc % 64) ? ((((uint64_t)1) << (kc % 64)) - 1) : ~(uint64_t)0;
    uint64_t *o = jb->wout + l0 * Wo * K * Wr;
    for (Py_ssize_t line = l0; line < l1; line++) {
        const Py_ssize_t b = line / Ho, oy = line % Ho;
        const uint64_t *rows = jb->a + (b * jb->Hp + oy * s) * R;
        for (Py_ssize_t ox = 0; ox < Wo; ox++) {
            const Py_ssize_t off = ox * s * C, q = off >> 6;
            const int r = (int)(off & 63);
            if (r == 0) {
                for (int ky = 0; ky < K; ky++, o += Wr) {
                    const uint64_t *src = rows + ky * R + q;
                    for (Py_ssize_t i = 0; i < n; i++) o[i] = src[i];
                    o[n] = src[n] & lastmask;
                }
            } else {
                const int l = 64 - r;
                for (int ky = 0; ky < K; ky++, o += Wr) {
                    const uint64_t *src = rows + ky * R + q;
                    for (Py_ssize_t i = 0; i < n; i++) o[i] = (src[i] >> r) | (src[i + 1] << l);
                    o[n] = ((src[n] >> r) | (src[n + 1] << l)) & lastmask;
                }
            }
        }
    }
}

static void run_tile(const job_t *jb, scratch_t *sc, Py_ssize_t t)
{
    if (jb->mode == MODE_WINDOWS) {
        const Py_ssize_t l0 = t * WIN_LINES;
        window_lines(jb, l0, l0 + WIN_LINES < jb->B ? l0 + WIN_LINES : jb->B);
        return;
    }
    const Py_ssize_t jt = t / jb->n_itiles, it = t % jb->n_itiles;
    const Py_ssize_t i0 = it * TILE_I, i1 = i0 + TILE_I < jb->B ? i0 + TILE_I : jb->B;
    const Py_ssize_t j0 = jt * TILE_J, j1 = j0 + TILE_J < jb->M ? j0 + TILE_J : jb->M;
#if BITSWARM_X86
    if (jb->path == PATH_AVX512) {
        if (sc->call != jb->call || sc->jt != jt) {
            avx_interleave(jb, sc->buf, j0, j1);
            sc->call = jb->call;
            sc->jt = jt;
        }
        avx_tile(jb, sc->buf, i0, i1, j0, j1);
        return;
    }
    if (cpu_popcnt) {
        hwpopcnt_tile(jb, i0, i1, j0, j1);
        return;
    }
#endif
    (void)sc;
    generic_tile(jb, i0, i1, j0, j1);
}

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    scratch_t *s = (scratch_t *)p;
    free(s->buf);
    free(s);
}

static void scratch_key_init(void) { (void)pthread_key_create(&scratch_key, scratch_free); }

/* The calling thread's scratch of at least `words` words, or NULL if out of memory. */
static scratch_t *scratch_get(size_t words)
{
    (void)pthread_once(&scratch_once, scratch_key_init);
    scratch_t *s = (scratch_t *)pthread_getspecific(scratch_key);
    if (s == NULL) {
        s = (scratch_t *)calloc(1, sizeof *s);
        if (s == NULL || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap < words) {
        uint64_t *b = (uint64_t *)aligned_alloc(64, (words * 8 + 63) / 64 * 64);
        if (b == NULL) return NULL;
        free(s->buf);
        s->buf = b;
        s->cap = words;
        s->call = 0;
    }
    return s;
}

static size_t scratch_words(const job_t *jb)
{
    return jb->path == PATH_AVX512 ? (size_t)jb->K * TILE_J : 1;
}

static void notify_done(job_t *jb);

/* Takes tiles until none are left; each finished tile is counted in jb->done. */
static void take_tiles(job_t *jb, scratch_t *sc)
{
    for (;;) {
        const Py_ssize_t t = __atomic_fetch_add(&jb->next, 1, __ATOMIC_RELAXED);
        if (t >= jb->n_tiles) break;
        run_tile(jb, sc, t);
        if (__atomic_add_fetch(&jb->done, 1, __ATOMIC_ACQ_REL) == jb->n_tiles) notify_done(jb);
    }
}

static int cpu_count(void)
{
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c < 1 ? 1 : (int)c;
}

#if defined(BITSWARM_OPENMP)
/* ---- OpenMP: every thread of the parallel region takes tiles; the region ends in a barrier. */
static void notify_done(job_t *jb) { (void)jb; }

static int run_parallel(job_t *jb, int threads)
{
#pragma omp parallel num_threads(threads)
    {
        scratch_t *sc = scratch_get(scratch_words(jb));
        if (sc != NULL) take_tiles(jb, sc);
    }
    return jb->done == jb->n_tiles ? 0 : -1;
}
#else
/* ---- POSIX threads: a persistent pool of helpers. The calling thread posts the job, takes
 * tiles itself, and waits only until every tile is *finished*, never for helpers that have not
 * joined yet: on a loaded machine a helper that the scheduler runs late finds no tiles left and
 * costs the caller nothing. Jobs live on the heap with a reference count, since a late helper
 * may still look at one after its caller has returned (it never touches the buffers then). */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;  /* a job was posted */
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;  /* a job's last tile finished */
static job_t *pool_job = NULL;
static unsigned long pool_gen = 0;
static int pool_size = 0;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static inline void cpu_relax(void)
{
#if BITSWARM_X86
    __builtin_ia32_pause();
#endif
}

/* Waits up to SPIN_US microseconds while *p == v, spinning and yielding the CPU now and then
 * (on a busy machine the thread we wait for may need this core). */
static void spin_until_changed(const unsigned long *p, unsigned long v)
{
    const double end = now_us() + SPIN_US;
    for (unsigned i = 1;; i++) {
        if (__atomic_load_n(p, __ATOMIC_ACQUIRE) != v) return;
        cpu_relax();
        if ((i & 63) == 0) {
            if (now_us() > end) return;
            sched_yield();
        }
    }
}

/* Waits up to SPIN_US microseconds until the job's tiles are all finished; yields the CPU
 * each round, since a helper still holding a tile may be waiting for this very core. */
static void spin_until_done(const job_t *jb)
{
    const double end = now_us() + SPIN_US;
    for (;;) {
        if (__atomic_load_n(&jb->done, __ATOMIC_ACQUIRE) >= jb->n_tiles) return;
        if (now_us() > end) return;
        sched_yield();
    }
}

static void job_release(job_t *jb)
{
    if (__atomic_sub_fetch(&jb->refs, 1, __ATOMIC_ACQ_REL) == 0) free(jb);
}

static void notify_done(job_t *jb)
{
    (void)jb;
    pthread_mutex_lock(&pool_mu);
    pthread_cond_broadcast(&done_cv);
    pthread_mutex_unlock(&pool_mu);
}

/* arg: the pool generation when the thread was created; the job posted right after it is
 * the first this thread may join. */
static void *pool_thread(void *arg)
{
    unsigned long seen = (unsigned long)(uintptr_t)arg;
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        if (pool_gen == seen) {  /* spin a while before sleeping: layers come back to back */
            pthread_mutex_unlock(&pool_mu);
            spin_until_changed(&pool_gen, seen);
            pthread_mutex_lock(&pool_mu);
        }
        while (pool_gen == seen) pthread_cond_wait(&pool_cv, &pool_mu);
        seen = pool_gen;
        job_t *jb = pool_job;
        if (jb == NULL || jb->joined >= jb->max_helpers) continue;
        jb->joined++;
        __atomic_add_fetch(&jb->refs, 1, __ATOMIC_ACQ_REL);
        pthread_mutex_unlock(&pool_mu);
        scratch_t *sc = scratch_get(scratch_words(jb));
        if (sc != NULL) take_tiles(jb, sc);
        job_release(jb);
        pthread_mutex_lock(&pool_mu);
    }
    return NULL;
}

/* In a forked child the helpers do not exist and the locks may be held: start afresh. */
static void pool_atfork_child(void)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    pool_mu = mu;
    pool_cv = cv;
    done_cv = cv;
    pool_job = NULL;
    pool_size = 0;
}

static void pool_atfork_init(void) { (void)pthread_atfork(NULL, NULL, pool_atfork_child); }

/* Grows the pool to `helpers` threads (under pool_mu); returns how many exist. */
static int pool_grow(int helpers)
{
    (void)pthread_once(&atfork_once, pool_atfork_init);
    while (pool_size < helpers) {
        pthread_t tid;
        pthread_attr_t attr;
        if (pthread_attr_init(&attr) != 0) break;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&tid, &attr, pool_thread, (void *)(uintptr_t)pool_gen);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        pool_size++;
    }
    return pool_size;
}

/* A heap copy of the job for sharing with helpers (NULL if out of memory). */
static job_t *job_share(job_t *jb)
{
    job_t *h = (job_t *)malloc(sizeof *h);
    if (h != NULL) *h = *jb;
    return h;
}

static int run_parallel(job_t *jb, int threads)
{
    scratch_t *sc = scratch_get(scratch_words(jb));
    if (sc == NULL) return -1;
    jb->refs = 1;
    jb->max_helpers = threads - 1;
    pthread_mutex_lock(&pool_mu);
    pool_grow(threads - 1);
    pool_job = jb;
    __atomic_add_fetch(&pool_gen, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
    take_tiles(jb, sc);
    spin_until_done(jb);
    pthread_mutex_lock(&pool_mu);
    while (__atomic_load_n(&jb->done, __ATOMIC_ACQUIRE) < jb->n_tiles)
        pthread_cond_wait(&done_cv, &pool_mu);
    if (pool_job == jb) pool_job = NULL;
    pthread_mutex_unlock(&pool_mu);
    job_release(jb);
    return 0;
}
#endif

/* Runs the job on up to `threads` threads (the calling thread is one of them). */
static int run_job(job_t *jb, int threads)
{
    if (threads > jb->n_tiles) threads = (int)jb->n_tiles;
    const double work = jb->mode == MODE_WINDOWS
                            ? (double)jb->B * (double)(jb->Wo * jb->kern) * (double)jb->K * WINDOW_WORD_COST
                            : (double)jb->B * (double)jb->M * (double)jb->K;
    if (work < MIN_PARALLEL_WORK) threads = 1;
    if (threads <= 1) {
        scratch_t *sc = scratch_get(scratch_words(jb));
        if (sc == NULL) return -1;
        Py_ssize_t t;
        for (t = 0; t < jb->n_tiles; t++) run_tile(jb, sc, t);
        return 0;
    }
#if defined(BITSWARM_OPENMP)
    return run_parallel(jb, threads);
#else
    job_t *shared = job_share(jb);
    if (shared == NULL) return -1;
    const int rc = run_parallel(shared, threads);  /* releases `shared` when it succeeds */
    if (rc != 0) free(shared);
    return rc;
#endif
}

/* ---------------------------------------------------------------------------------------- */
/* Python interface                                                                          */
/* ---------------------------------------------------------------------------------------- */

/* numpy exports uint64 as 'L' (or 'Q'), int32 as 'i'; accept native/little-endian markers. */
static int format_is(const char *fmt, Py_ssize_t itemsize, Py_ssize_t want_size, int want_signed)
{
    if (fmt == NULL) return 0;
    if (*fmt == '@' || *fmt == '=' || *fmt == '<') fmt++;
    if (fmt[0] == '\0' || fmt[1] != '\0' || itemsize != want_size) return 0;
    const char *chars = want_signed ? "bhilq" : "BHILQ";
    return strchr(chars, fmt[0]) != NULL;
}

static int get_buffer(PyObject *obj, Py_buffer *view, const char *name, int writable,
                      Py_ssize_t itemsize, int want_signed, const char *dtype)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "%s must be a C-contiguous%s %s array, found %.100s that is not",
                     name, writable ? ", writable" : "", dtype, Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (!format_is(view->format, view->itemsize, itemsize, want_signed)) {
        PyErr_Format(PyExc_TypeError, "%s must have dtype %s, found buffer format '%s' of %zd bytes",
                     name, dtype, view->format ? view->format : "B", view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    if (view->ndim != 2) {
        PyErr_Format(PyExc_ValueError, "%s must be 2-dimensional, found %d dimensions", name,
                     view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *popcount_kernel(PyObject *args, PyObject *kwargs, int mode)
{
    static char *kwlist[] = {"a", "w", "out", "n", "path", "threads", NULL};
    PyObject *ao, *wo, *oo;
    long long n;
    int path = PATH_AUTO, threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOL|ii", kwlist, &ao, &wo, &oo, &n, &path,
                                     &threads))
        return NULL;
    Py_buffer av, wv, ov;
    if (get_buffer(ao, &av, "a", 0, 8, 0, "uint64") != 0) return NULL;
    if (get_buffer(wo, &wv, "w", 0, 8, 0, "uint64") != 0) {
        PyBuffer_Release(&av);
        return NULL;
    }
    if (get_buffer(oo, &ov, "out", 1, 4, 1, "int32") != 0) {
        PyBuffer_Release(&av);
        PyBuffer_Release(&wv);
        return NULL;
    }
    PyObject *result = NULL;
    const Py_ssize_t B = av.shape[0], K = av.shape[1], M = wv.shape[0];
    if (wv.shape[1] != K) {
        PyErr_Format(PyExc_ValueError, "a and w must have the same number of words per row, "
                     "found %zd and %zd", K, wv.shape[1]);
        goto done;
    }
    if (ov.shape[0] != B || ov.shape[1] != M) {
        PyErr_Format(PyExc_ValueError, "out must have shape (%zd, %zd), found (%zd, %zd)", B, M,
                     ov.shape[0], ov.shape[1]);
        goto done;
    }
    if (n < 0 || n > 64LL * (long long)K || n <= 64LL * ((long long)K - 1) ||
        n > (long long)INT32_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "n must be a bit count that needs exactly %zd words (%lld..%lld) and "
                     "fits in int32, found %lld",
                     K, K > 0 ? 64LL * (K - 1) + 1 : 0LL, 64LL * (long long)K, n);
        goto done;
    }
    if (path != PATH_AUTO && path != PATH_PORTABLE && path != PATH_AVX512) {
        PyErr_Format(PyExc_ValueError, "path must be 0 (auto), 1 (portable) or 2 (avx512), found %d",
                     path);
        goto done;
    }
    if (path == PATH_AVX512 && !cpu_avx512) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the avx512 path needs AVX-512F and VPOPCNTQ, which this CPU lacks");
        goto done;
    }
    if (threads < 0 || threads > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "threads must be in 0..%d (0 = all CPUs), found %d",
                     MAX_THREADS, threads);
        goto done;
    }
    if (B == 0 || M == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (K == 0) {  /* n == 0: every dot product and count is 0 */
        memset(ov.buf, 0, (size_t)(B * M) * sizeof(int32_t));
        result = Py_NewRef(Py_None);
        goto done;
    }
    {
        job_t jb;
        memset(&jb, 0, sizeof jb);
        jb.a = (const uint64_t *)av.buf;
        jb.w = (const uint64_t *)wv.buf;
        jb.out = (int32_t *)ov.buf;
        jb.B = B;
        jb.M = M;
        jb.K = K;
        jb.n = n;
        jb.lastmask = (n % 64) ? ((((uint64_t)1) << (n % 64)) - 1) : ~(uint64_t)0;
        jb.mode = mode;
        jb.path = path == PATH_AUTO ? (cpu_avx512 ? PATH_AVX512 : PATH_PORTABLE) : path;
        jb.n_itiles = (B + TILE_I - 1) / TILE_I;
        jb.n_tiles = jb.n_itiles * ((M + TILE_J - 1) / TILE_J);
        jb.next = 0;
        static unsigned long calls = 0;
        jb.call = __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
        if (jb.call == 0) jb.call = __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
        if (threads == 0) threads = cpu_count();
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = run_job(&jb, threads);
        Py_END_ALLOW_THREADS
        if (rc != 0) {
            PyErr_NoMemory();
            goto done;
        }
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&av);
    PyBuffer_Release(&wv);
    PyBuffer_Release(&ov);
    return result;
}

static PyObject *py_xnor_popcount(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    return popcount_kernel(args, kwargs, MODE_XNOR);
}

static PyObject *py_and_popcount(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    return popcount_kernel(args, kwargs, MODE_AND);
}

static PyObject *py_window_words(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"maps", "out", "map_rows", "kernel", "stride", "channels",
                             "out_h", "out_w", "threads", NULL};
    PyObject *mo, *oo;
    Py_ssize_t hp, c, ho, wo;
    int k, s, threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOniinnn|i", kwlist, &mo, &oo, &hp, &k, &s,
                                     &c, &ho, &wo, &threads))
        return NULL;
    if (threads < 0 || threads > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "threads must be in 0..%d (0 = all CPUs), found %d",
                     MAX_THREADS, threads);
        return NULL;
    }
    if (k < 1 || s < 1 || c < 1 || ho < 1 || wo < 1 || hp < (ho - 1) * s + k) {
        PyErr_Format(PyExc_ValueError,
                     "need kernel, stride, channels, out_h, out_w >= 1 and map_rows >= "
                     "(out_h - 1) * stride + kernel, found %d, %d, %zd, %zd, %zd and %zd",
                     k, s, c, ho, wo, hp);
        return NULL;
    }
    Py_buffer mv, ov;
    if (get_buffer(mo, &mv, "maps", 0, 8, 0, "uint64") != 0) return NULL;
    if (get_buffer(oo, &ov, "out", 1, 8, 0, "uint64") != 0) {
        PyBuffer_Release(&mv);
        return NULL;
    }
    PyObject *result = NULL;
    const Py_ssize_t rows = mv.shape[0], R = mv.shape[1];
    const Py_ssize_t Wr = ((Py_ssize_t)k * c + 63) / 64;
    const Py_ssize_t last_q = ((wo - 1) * s * c) >> 6;
    if (rows % hp != 0) {
        PyErr_Format(PyExc_ValueError, "maps must have a multiple of map_rows = %zd rows, found %zd",
                     hp, rows);
        goto done;
    }
    if (last_q + Wr + 1 > R) {
        PyErr_Format(PyExc_ValueError, "map rows need at least %zd words (the bits of the last "
                     "window plus one spare word), found %zd", last_q + Wr + 1, R);
        goto done;
    }
    const Py_ssize_t B = rows / hp;
    if (ov.shape[0] != B * ho * wo || ov.shape[1] != k * Wr) {
        PyErr_Format(PyExc_ValueError, "out must have shape (%zd, %zd), found (%zd, %zd)",
                     B * ho * wo, k * Wr, ov.shape[0], ov.shape[1]);
        goto done;
    }
    {
        job_t jb;
        memset(&jb, 0, sizeof jb);
        jb.a = (const uint64_t *)mv.buf;
        jb.wout = (uint64_t *)ov.buf;
        jb.mode = MODE_WINDOWS;
        jb.path = PATH_PORTABLE;  /* no weight scratch */
        jb.B = B * ho;            /* output lines */
        jb.M = 1;
        jb.K = Wr;
        jb.Hp = hp;
        jb.R = R;
        jb.C = c;
        jb.Ho = ho;
        jb.Wo = wo;
        jb.kern = k;
        jb.stride = s;
        jb.n_itiles = jb.n_tiles = (jb.B + WIN_LINES - 1) / WIN_LINES;
        if (threads == 0) threads = cpu_count();
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = run_job(&jb, threads);
        Py_END_ALLOW_THREADS
        if (rc != 0) {
            PyErr_NoMemory();
            goto done;
        }
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&mv);
    PyBuffer_Release(&ov);
    return result;
}

static PyObject *py_cpu_info(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return Py_BuildValue("{s:O,s:O,s:s,s:i}", "avx512", cpu_avx512 ? Py_True : Py_False,
                         "popcnt", cpu_popcnt ? Py_True : Py_False, "threading",
#if defined(BITSWARM_OPENMP)
                         "openmp",
#else
                         "pthreads",
#endif
                         "cpus", cpu_count());
}

PyDoc_STRVAR(xnor_doc,
"xnor_popcount(a, w, out, n, path=0, threads=0)\n--\n\n"
"out[i, j] = n - 2 * popcount((a[i] ^ w[j]) & valid) for C-contiguous uint64 a[B, K],\n"
"w[M, K] and int32 out[B, M]; `valid` keeps the first n bits (ceil(n / 64) == K).\n"
"path: 0 auto, 1 portable, 2 avx512. threads: 0 = all CPUs. Releases the GIL.");

PyDoc_STRVAR(and_doc,
"and_popcount(a, w, out, n, path=0, threads=0)\n--\n\n"
"out[i, j] = popcount(a[i] & w[j] & valid); arguments as for xnor_popcount.");

PyDoc_STRVAR(window_doc,
"window_words(maps, out, map_rows, kernel, stride, channels, out_h, out_w, threads=0)\n--\n\n"
"Packed convolution windows: maps uint64 [B*map_rows, R] (row-packed HWC maps), out uint64\n"
"[B*out_h*out_w, kernel*ceil(kernel*channels/64)]. threads: 0 = all CPUs. Releases the GIL.");

PyDoc_STRVAR(cpu_doc,
"cpu_info()\n--\n\n"
"Dict: 'avx512' (AVX-512F + VPOPCNTQ usable), 'popcnt', 'threading', 'cpus'.");

static PyMethodDef methods[] = {
    {"xnor_popcount", (PyCFunction)(void (*)(void))py_xnor_popcount, METH_VARARGS | METH_KEYWORDS,
     xnor_doc},
    {"and_popcount", (PyCFunction)(void (*)(void))py_and_popcount, METH_VARARGS | METH_KEYWORDS,
     and_doc},
    {"window_words", (PyCFunction)(void (*)(void))py_window_words, METH_VARARGS | METH_KEYWORDS,
     window_doc},
    {"cpu_info", py_cpu_info, METH_NOARGS, cpu_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "bitswarm.sim._popcount",
    "Packed-word XNOR/AND popcount kernels (see bitswarm.sim.popcount).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__popcount(void)
{
    detect_cpu();
    return PyModule_Create(&module);
}
