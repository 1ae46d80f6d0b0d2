/* Memory read bandwidth with AVX2 loads: an independent reference for the engine's decode floor.
 *
 * Each thread reads its own contiguous slice of one buffer with 256-bit loads into eight independent
 * accumulators (no stores, so the figure is pure read traffic). A pass starts when every thread has passed a
 * barrier and ends when the last one finishes; the figure is the median (and best) of several passes.
 *
 *   membw [--threads N] [--gib X] [--passes P] [--huge] [--prefetch BYTES]
 *
 * --huge asks for transparent huge pages (madvise MADV_HUGEPAGE); without it the buffer sits in 4 KiB pages,
 * as the memory-mapped model file does. --prefetch adds a software prefetch BYTES ahead of each load.
 * Prints one JSON object per run: GB = 1e9 bytes.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

typedef struct {
    const uint8_t *base;
    size_t bytes;
    size_t prefetch;
    pthread_barrier_t *start;
    pthread_barrier_t *stop;
    int passes;
    uint64_t sink;
} job_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t read_slice(const uint8_t *p, size_t bytes, size_t prefetch) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const uint8_t *end = p + bytes;
    for (; p < end; p += 256) {
        if (prefetch) {
            _mm_prefetch((const char *)p + prefetch, _MM_HINT_T0);
            _mm_prefetch((const char *)p + prefetch + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)p + prefetch + 128, _MM_HINT_T0);
            _mm_prefetch((const char *)p + prefetch + 192, _MM_HINT_T0);
        }
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + 0)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + 96)));
        a4 = _mm256_add_epi64(a4, _mm256_load_si256((const __m256i *)(p + 128)));
        a5 = _mm256_add_epi64(a5, _mm256_load_si256((const __m256i *)(p + 160)));
        a6 = _mm256_add_epi64(a6, _mm256_load_si256((const __m256i *)(p + 192)));
        a7 = _mm256_add_epi64(a7, _mm256_load_si256((const __m256i *)(p + 224)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)),
                                 _mm256_add_epi64(_mm256_add_epi64(a4, a5), _mm256_add_epi64(a6, a7)));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, s);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

static void *worker(void *arg) {
    job_t *job = arg;
    for (int i = 0; i < job->passes; i++) {
        pthread_barrier_wait(job->start);
        job->sink += read_slice(job->base, job->bytes, job->prefetch);
        pthread_barrier_wait(job->stop);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int threads = 1, passes = 9, huge = 0;
    double gib = 1.0;
    size_t prefetch = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gib") && i + 1 < argc)
            gib = atof(argv[++i]);
        else if (!strcmp(argv[i], "--passes") && i + 1 < argc)
            passes = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prefetch") && i + 1 < argc)
            prefetch = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--huge"))
            huge = 1;
        else {
            fprintf(stderr, "usage: membw [--threads N] [--gib X] [--passes P] [--huge] [--prefetch BYTES]\n");
            return 2;
        }
    }
    if (threads < 1 || threads > 256 || passes < 1 || gib <= 0 || gib > 64) {
        fprintf(stderr, "membw: --threads 1..256, --passes >= 1, --gib in (0, 64]\n");
        return 2;
    }
    size_t slice = (size_t)(gib * (1ull << 30) / threads) / 256 * 256;
    size_t total = slice * (size_t)threads;
    uint8_t *buf = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        perror("membw: mmap");
        return 2;
    }
    madvise(buf, total, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    for (size_t i = 0; i < total; i += 4096) memset(buf + i, (int)(i >> 12) & 0xff, 4096);

    pthread_barrier_t start, stop;
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&stop, NULL, (unsigned)threads + 1);
    job_t *jobs = calloc((size_t)threads, sizeof(job_t));
    pthread_t *tids = calloc((size_t)threads, sizeof(pthread_t));
    for (int t = 0; t < threads; t++) {
        jobs[t] = (job_t){buf + (size_t)t * slice, slice, prefetch, &start, &stop, passes + 1, 0};
        pthread_create(&tids[t], NULL, worker, &jobs[t]);
    }
    double *gbs = calloc((size_t)passes, sizeof(double));
    for (int i = 0; i <= passes; i++) { /* pass 0 warms the threads and the TLB; not counted */
        pthread_barrier_wait(&start);
        double t0 = now();
        pthread_barrier_wait(&stop);
        double dt = now() - t0;
        if (i > 0) gbs[i - 1] = (double)total / dt / 1e9;
    }
    uint64_t sink = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(tids[t], NULL);
        sink += jobs[t].sink;
    }
    double best = 0;
    for (int i = 0; i < passes; i++) best = gbs[i] > best ? gbs[i] : best;
    qsort(gbs, (size_t)passes, sizeof(double), cmp_double);
    double median = passes % 2 ? gbs[passes / 2] : 0.5 * (gbs[passes / 2 - 1] + gbs[passes / 2]);
    printf("{\"threads\": %d, \"gib\": %.3f, \"pages\": \"%s\", \"prefetch\": %zu, \"passes\": %d, "
           "\"median_gb_per_s\": %.2f, \"best_gb_per_s\": %.2f, \"worst_gb_per_s\": %.2f, \"checksum\": %llu}\n",
           threads, (double)total / (1ull << 30), huge ? "huge" : "4k", prefetch, passes, median, best, gbs[0],
           (unsigned long long)(sink & 0xffff));
    return 0;
}
