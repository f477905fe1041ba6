// Linear layers: activation quantization, the int8 GEMM (u8 x i8 -> i32 with dp4a, then
// the reference's requantization), and the fp32 GEMM in the reference's order.

// q = clamp(rint(x * inv) + zero, 0, top), rows of `qs` bytes, the padding zeroed
// (scalar::quantize_u8; `inv` is the host's 1 / scale, as the reference's).
extern "C" __global__ void vlm_quantize_u8(const float* x, int rows, int cols, int stride,
                                           float inv, int zero, int top, u8* q, int qs) {
    int r = blockIdx.y;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < qs; c += gridDim.x * blockDim.x) {
        u8 v = 0;
        if (c < cols) {
            float t = rintf(x[(size_t)r * stride + c] * inv) + (float)zero;
            v = t >= (float)top ? (u8)top : (t > 0.0f ? (u8)t : (u8)0);
        }
        q[(size_t)r * qs + c] = v;
    }
}

// Each inline PTX instruction sits alone in a helper so that tests/emulated.rs, which
// runs this C++ on the CPU (VLM_EMULATED), can put its own arithmetic in its place.
__device__ __forceinline__ int vlm_dp4a_us(u32 a, u32 b, int c) {
#ifdef VLM_EMULATED
    return vlm_emu_dp4a_us(a, b, c);
#else
    int d;
    // Unsigned bytes of `a` times signed bytes of `b`: the reference's u8 x i8 products.
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#endif
}

#define VLM_GEMM_TILE 64
#define VLM_GEMM_KG 16

// out[r][o] = act(x_scale * w_scale[o] * sum_k q[r][k] * w[o][k] + bias[o]).
// `w` is the format's panels (format::packed_index): as 32-bit words, the four inputs
// 4g..4g+3 of output o are word ((o / 16) * k4 + g) * 16 + o % 16. A 256-thread block
// computes a 64 x 64 tile, 4 x 4 outputs per thread, from 16 groups of 4 inputs staged
// in shared memory at a time. The i32 sums are exact, so any order gives the CPU's.
extern "C" __global__ void __launch_bounds__(256)
vlm_gemm_u8i8_dp4a_64x64(const u32* q, int qw, int k4, const u32* w, int panels,
                        const float* w_scale, float x_scale, const float* bias, int act,
                        float* out, int rows, int cols, int stride) {
    __shared__ u32 sq[VLM_GEMM_TILE][VLM_GEMM_KG + 1];
    __shared__ u32 sw[VLM_GEMM_KG][VLM_GEMM_TILE + 1];
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    int row0 = blockIdx.y * VLM_GEMM_TILE, col0 = blockIdx.x * VLM_GEMM_TILE;
    int acc[4][4] = {};
    for (int g0 = 0; g0 < k4; g0 += VLM_GEMM_KG) {
        for (int i = threadIdx.x; i < VLM_GEMM_TILE * VLM_GEMM_KG; i += 256) {
            int rr = i / VLM_GEMM_KG, gg = i % VLM_GEMM_KG;
            int r = row0 + rr, g = g0 + gg;
            sq[rr][gg] = (r < rows && g < k4) ? q[(size_t)r * qw + g] : 0u;
            // Weights: 16 consecutive outputs of one group are 16 consecutive words.
            int oo = i % VLM_GEMM_TILE, gw = i / VLM_GEMM_TILE;
            int o = col0 + oo, gw2 = g0 + gw;
            sw[gw][oo] = (o / 16 < panels && gw2 < k4)
                ? w[((size_t)(o / 16) * k4 + gw2) * 16 + o % 16] : 0u;
        }
        __syncthreads();
#pragma unroll
        for (int gg = 0; gg < VLM_GEMM_KG; gg++) {
            u32 a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = sq[ty + 16 * i][gg];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = sw[gg][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = vlm_dp4a_us(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int r = row0 + ty + 16 * i;
        if (r >= rows) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int o = col0 + tx + 16 * j;
            if (o >= cols) continue;
            float s = x_scale * w_scale[o];
            float b = bias ? bias[o] : 0.0f;
            out[(size_t)r * stride + o] = vlm_activate((float)acc[i][j] * s + b, act);
        }
    }
}

// One row (a decoder step's matrix-vector product): a warp per output, each lane a
// strided share of the groups, the exact i32 sums combined by shuffles.
extern "C" __global__ void vlm_gemv_u8i8_dp4a(const u32* q, int qw, int k4, const u32* w,
                                              const float* w_scale, float x_scale,
                                              const float* bias, int act, float* out,
                                              int rows, int cols, int stride) {
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    int r = blockIdx.y;
    if (warp >= cols || r >= rows) return;
    int o = warp;
    const u32* qr = q + (size_t)r * qw;
    const u32* wp = w + (size_t)(o / 16) * k4 * 16 + o % 16;
    int acc = 0;
    for (int g = lane; g < k4; g += 32) acc = vlm_dp4a_us(qr[g], wp[(size_t)g * 16], acc);
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) {
        float s = x_scale * w_scale[o];
        float b = bias ? bias[o] : 0.0f;
        out[(size_t)r * stride + o] = vlm_activate((float)acc * s + b, act);
    }
}

// out = act(x . W^T + bias) in the reference's order (scalar::dot_f32): input c into
// lane c mod 16, each lane a product then a sum in order, the lanes by the fixed tree.
// A thread per output: the fp32 layers an artifact keeps are few and this is exact.
extern "C" __global__ void vlm_linear_f32(const float* x, int xstride, int k, const float* w,
                                          const float* bias, int act, float* out, int rows,
                                          int cols, int stride) {
    int o = blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y;
    if (o >= cols || r >= rows) return;
    const float* xr = x + (size_t)r * xstride;
    const float* wr = w + (size_t)o * k;
    float l[16];
    for (int i = 0; i < 16; i++) l[i] = 0.0f;
    int c = 0;
    for (; c + 16 <= k; c += 16)
        for (int i = 0; i < 16; i++) l[i] = l[i] + xr[c + i] * wr[c + i];
    for (int i = 0; c + i < k; i++) l[i] = l[i] + xr[c + i] * wr[c + i];
    float y = vlm_sum16(l) + (bias ? bias[o] : 0.0f);
    out[(size_t)r * stride + o] = vlm_activate(y, act);
}

// The same product on tensor cores (sm_80 and up): mma.sync m16n8k32 multiplies u8 rows
// by s8 columns into exact i32 sums, so the outputs are the dp4a kernel's bits. A warp
// computes 32 rows x 64 outputs (2 x 8 tiles of 16 x 8), four warps a 128 x 64 block.
// Fragments (PTX ISA, "matrix fragments for mma.m16n8k32", integer types): with
// g = lane / 4 and t = lane % 4, A's four words are row g and row g + 8 at input word
// t, then the same rows at word t + 4; B's two words are output g at words t and t + 4;
// C's four sums are row g, outputs 2t and 2t + 1, then row g + 8, the same outputs.
// Activations are rows of words and weights the format's panels, so each fragment word
// is one aligned 32-bit load.
#if __CUDA_ARCH__ >= 800
// acc += A . B for one m16n8k32 tile, warp-wide: this lane's fragments, as above.
__device__ __forceinline__ void vlm_mma_m16n8k32_u8s8(int acc[4], const u32 a[4], u32 b0, u32 b1) {
#ifdef VLM_EMULATED
    vlm_emu_mma_m16n8k32_u8s8(acc, a, b0, b1);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(acc[0]), "+r"(acc[1]), "+r"(acc[2]), "+r"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
#endif

extern "C" __global__ void __launch_bounds__(128)
vlm_gemm_u8i8_mma_128x64(const u32* q, int qw, int k4, const u32* w, int panels,
                         const float* w_scale, float x_scale, const float* bias, int act,
                         float* out, int rows, int cols, int stride) {
#if __CUDA_ARCH__ >= 800
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int g = lane >> 2, t = lane & 3;
    int row0 = blockIdx.y * 128 + warp * 32, col0 = blockIdx.x * 64;
    int acc[2][8][4];
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[m][n][i] = 0;
    for (int kg = 0; kg < k4; kg += 8) {
        int k0 = kg + t, k1 = kg + t + 4;
        u32 a[2][4];
#pragma unroll
        for (int m = 0; m < 2; m++) {
            int r0 = row0 + m * 16 + g, r1 = r0 + 8;
            a[m][0] = (r0 < rows && k0 < k4) ? q[(size_t)r0 * qw + k0] : 0u;
            a[m][1] = (r1 < rows && k0 < k4) ? q[(size_t)r1 * qw + k0] : 0u;
            a[m][2] = (r0 < rows && k1 < k4) ? q[(size_t)r0 * qw + k1] : 0u;
            a[m][3] = (r1 < rows && k1 < k4) ? q[(size_t)r1 * qw + k1] : 0u;
        }
#pragma unroll
        for (int n = 0; n < 8; n++) {
            int o = col0 + n * 8 + g;
            bool has = o / 16 < panels;
            const u32* wp = w + (size_t)(o / 16) * k4 * 16 + o % 16;
            u32 b0 = (has && k0 < k4) ? wp[(size_t)k0 * 16] : 0u;
            u32 b1 = (has && k1 < k4) ? wp[(size_t)k1 * 16] : 0u;
#pragma unroll
            for (int m = 0; m < 2; m++) vlm_mma_m16n8k32_u8s8(acc[m][n], a[m], b0, b1);
        }
    }
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int r = row0 + m * 16 + g + (i >= 2 ? 8 : 0);
                int o = col0 + n * 8 + 2 * t + (i & 1);
                if (r >= rows || o >= cols) continue;
                float s = x_scale * w_scale[o];
                float b = bias ? bias[o] : 0.0f;
                out[(size_t)r * stride + o] = vlm_activate((float)acc[m][n][i] * s + b, act);
            }
#endif
}
