/* What the kernel enables of the CPU's advertised extended states, and whether AMX runs.
 *
 * Prints key=value lines (parsed by aios_lib.facts.xstate):
 *   xcr0=0x...          XCR0 via xgetbv: the state components the OS enabled
 *                       (bit 1 SSE, 2 AVX, 5-7 AVX-512 opmask/ZMM_Hi256/Hi16_ZMM, 17-18 AMX tile config/data)
 *   xcomp_supp=0x...    arch_prctl(ARCH_GET_XCOMP_SUPP): the components the kernel supports
 *   xcomp_perm=0x...    arch_prctl(ARCH_GET_XCOMP_PERM) before asking for AMX
 *   amx_cpuid=0|1       CPUID.(7,0):EDX bits 24 (AMX-TILE) and 25 (AMX-INT8)
 *   amx_perm=ok|errno N arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)
 *   amx_tile_run=ok|wrong|SIGILL|SIGSEGV|skipped
 *                       a child loads a palette-1 tile config, multiplies two int8 tiles with
 *                       tdpbssd and checks the sums: AMX works at the instruction level.
 * Read-only: it changes nothing on the machine.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define ARCH_GET_XCOMP_SUPP 0x1021
#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

struct tilecfg {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* The config is static (in memory the compiler must keep), unlike the stack copy that
   llama.cpp's AMX kernel had optimised away. */
static struct tilecfg cfg __attribute__((aligned(64)));
static int8_t A[16][64], B[16][64];
static int32_t C[16][16];

__attribute__((target("amx-tile,amx-int8"))) static int amx_tile_run(void) {
    cfg.palette_id = 1;
    for (int t = 0; t < 3; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 64; j++) { A[i][j] = (int8_t)(i + 1); B[i][j] = 2; }
    __asm__ volatile("ldtilecfg %0" ::"m"(cfg));
    __asm__ volatile("tilezero %%tmm0" ::);
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm1" ::"r"(A), "r"((long)64));
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm2" ::"r"(B), "r"((long)64));
    __asm__ volatile("tdpbssd %%tmm2, %%tmm1, %%tmm0" ::);
    __asm__ volatile("tilestored %%tmm0, (%0,%1,1)" ::"r"(C), "r"((long)64));
    __asm__ volatile("tilerelease" ::);
    /* row i of C: sum over 64 int8 products (i+1)*2 = 128*(i+1) */
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            if (C[i][j] != 128 * (i + 1)) return 1;
    return 0;
}

int main(void) {
    unsigned a, b, c, d;
    int osxsave = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27));
    if (osxsave) printf("xcr0=0x%llx\n", (unsigned long long)xgetbv0());
    else printf("xcr0=none\n");

    uint64_t supp = 0, perm = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_SUPP, &supp) == 0) printf("xcomp_supp=0x%llx\n", (unsigned long long)supp);
    else printf("xcomp_supp=errno %d\n", errno);
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &perm) == 0) printf("xcomp_perm=0x%llx\n", (unsigned long long)perm);
    else printf("xcomp_perm=errno %d\n", errno);

    int amx = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 24)) && (d & (1u << 25));
    printf("amx_cpuid=%d\n", amx);
    if (!amx) {
        printf("amx_perm=skipped\namx_tile_run=skipped\n");
        return 0;
    }
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) {
        printf("amx_perm=errno %d\namx_tile_run=skipped\n", errno);
        return 0;
    }
    printf("amx_perm=ok\n");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) _exit(amx_tile_run() ? 3 : 0);
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFSIGNALED(st)) printf("amx_tile_run=SIG%s\n", sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "UNKNOWN");
    else printf("amx_tile_run=%s\n", WEXITSTATUS(st) == 0 ? "ok" : "wrong");
    return 0;
}
