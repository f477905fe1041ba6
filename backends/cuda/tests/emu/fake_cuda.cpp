// An emulated GPU behind the CUDA driver API, as far as cudarc and the backend use it,
// so that tests/emulated.rs can run the real Rust stack and the kernels' own CUDA C
// (compiled as host C++ with cuda_shim.h) on a machine without a GPU.
//
// Device memory is host memory (a CUdeviceptr is its address), each allocation ending
// at a guard page and filled with 0xff bytes (NaN as floats), so that reading past an
// allocation faults and reading bytes no one wrote shows. Work is synchronous: a launch
// runs its grid before it returns. Blocks run one after another; a block's threads are
// fibers on the calling thread, switched at barriers and warp operations only, which
// makes every run the same. Whatever would be undefined or a hang on a GPU (a barrier
// some threads never reach, a shuffle or a mask naming an exited lane, an address
// outside every allocation) fails the launch with a message on stderr.

#include "cuda_shim.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void* CUcontext;
typedef void* CUmodule;
typedef void* CUstream;
typedef void* CUevent;
typedef const vlm_emu_kernel* CUfunction;

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_ILLEGAL_INSTRUCTION = 715,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

// From the generated wrapper around the kernels (tests/emulated.rs).
extern "C" const vlm_emu_kernel* vlm_emu_table(int* count);
extern "C" int vlm_emu_arch(void);

vlm_emu_uint3 threadIdx __asm__("vlm_emu_threadIdx");
vlm_emu_uint3 blockIdx __asm__("vlm_emu_blockIdx");
vlm_emu_uint3 blockDim __asm__("vlm_emu_blockDim");
vlm_emu_uint3 gridDim __asm__("vlm_emu_gridDim");

static const size_t SHARED_LIMIT = 48 * 1024;
extern "C" {
alignas(16) unsigned char vlm_emu_dynamic_shared[SHARED_LIMIT];
}

// One lock for the whole device: kernels' statics are the shared memory of the one block
// running, so no two launches may overlap.
static std::mutex g_lock;

// ---------------------------------------------------------------------------------------
// Memory.

struct Allocation {
    void* map;
    size_t map_len;
    size_t len;
};
static std::map<uintptr_t, Allocation> g_allocs;

static const size_t PAGE = 4096;

// The allocation holding [p, p + n), or null.
static const Allocation* find(uintptr_t p, size_t n) {
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) return nullptr;
    --it;
    if (p - it->first > it->second.len || n > it->second.len - (p - it->first)) return nullptr;
    return &it->second;
}

// ---------------------------------------------------------------------------------------
// Fibers.

// Saves the callee-saved registers and the stack pointer in *from, resumes `to`.
extern "C" void vlm_emu_switch(void** from, void* to);
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl vlm_emu_switch\n"
        ".hidden vlm_emu_switch\n"
        ".type vlm_emu_switch,@function\n"
        "vlm_emu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size vlm_emu_switch, .-vlm_emu_switch\n");
#else
#error "the emulator's fiber switch is written for x86-64"
#endif

enum State { RUNNABLE, WAIT_BLOCK, WAIT_WARP, DONE };
enum WarpOp { OP_SYNC, OP_SHFL, OP_MMA };

struct Fiber {
    void* sp;
    State state;
    WarpOp op;
    unsigned mask;
    uint64_t value, out;
    int src; // the lane a shuffle reads
    int* acc;
    const unsigned* a;
    unsigned b0, b1;
};

static const size_t STACK = 64 * 1024;
static std::vector<unsigned char*> g_stacks; // tops; each has a guard page below
static std::vector<Fiber> g_fibers;
static int g_threads, g_current;
static void* g_scheduler;

struct Launch {
    const char* name;
    void (*thread_main)(void*);
    void* ctx;
    bool failed;
    std::string error;
};
static Launch g_launch;

static void fail(const char* fmt, ...) {
    if (g_launch.failed) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char where[160];
    snprintf(where, sizeof where, "%s, block (%u,%u,%u)", g_launch.name, blockIdx.x, blockIdx.y,
             blockIdx.z);
    g_launch.failed = true;
    g_launch.error = std::string(where) + ": " + msg;
}

static void set_thread_index(int t) {
    threadIdx.x = t % blockDim.x;
    threadIdx.y = (t / blockDim.x) % blockDim.y;
    threadIdx.z = t / (blockDim.x * blockDim.y);
}

static void fiber_main() {
    g_launch.thread_main(g_launch.ctx);
    Fiber& f = g_fibers[g_current];
    f.state = DONE;
    vlm_emu_switch(&f.sp, g_scheduler);
    __builtin_unreachable();
}

static void wait_here(State s) {
    Fiber& f = g_fibers[g_current];
    f.state = s;
    vlm_emu_switch(&f.sp, g_scheduler);
}

static bool own_lane_in(unsigned mask, const char* what) {
    int lane = g_current % 32;
    if (!(mask >> lane & 1u)) {
        fail("thread %d: %s with mask %#x, which leaves out its own lane", g_current, what, mask);
        return false;
    }
    return true;
}

extern "C" void vlm_emu_syncthreads(void) { wait_here(WAIT_BLOCK); }

extern "C" void vlm_emu_syncwarp(unsigned mask) {
    if (!own_lane_in(mask, "__syncwarp")) return;
    Fiber& f = g_fibers[g_current];
    f.op = OP_SYNC;
    f.mask = mask;
    wait_here(WAIT_WARP);
}

extern "C" uint64_t vlm_emu_shfl(unsigned mask, uint64_t bits, int kind, int arg, int width) {
    if (!own_lane_in(mask, "a shuffle")) return bits;
    if (width < 1 || width > 32 || (width & (width - 1))) {
        fail("thread %d: a shuffle of width %d", g_current, width);
        return bits;
    }
    int lane = g_current % 32, base = lane & ~(width - 1), src = lane;
    switch (kind) {
    case 0: src = base + (arg & (width - 1)); break;
    case 1: src = lane - arg >= base ? lane - arg : lane; break;
    case 2: src = lane + arg < base + width ? lane + arg : lane; break;
    default: src = (lane ^ arg) < base + width ? lane ^ arg : lane; break;
    }
    Fiber& f = g_fibers[g_current];
    f.op = OP_SHFL;
    f.mask = mask;
    f.value = bits;
    f.src = src;
    wait_here(WAIT_WARP);
    return g_fibers[g_current].out;
}

extern "C" void vlm_emu_mma_m16n8k32_u8s8(int acc[4], const unsigned a[4], unsigned b0,
                                          unsigned b1) {
    Fiber& f = g_fibers[g_current];
    f.op = OP_MMA;
    f.mask = 0xffffffffu;
    f.acc = acc;
    f.a = a;
    f.b0 = b0;
    f.b1 = b1;
    wait_here(WAIT_WARP);
}

static unsigned byte_of(unsigned w, int i) { return (w >> (8 * i)) & 0xffu; }

// mma.m16n8k32 .row.col .s32.u8.s8.s32 over the warp's fragments (PTX ISA, "Matrix
// fragments for mma.m16n8k32", 8-bit integer types), g = lane / 4, t = lane % 4.
static void mma(Fiber* lanes) {
    int A[16][32], B[32][8];
    for (int l = 0; l < 32; l++) {
        int g = l >> 2, t = l & 3;
        const unsigned* a = lanes[l].a;
        for (int j = 0; j < 4; j++) {
            A[g][t * 4 + j] = (int)byte_of(a[0], j);
            A[g + 8][t * 4 + j] = (int)byte_of(a[1], j);
            A[g][16 + t * 4 + j] = (int)byte_of(a[2], j);
            A[g + 8][16 + t * 4 + j] = (int)byte_of(a[3], j);
            B[t * 4 + j][g] = (int)(signed char)byte_of(lanes[l].b0, j);
            B[16 + t * 4 + j][g] = (int)(signed char)byte_of(lanes[l].b1, j);
        }
    }
    for (int l = 0; l < 32; l++) {
        int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; i++) {
            int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
            int s = 0;
            for (int k = 0; k < 32; k++) s += A[row][k] * B[k][col];
            lanes[l].acc[i] += s;
        }
    }
}

// Completes the warp operations whose every named lane has arrived; false if none could.
static bool release_warps() {
    bool any = false;
    for (int w0 = 0; w0 < g_threads; w0 += 32) {
        Fiber* lanes = &g_fibers[w0];
        int n = g_threads - w0 < 32 ? g_threads - w0 : 32;
        unsigned seen = 0;
        for (int l = 0; l < n; l++) {
            if (lanes[l].state != WAIT_WARP || (seen >> l & 1u)) continue;
            unsigned mask = lanes[l].mask;
            WarpOp op = lanes[l].op;
            bool ready = true;
            for (int j = 0; j < 32; j++) {
                if (!(mask >> j & 1u)) continue;
                if (j >= n) {
                    fail("thread %d: a warp operation's mask %#x names lane %d, which the block "
                         "does not have", w0 + l, mask, j);
                    return false;
                }
                Fiber& o = lanes[j];
                if (o.state == DONE) {
                    fail("thread %d: a warp operation's mask %#x names lane %d, which has exited",
                         w0 + l, mask, j);
                    return false;
                }
                if (o.state == WAIT_WARP && (o.mask != mask || o.op != op)) {
                    fail("threads %d and %d meet at different warp operations (masks %#x, %#x)",
                         w0 + l, w0 + j, mask, o.mask);
                    return false;
                }
                if (o.state != WAIT_WARP) ready = false;
            }
            seen |= mask;
            if (!ready) continue;
            if (op == OP_MMA) {
                mma(lanes);
            } else if (op == OP_SHFL) {
                for (int j = 0; j < 32; j++) {
                    if (!(mask >> j & 1u)) continue;
                    int src = lanes[j].src;
                    if (!(mask >> src & 1u)) {
                        fail("thread %d: a shuffle (mask %#x) reads lane %d, outside the mask",
                             w0 + j, mask, src);
                        return false;
                    }
                    lanes[j].out = lanes[src].value;
                }
            }
            for (int j = 0; j < 32; j++)
                if (mask >> j & 1u) lanes[j].state = RUNNABLE;
            any = true;
        }
    }
    return any;
}

// __syncthreads: done once every thread still running waits there.
static bool release_block() {
    bool waiting = false;
    for (int t = 0; t < g_threads; t++) {
        if (g_fibers[t].state == WAIT_BLOCK) waiting = true;
        else if (g_fibers[t].state != DONE) return false;
    }
    if (!waiting) return false;
    for (int t = 0; t < g_threads; t++)
        if (g_fibers[t].state == WAIT_BLOCK) g_fibers[t].state = RUNNABLE;
    return true;
}

static void run_block() {
    for (int t = 0; t < g_threads; t++) {
        // A fresh frame: the return address of the switch is fiber_main, entered with the
        // stack as a call leaves it (16-byte aligned before the call's push).
        void** sp = (void**)g_stacks[t];
        *--sp = nullptr;
        *--sp = (void*)&fiber_main;
        for (int i = 0; i < 6; i++) *--sp = nullptr;
        g_fibers[t].sp = sp;
        g_fibers[t].state = RUNNABLE;
    }
    // Dynamic shared memory starts as garbage on a GPU; here as NaNs, which show.
    memset(vlm_emu_dynamic_shared, 0xff, sizeof vlm_emu_dynamic_shared);
    int done = 0;
    for (;;) {
        for (int t = 0; t < g_threads; t++) {
            if (g_fibers[t].state != RUNNABLE) continue;
            g_current = t;
            set_thread_index(t);
            vlm_emu_switch(&g_scheduler, g_fibers[t].sp);
            if (g_fibers[t].state == DONE) done++;
        }
        if (g_launch.failed || done == g_threads) return;
        if (release_warps() || release_block()) continue;
        if (g_launch.failed) return;
        int at_block = 0, at_warp = 0;
        for (int t = 0; t < g_threads; t++) {
            at_block += g_fibers[t].state == WAIT_BLOCK;
            at_warp += g_fibers[t].state == WAIT_WARP;
        }
        fail("deadlock: %d threads wait at __syncthreads, %d at warp operations, %d have exited",
             at_block, at_warp, done);
        return;
    }
}

// Faults inside a kernel (an address outside device memory, a fiber's stack overflow)
// end the launch instead of the process.
static thread_local sigjmp_buf t_fault_jump;
static thread_local volatile sig_atomic_t t_in_kernel;
static struct sigaction g_old_segv, g_old_bus, g_old_fpe;

static void on_fault(int sig, siginfo_t* info, void*) {
    if (!t_in_kernel) {
        // Not ours: the previous handler (or the default) takes the fault when it recurs.
        sigaction(sig, sig == SIGSEGV ? &g_old_segv : sig == SIGBUS ? &g_old_bus : &g_old_fpe,
                  nullptr);
        return;
    }
    fail("thread %d: %s at address %p", g_current,
         sig == SIGFPE ? "an arithmetic trap (integer division by zero?)"
                       : "a memory fault (outside every allocation)",
         info->si_addr);
    siglongjmp(t_fault_jump, 1);
}

static void prepare_thread_for_faults() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
        sigaction(SIGFPE, &sa, &g_old_fpe);
    });
    // The handler must run somewhere other than an overflowed fiber stack.
    stack_t cur;
    if (sigaltstack(nullptr, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
        stack_t ss;
        ss.ss_size = 256 * 1024;
        ss.ss_sp = malloc(ss.ss_size); // the thread's for good
        ss.ss_flags = 0;
        sigaltstack(&ss, nullptr);
    }
}

static void ensure_stacks(int n) {
    while ((int)g_stacks.size() < n) {
        unsigned char* m = (unsigned char*)mmap(nullptr, STACK + PAGE, PROT_READ | PROT_WRITE,
                                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) abort();
        mprotect(m, PAGE, PROT_NONE);
        g_stacks.push_back(m + PAGE + STACK);
    }
    if ((int)g_fibers.size() < n) g_fibers.resize(n);
}

// Launch geometry, set by cuLaunchKernel before the table's launch unpacks the arguments.
static unsigned g_grid[3], g_block[3], g_shared_bytes;

extern "C" int vlm_emu_run_grid(void (*thread_main)(void*), void* ctx, const uintptr_t* ptrs,
                                const int* ptr_index, int n_ptrs) {
    for (int i = 0; i < n_ptrs; i++) {
        if (ptrs[i] != 0 && !find(ptrs[i], 0)) {
            fail("argument %d, %#lx, is not a device address", ptr_index[i],
                 (unsigned long)ptrs[i]);
            return CUDA_ERROR_INVALID_VALUE;
        }
    }
    g_launch.thread_main = thread_main;
    g_launch.ctx = ctx;
    gridDim = {g_grid[0], g_grid[1], g_grid[2]};
    blockDim = {g_block[0], g_block[1], g_block[2]};
    g_threads = (int)(g_block[0] * g_block[1] * g_block[2]);
    ensure_stacks(g_threads);
    prepare_thread_for_faults();
    t_in_kernel = 1;
    if (sigsetjmp(t_fault_jump, 1) == 0) {
        for (unsigned z = 0; z < gridDim.z && !g_launch.failed; z++)
            for (unsigned y = 0; y < gridDim.y && !g_launch.failed; y++)
                for (unsigned x = 0; x < gridDim.x && !g_launch.failed; x++) {
                    blockIdx = {x, y, z};
                    run_block();
                }
    }
    t_in_kernel = 0;
    return g_launch.failed ? CUDA_ERROR_LAUNCH_FAILED : CUDA_SUCCESS;
}

// ---------------------------------------------------------------------------------------
// The driver API.

static int g_arch() { return vlm_emu_arch(); }
static int g_dummy_ctx, g_dummy_module;
static thread_local CUcontext t_ctx;
static bool g_initialized;
// A failed launch's error, for the next synchronization as on a GPU.
static CUresult g_pending;

extern "C" {

CUresult cuInit(unsigned flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    g_initialized = true;
    return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int* v) {
    *v = 12040;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int* n) {
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    *n = 1;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "vlm-edge emulated GPU (sm_%d)", g_arch() / 10);
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid(unsigned char* uuid, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    memset(uuid, 0x5a, 16);
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetUuid_v2(unsigned char* uuid, CUdevice d) { return cuDeviceGetUuid(uuid, d); }

CUresult cuDeviceGetAttribute(int* v, int attrib, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    switch (attrib) {
    case 1: *v = 1024; break;                           // max threads per block
    case 2: case 3: *v = 1024; break;                   // block x, y
    case 4: *v = 64; break;                             // block z
    case 5: *v = 0x7fffffff; break;                     // grid x
    case 6: case 7: *v = 65535; break;                  // grid y, z
    case 8: *v = (int)SHARED_LIMIT; break;              // shared memory per block
    case 10: *v = 32; break;                            // warp size
    case 16: *v = 8; break;                             // multiprocessors
    case 75: *v = g_arch() / 100; break;
    case 76: *v = g_arch() / 10 % 10; break;
    case 97: *v = (int)SHARED_LIMIT; break; // opt-in shared memory: no more than without
    default: *v = 0; break;                 // memory pools and the rest: not supported
    }
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = (size_t)16 << 30;
    return CUDA_SUCCESS;
}

CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    *free_bytes = *total = (size_t)16 << 30;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *c = &g_dummy_ctx;
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    return d == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

CUresult cuCtxSetCurrent(CUcontext c) {
    t_ctx = c;
    return CUDA_SUCCESS;
}
CUresult cuCtxGetCurrent(CUcontext* c) {
    *c = t_ctx;
    return CUDA_SUCCESS;
}

static CUresult take_pending() {
    std::lock_guard<std::mutex> g(g_lock);
    CUresult r = g_pending;
    g_pending = CUDA_SUCCESS;
    return r;
}

CUresult cuCtxSynchronize(void) { return take_pending(); }

CUresult cuStreamCreate(CUstream* s, unsigned) {
    *s = new int(0);
    return CUDA_SUCCESS;
}
CUresult cuStreamCreateWithPriority(CUstream* s, unsigned flags, int) {
    return cuStreamCreate(s, flags);
}
CUresult cuStreamDestroy_v2(CUstream s) {
    delete (int*)s;
    return CUDA_SUCCESS;
}
CUresult cuStreamSynchronize(CUstream) { return take_pending(); }
CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned) { return CUDA_SUCCESS; }

CUresult cuEventCreate(CUevent* e, unsigned) {
    *e = new int(0);
    return CUDA_SUCCESS;
}
CUresult cuEventDestroy_v2(CUevent e) {
    delete (int*)e;
    return CUDA_SUCCESS;
}
CUresult cuEventRecord(CUevent, CUstream) { return CUDA_SUCCESS; }
CUresult cuEventSynchronize(CUevent) { return CUDA_SUCCESS; }
CUresult cuEventQuery(CUevent) { return CUDA_SUCCESS; }
CUresult cuEventElapsedTime(float* ms, CUevent, CUevent) {
    *ms = 0.0f;
    return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t len) {
    if (len == 0) return CUDA_ERROR_INVALID_VALUE;
    // The allocation ends (in 256-byte steps, cudaMalloc's alignment) at a guard page.
    size_t span = (len + 255) & ~(size_t)255;
    size_t map_len = ((span + PAGE - 1) & ~(PAGE - 1)) + PAGE;
    void* m = mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    unsigned char* guard = (unsigned char*)m + map_len - PAGE;
    mprotect(guard, PAGE, PROT_NONE);
    unsigned char* base = guard - span;
    memset(base, 0xff, span);
    std::lock_guard<std::mutex> g(g_lock);
    g_allocs[(uintptr_t)base] = Allocation{m, map_len, len};
    *p = (CUdeviceptr)(uintptr_t)base;
    return CUDA_SUCCESS;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
    std::lock_guard<std::mutex> g(g_lock);
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end()) return CUDA_ERROR_INVALID_VALUE;
    munmap(it->second.map, it->second.map_len);
    g_allocs.erase(it);
    return CUDA_SUCCESS;
}

static CUresult check_range(const char* what, CUdeviceptr p, size_t n) {
    if (find((uintptr_t)p, n)) return CUDA_SUCCESS;
    fprintf(stderr, "vlm-emu: %s of %zu bytes at %#llx: outside every allocation\n", what, n, p);
    return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    std::lock_guard<std::mutex> g(g_lock);
    CUresult r = check_range("a host-to-device copy", dst, n);
    if (r == CUDA_SUCCESS && n) memcpy((void*)(uintptr_t)dst, src, n);
    return r;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream) {
    return cuMemcpyHtoD_v2(dst, src, n);
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    std::lock_guard<std::mutex> g(g_lock);
    CUresult r = check_range("a device-to-host copy", src, n);
    if (r == CUDA_SUCCESS && n) memcpy(dst, (const void*)(uintptr_t)src, n);
    return r;
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream) {
    return cuMemcpyDtoH_v2(dst, src, n);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    std::lock_guard<std::mutex> g(g_lock);
    CUresult r = check_range("a device-to-device copy (to)", dst, n);
    if (r == CUDA_SUCCESS) r = check_range("a device-to-device copy (from)", src, n);
    if (r == CUDA_SUCCESS && n) memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n);
    return r;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream) {
    return cuMemcpyDtoD_v2(dst, src, n);
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    std::lock_guard<std::mutex> g(g_lock);
    CUresult r = check_range("a memset", dst, n);
    if (r == CUDA_SUCCESS && n) memset((void*)(uintptr_t)dst, v, n);
    return r;
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream) {
    return cuMemsetD8_v2(dst, v, n);
}

CUresult cuModuleLoadData(CUmodule* m, const void* image) {
    // The image is NVRTC's code for the real GPU; the emulator has the same program
    // compiled for the host, so only its kind is checked.
    if (!image || memcmp(image, "\x7f" "ELF", 4) != 0) return CUDA_ERROR_INVALID_IMAGE;
    *m = &g_dummy_module;
    return CUDA_SUCCESS;
}
CUresult cuModuleUnload(CUmodule) { return CUDA_SUCCESS; }

CUresult cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name) {
    if (m != &g_dummy_module) return CUDA_ERROR_INVALID_HANDLE;
    int n = 0;
    const vlm_emu_kernel* table = vlm_emu_table(&n);
    for (int i = 0; i < n; i++) {
        if (strcmp(table[i].name, name) == 0) {
            *f = &table[i];
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_NOT_FOUND;
}

CUresult cuFuncGetAttribute(int* v, int attrib, CUfunction f) {
    switch (attrib) {
    case 0: *v = f->max_threads ? (int)f->max_threads : 1024; break; // max threads per block
    case 1: *v = 0; break;                                         // static shared bytes
    default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}
CUresult cuFuncSetAttribute(CUfunction, int, int) { return CUDA_ERROR_NOT_SUPPORTED; }

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shared, CUstream, void** params,
                        void** extra) {
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (extra) return CUDA_ERROR_NOT_SUPPORTED;
    // The hardware's limits, which a GPU enforces at launch.
    unsigned long long threads = (unsigned long long)bx * by * bz;
    const char* bad = nullptr;
    if (!gx || !gy || !gz || !bx || !by || !bz) bad = "a zero dimension";
    else if (gy > 65535 || gz > 65535 || gx > 0x7fffffffu) bad = "a grid over the device's limits";
    else if (threads > 1024 || bz > 64) bad = "a block over the device's limits";
    else if (f->max_threads && threads > f->max_threads) bad = "a block over __launch_bounds__";
    else if (shared > SHARED_LIMIT) bad = "more dynamic shared memory than a block gets";
    if (bad) {
        fprintf(stderr, "vlm-emu: %s: grid (%u,%u,%u), block (%u,%u,%u), %u shared bytes: %s\n",
                f->name, gx, gy, gz, bx, by, bz, shared, bad);
        return CUDA_ERROR_INVALID_VALUE;
    }
    std::lock_guard<std::mutex> g(g_lock);
    g_grid[0] = gx, g_grid[1] = gy, g_grid[2] = gz;
    g_block[0] = bx, g_block[1] = by, g_block[2] = bz;
    g_shared_bytes = shared;
    g_launch.name = f->name;
    g_launch.failed = false;
    g_launch.error.clear();
    CUresult r = f->launch(params);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "vlm-emu: %s\n", g_launch.error.c_str());
        if (g_pending == CUDA_SUCCESS) g_pending = r;
    }
    return r;
}

CUresult cuGetErrorName(CUresult e, const char** s) {
    switch (e) {
    case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case CUDA_ERROR_NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
    case CUDA_ERROR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
    case CUDA_ERROR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
    case CUDA_ERROR_INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
    case CUDA_ERROR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
    case CUDA_ERROR_ILLEGAL_ADDRESS: *s = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
    case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: *s = "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"; break;
    case CUDA_ERROR_ILLEGAL_INSTRUCTION: *s = "CUDA_ERROR_ILLEGAL_INSTRUCTION"; break;
    case CUDA_ERROR_LAUNCH_FAILED: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
    case CUDA_ERROR_NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
    default: *s = nullptr; return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult e, const char** s) {
    CUresult r = cuGetErrorName(e, s);
    if (r == CUDA_SUCCESS && e == CUDA_ERROR_LAUNCH_FAILED)
        *s = "the emulated kernel failed (the emulator's message is on stderr)";
    return r;
}

} // extern "C"
