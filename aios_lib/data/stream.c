/* Memory bandwidth for Synapse's roofline: read, copy and triad kernels over large arrays.
 *
 * usage: stream MIB_PER_ARRAY REPS
 * Threads come from OMP_NUM_THREADS. Prints one JSON object: the best (highest) GB/s of
 * REPS repetitions per kernel, counting bytes the kernel must move (read: 8 B per element,
 * copy: 16, triad: 24; write-allocate traffic is not counted, as in McCalpin's STREAM).
 * Built by aios_lib.roofline with the same -O3 -march=native flags as llama.cpp, plus -fopenmp;
 * the read kernel's reduction is vectorised through `omp simd reduction` (no -ffast-math).
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double now(void) { return omp_get_wtime(); }

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoull(argv[1], 0, 10) : 256;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    size_t n = mib * 1024 * 1024 / sizeof(double);
    double *a = aligned_alloc(64, n * sizeof(double));
    double *b = aligned_alloc(64, n * sizeof(double));
    double *c = aligned_alloc(64, n * sizeof(double));
    if (!a || !b || !c) { fprintf(stderr, "out of memory for 3 x %zu MiB\n", mib); return 2; }
    /* first touch in parallel so pages land near the threads that use them */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { a[i] = 1.0 + (double)(i & 7); b[i] = 2.0; c[i] = 0.0; }
    double best_read = 0, best_copy = 0, best_triad = 0, sink = 0;
    for (int r = 0; r < reps; r++) {
        double s = 0, t0 = now();
#pragma omp parallel for simd schedule(static) reduction(+:s)
        for (size_t i = 0; i < n; i++) s += a[i];
        double t1 = now();
        sink += s;
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; i++) c[i] = a[i];
        double t2 = now();
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; i++) a[i] = b[i] + 3.0 * c[i];
        double t3 = now();
        double gr = 8.0 * n / (t1 - t0) / 1e9, gc = 16.0 * n / (t2 - t1) / 1e9, gt = 24.0 * n / (t3 - t2) / 1e9;
        if (gr > best_read) best_read = gr;
        if (gc > best_copy) best_copy = gc;
        if (gt > best_triad) best_triad = gt;
    }
    printf("{\"threads\": %d, \"mib_per_array\": %zu, \"reps\": %d, \"read_gbs\": %.3f, "
           "\"copy_gbs\": %.3f, \"triad_gbs\": %.3f, \"checksum\": %.6g}\n",
           omp_get_max_threads(), mib, reps, best_read, best_copy, best_triad, sink);
    free(a); free(b); free(c);
    return 0;
}
