// Lets the whole kernel program (kernels.rs SOURCE) compile as host C++ for the emulated
// GPU of tests/emulated.rs: CUDA's keywords and built-ins in terms of the emulator
// (fake_cuda.cpp), which runs a block's threads as fibers. The scalar part, and the
// reason for -ffp-contract=off, are host_shim.h's.
#pragma once

#include "../host_shim.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __launch_bounds__(n)
// Blocks run one after another, so a function's statics are its block's shared memory.
#define __shared__ static
// Every `extern __shared__` array is the one dynamic shared memory, whatever its name
// (tests/emulated.rs rewrites the declarations into this).
#define VLM_EMU_DYNAMIC_SHARED(T, name) extern T name[] __asm__("vlm_emu_dynamic_shared")

struct vlm_emu_uint3 {
    unsigned int x, y, z;
};
// Asm labels keep these CUDA names out of the library's exported symbols.
extern vlm_emu_uint3 threadIdx __asm__("vlm_emu_threadIdx");
extern vlm_emu_uint3 blockIdx __asm__("vlm_emu_blockIdx");
extern vlm_emu_uint3 blockDim __asm__("vlm_emu_blockDim");
extern vlm_emu_uint3 gridDim __asm__("vlm_emu_gridDim");

extern "C" {
void vlm_emu_syncthreads(void);
void vlm_emu_syncwarp(unsigned mask);
// kind: 0 idx, 1 up, 2 down, 3 xor; the value's bits travel as 64 bits.
uint64_t vlm_emu_shfl(unsigned mask, uint64_t bits, int kind, int arg, int width);
void vlm_emu_mma_m16n8k32_u8s8(int acc[4], const unsigned a[4], unsigned b0, unsigned b1);
}

#define __syncthreads() vlm_emu_syncthreads()
static inline void __syncwarp(unsigned mask = 0xffffffffu) { vlm_emu_syncwarp(mask); }

template <typename T>
static inline T vlm_emu_shfl_as(unsigned mask, T v, int kind, int arg, int width) {
    static_assert(sizeof(T) <= 8, "a shuffle moves at most 64 bits");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = vlm_emu_shfl(mask, bits, kind, arg, width);
    T r;
    memcpy(&r, &bits, sizeof r);
    return r;
}
template <typename T>
static inline T __shfl_sync(unsigned mask, T v, int lane, int width = 32) {
    return vlm_emu_shfl_as(mask, v, 0, lane, width);
}
template <typename T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return vlm_emu_shfl_as(mask, v, 1, (int)delta, width);
}
template <typename T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return vlm_emu_shfl_as(mask, v, 2, (int)delta, width);
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return vlm_emu_shfl_as(mask, v, 3, lane_mask, width);
}

// PTX dp4a: four byte products summed into c, each operand's bytes signed or not as the
// instruction's types say.
static inline int vlm_emu_dp4a_us(unsigned a, unsigned b, int c) {
    for (int i = 0; i < 4; i++)
        c += (int)(unsigned char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    return c;
}
static inline int vlm_emu_dp4a_ss(unsigned a, unsigned b, int c) {
    for (int i = 0; i < 4; i++)
        c += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    return c;
}

// A kernel as the driver's table holds it: its launch unpacks cuLaunchKernel's argument
// array by the kernel's own parameter types.
struct vlm_emu_kernel {
    const char* name;
    int (*launch)(void** params);
    unsigned max_threads; // __launch_bounds__, 0 without
};

extern "C" int vlm_emu_run_grid(void (*thread_main)(void*), void* ctx, const uintptr_t* ptrs,
                                const int* ptr_index, int n_ptrs);

template <typename... A>
struct vlm_emu_bound {
    void (*f)(A...);
    std::tuple<A...> args;
    static void run(void* p) {
        vlm_emu_bound* b = (vlm_emu_bound*)p;
        std::apply(b->f, b->args);
    }
};

template <typename T>
static inline T vlm_emu_arg(void* p) {
    T v;
    memcpy(&v, p, sizeof v);
    return v;
}

template <typename... A, size_t... I>
static int vlm_emu_launch_impl(void (*f)(A...), void** params, std::index_sequence<I...>) {
    vlm_emu_bound<A...> b{f, std::tuple<A...>(vlm_emu_arg<A>(params[I])...)};
    // The pointer arguments, so the driver can check they are device addresses.
    uintptr_t ptrs[sizeof...(A) + 1];
    int index[sizeof...(A) + 1];
    int n = 0;
    auto note = [&](int i, auto v) {
        if constexpr (std::is_pointer_v<decltype(v)>) {
            ptrs[n] = (uintptr_t)v;
            index[n++] = i;
        }
    };
    (note((int)I, std::get<I>(b.args)), ...);
    return vlm_emu_run_grid(&vlm_emu_bound<A...>::run, &b, ptrs, index, n);
}

template <typename... A>
static int vlm_emu_launch(void (*f)(A...), void** params) {
    return vlm_emu_launch_impl(f, params, std::index_sequence_for<A...>{});
}

#define VLM_EMU_KERNEL(name, bounds) \
    { #name, [](void** p) { return vlm_emu_launch(&name, p); }, (unsigned)(bounds) }
