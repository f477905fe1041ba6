/*
 * Makes a process see an AVX2 + FMA CPU on an x86 host that has AVX-512 or AVX-VNNI,
 * so that peers choose their AVX2 kernels the way they would on an AVX2-only machine
 * (a Zen 3, most small x86 boards). Loaded with LD_PRELOAD by the bench scripts'
 * BENCH_TIER=avx2.
 *
 * Why by hand: onnxruntime's MLAS and OpenVINO pick kernels from CPUID alone and have
 * no setting to cap the ISA; no library masks CPUID for another process. Linux's CPUID
 * faulting (arch_prctl ARCH_SET_CPUID, the `cpuid_fault` flag in /proc/cpuinfo) turns
 * each CPUID instruction into a SIGSEGV; the handler runs the real CPUID with faulting
 * briefly off, clears the AVX-512, AVX-VNNI, AMX and AVX10 bits, and steps over the
 * instruction. Threads inherit the setting; exec clears it, so each process loads this.
 *
 * Limits: glibc resolves its own string functions before this runs, so memcpy and the
 * like may still use wider registers; the kernels that the bench times do not.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int set_faulting(int on) {
  /* ARCH_SET_CPUID: 1 lets CPUID run, 0 makes it fault. */
  return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1);
}

static void mask(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c,
                 uint32_t *d) {
  if (leaf == 7 && sub == 0) {
    /* AVX512F, DQ, IFMA, PF, ER, CD, BW, VL */
    *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
            (1u << 30) | (1u << 31));
    /* AVX512_VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
    *c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
    /* AVX512_4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512_FP16, AMX-TILE, AMX-INT8 */
    *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
            (1u << 25));
  } else if (leaf == 7 && sub == 1) {
    /* AVX-VNNI, AVX512_BF16, AVX-IFMA */
    *a &= ~((1u << 4) | (1u << 5) | (1u << 23));
    /* AVX-VNNI-INT8, AVX-NE-CONVERT, AVX-VNNI-INT16, AVX10 */
    *d &= ~((1u << 4) | (1u << 5) | (1u << 10) | (1u << 19));
  } else if (leaf == 0xd && sub == 0) {
    /* The opmask and ZMM state components, and AMX's tiles. */
    *a &= ~((1u << 5) | (1u << 6) | (1u << 7) | (1u << 17) | (1u << 18));
  } else if (leaf == 0x24) {
    *a = *b = *c = *d = 0;
  }
}

static void on_segv(int sig, siginfo_t *info, void *ctx_) {
  (void)info;
  ucontext_t *ctx = ctx_;
  greg_t *g = ctx->uc_mcontext.gregs;
  const unsigned char *ip = (const unsigned char *)g[REG_RIP];
  if (ip[0] != 0x0f || ip[1] != 0xa2) {
    /* A real fault: let it happen again with the default action. */
    signal(sig, SIG_DFL);
    return;
  }
  uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX];
  uint32_t a, b, c, d;
  set_faulting(0);
  __cpuid_count(leaf, sub, a, b, c, d);
  set_faulting(1);
  mask(leaf, sub, &a, &b, &c, &d);
  g[REG_RAX] = a;
  g[REG_RBX] = b;
  g[REG_RCX] = c;
  g[REG_RDX] = d;
  g[REG_RIP] += 2;
}

__attribute__((constructor)) static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, NULL) != 0 || set_faulting(1) != 0) {
    fprintf(stderr, "x86_avx2_only: this CPU or kernel has no CPUID faulting; "
                    "the process sees the real CPU\n");
    exit(3);
  }
}
