// Attention (ops::Attention): a block per (query row, head), blocks striding over the
// rows * heads items. An item's keys are all `keys` unmasked, or past + r + 1 for row r
// under the causal mask; query head h reads key and value head h / group.
//
// Each item works in a slot of head_dim + (longest row's keys) floats: the query head,
// then one score per key. The slot is the block's dynamic shared memory, or, when the
// keys are too many for it, the block's own part of the graph's scratch (`slots`
// non-null, `slot` floats apart; the launch then makes no more blocks than fit).
//
// Every float operation is the scalar reference's, in its order (scalar::attention,
// scalar::attention_i8kv_head), so attention in fp32, bf16 and over an int8 cache gives
// its bits. fp32's exponential is libm's expf, as the reference's (erf.cu's port: CUDA's
// own expf is within 2 ulp of it, not equal).

#define VLM_ATTN_THREADS 128
#define VLM_ATTN_WARPS (VLM_ATTN_THREADS / 32)
#define VLM_ATTN_HALVES (VLM_ATTN_THREADS / 16)
// log2(e) as f32 (core::f32::consts::LOG2_E) by its bits; a test reads it back.
#define VLM_LOG2E __int_as_float(0x3fb8aa3b)
// The reference's starting maximum, f32::NEG_INFINITY (NVRTC has no <math.h> INFINITY).
#define VLM_NEG_INF __int_as_float(0xff800000)

extern __shared__ float vlm_attn_smem[];

__device__ __forceinline__ float* vlm_attn_slot(float* slots, int slot) {
    return slots ? slots + (size_t)blockIdx.x * slot : vlm_attn_smem;
}

// The block's maximum, NaN-ignoring as f32::max: a max is the same whichever order its
// operands meet in, so a tree gives the reference's sequential fold. Every thread gets it.
__device__ float vlm_attn_block_max(float m, float* red) {
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    // `red` may still be read from the previous call.
    __syncthreads();
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = m;
    __syncthreads();
    m = red[0];
    for (int w = 1; w < VLM_ATTN_WARPS; w++) m = fmaxf(m, red[w]);
    return m;
}

// Signed bytes of `a` times signed bytes of `b`, plus `c` (alone here for the same
// reason as linear.cu's vlm_dp4a_us).
__device__ __forceinline__ int vlm_dp4a_ss(u32 a, u32 b, int c) {
#ifdef VLM_EMULATED
    return vlm_emu_dp4a_ss(a, b, c);
#else
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#endif
}

// The keys row r sees.
__device__ __forceinline__ int vlm_attn_keys(int r, int keys, int causal, int past) {
    return causal ? past + r + 1 : keys;
}

// fp32 (Precision::F32): scores dot_f32(q, k) * scale, a half-warp per key (lane i sums
// elements i, i + 16, ... in order, the 16 sums by sum16's tree), then weights
// expf(s - max) above the softmax floor, their total in key order, and
// out = sum_j (w_j * (1 / total)) * v_j in key order.
extern "C" __global__ void __launch_bounds__(VLM_ATTN_THREADS)
vlm_attention_f32(const float* q, int qstride, const float* k, int kstride, const float* v,
                  int vstride, float* out, int ostride, int rows, int heads, int d, int group,
                  float scale, int keys, int causal, int past, float* slots, int slot) {
    __shared__ float red[VLM_ATTN_WARPS];
    __shared__ volatile float lanes[VLM_ATTN_HALVES][16];
    __shared__ float total;
    float* qh = vlm_attn_slot(slots, slot);
    float* s = qh + d;
    int tid = threadIdx.x, half = tid / 16, lane = tid % 16;
    for (int item = blockIdx.x; item < rows * heads; item += gridDim.x) {
        int r = item / heads, h = item % heads;
        int n = vlm_attn_keys(r, keys, causal, past);
        size_t kc = (size_t)(h / group) * d;
        const float* qr = q + (size_t)r * qstride + (size_t)h * d;
        for (int c = tid; c < d; c += VLM_ATTN_THREADS) qh[c] = qr[c];
        __syncthreads();
        float m = VLM_NEG_INF;
        // Whole rounds of keys, so both halves of a warp always meet at its barriers.
        for (int j0 = 0; j0 < n; j0 += VLM_ATTN_HALVES) {
            int j = j0 + half;
            float acc = 0.0f;
            if (j < n) {
                const float* kr = k + (size_t)j * kstride + kc;
                for (int c = lane; c < d; c += 16) acc = acc + qh[c] * kr[c];
            }
            lanes[half][lane] = acc;
            __syncwarp();
            if (lane == 0 && j < n) {
                float x = vlm_sum16(lanes[half]) * scale;
                s[j] = x;
                m = fmaxf(m, x);
            }
            __syncwarp();
        }
        m = vlm_attn_block_max(m, red);
        for (int j = tid; j < n; j += VLM_ATTN_THREADS) {
            float t = s[j] - m;
            s[j] = t * VLM_LOG2E >= VLM_SOFTMAX_FLOOR ? vlm_expf(t) : 0.0f;
        }
        __syncthreads();
        if (tid == 0) {
            float sum = 0.0f;
            for (int j = 0; j < n; j++) sum = sum + s[j];
            total = sum;
        }
        __syncthreads();
        float inv = 1.0f / total;
        for (int j = tid; j < n; j += VLM_ATTN_THREADS) s[j] = s[j] * inv;
        __syncthreads();
        const float* vc = v + kc;
        float* o = out + (size_t)r * ostride + (size_t)h * d;
        for (int c = tid; c < d; c += VLM_ATTN_THREADS) {
            float acc = 0.0f;
#pragma unroll 8
            for (int j = 0; j < n; j++) acc = acc + s[j] * vc[(size_t)j * vstride + c];
            o[c] = acc;
        }
        // The slot is the next item's.
        __syncthreads();
    }
}

// bf16 (Precision::Bf16; `scale` is scalar::bf16_score_scale's, so scores are base-2
// logits): q, k, v rounded to bf16; scores dot_bf16_pairs (pair by pair, the odd
// product first, one chain per key: a thread per key); weights
// bf16(softmax_weight(s - max)), totalled as bf16_weight_sum (16 lanes over chunks of
// 32, lane i taking weight 2i + 1 then 2i, then sum16); out = sum over keys in
// pair_order of w_j * v_j, times 1 / total.
extern "C" __global__ void __launch_bounds__(VLM_ATTN_THREADS)
vlm_attention_bf16(const float* q, int qstride, const float* k, int kstride, const float* v,
                   int vstride, float* out, int ostride, int rows, int heads, int d, int group,
                   float scale, int keys, int causal, int past, float* slots, int slot) {
    __shared__ float red[VLM_ATTN_WARPS];
    __shared__ volatile float lanes[16];
    __shared__ float total;
    float* qh = vlm_attn_slot(slots, slot);
    float* s = qh + d;
    int tid = threadIdx.x;
    for (int item = blockIdx.x; item < rows * heads; item += gridDim.x) {
        int r = item / heads, h = item % heads;
        int n = vlm_attn_keys(r, keys, causal, past);
        size_t kc = (size_t)(h / group) * d;
        const float* qr = q + (size_t)r * qstride + (size_t)h * d;
        for (int c = tid; c < d; c += VLM_ATTN_THREADS) qh[c] = vlm_bf16_round(qr[c]);
        __syncthreads();
        float m = VLM_NEG_INF;
        for (int j = tid; j < n; j += VLM_ATTN_THREADS) {
            const float* kr = k + (size_t)j * kstride + kc;
            float acc = 0.0f;
            int c = 0;
            for (; c + 1 < d; c += 2) {
                acc = acc + qh[c + 1] * vlm_bf16_round(kr[c + 1]);
                acc = acc + qh[c] * vlm_bf16_round(kr[c]);
            }
            if (c < d) acc = acc + qh[c] * vlm_bf16_round(kr[c]);
            float x = acc * scale;
            s[j] = x;
            m = fmaxf(m, x);
        }
        m = vlm_attn_block_max(m, red);
        for (int j = tid; j < n; j += VLM_ATTN_THREADS)
            s[j] = vlm_bf16_round(vlm_softmax_weight(s[j] - m));
        __syncthreads();
        if (tid < 32) {
            if (tid < 16) {
                float l = 0.0f;
                for (int c0 = 0; c0 < n; c0 += 32) {
                    int odd = c0 + 2 * tid + 1, even = c0 + 2 * tid;
                    if (odd < n) l = l + s[odd];
                    if (even < n) l = l + s[even];
                }
                lanes[tid] = l;
            }
            __syncwarp();
            if (tid == 0) total = vlm_sum16(lanes);
        }
        __syncthreads();
        float inv = 1.0f / total;
        const float* vc = v + kc;
        float* o = out + (size_t)r * ostride + (size_t)h * d;
        for (int c = tid; c < d; c += VLM_ATTN_THREADS) {
            float acc = 0.0f;
            int j = 0;
            for (; j + 1 < n; j += 2) {
                acc = acc + s[j + 1] * vlm_bf16_round(vc[(size_t)(j + 1) * vstride + c]);
                acc = acc + s[j] * vlm_bf16_round(vc[(size_t)j * vstride + c]);
            }
            if (j < n) acc = acc + s[j] * vlm_bf16_round(vc[(size_t)j * vstride + c]);
            o[c] = acc * inv;
        }
        __syncthreads();
    }
}

// Over an int8 cache (scalar::attention_i8kv_head; rows as in cache.cu, `stride` words
// apart, `width` value bytes before the scales). The query head quantized as a cache
// head is, to bytes in the slot; scores (exact i32 dot, a thread per key) * k_scale * c,
// c = s_q * scale * log2(e); weights softmax_weight(s - max), totalled in key order;
// out = sum_t (w_t * v_scale_t) * v_t in key order, divided by the total.
extern "C" __global__ void __launch_bounds__(VLM_ATTN_THREADS)
vlm_attention_i8kv(const float* q, int qstride, const u8* k, int kstride, const u8* v,
                   int vstride, int width, float* out, int ostride, int rows, int heads, int d,
                   int group, float scale, int keys, int causal, int past, float* slots,
                   int slot) {
    __shared__ float red[VLM_ATTN_WARPS];
    __shared__ float total;
    float* base = vlm_attn_slot(slots, slot);
    i8* qq = (i8*)base;
    const u32* qw = (const u32*)base;
    float* s = base + d;
    int tid = threadIdx.x;
    for (int item = blockIdx.x; item < rows * heads; item += gridDim.x) {
        int r = item / heads, h = item % heads;
        int n = vlm_attn_keys(r, keys, causal, past);
        int kvh = h / group;
        const float* qr = q + (size_t)r * qstride + (size_t)h * d;
        float a = 0.0f;
        for (int c = tid; c < d; c += VLM_ATTN_THREADS) a = fmaxf(a, fabsf(qr[c]));
        a = vlm_attn_block_max(a, red);
        bool live = a > 0.0f;
        float inv = live ? 127.0f / a : 0.0f;
        for (int c = tid; c < d; c += VLM_ATTN_THREADS)
            qq[c] = live ? vlm_sat_i8(rintf(qr[c] * inv)) : (i8)0;
        float cq = (live ? a / 127.0f : 0.0f) * scale * VLM_LOG2E;
        __syncthreads();
        float m = VLM_NEG_INF;
        for (int t = tid; t < n; t += VLM_ATTN_THREADS) {
            const u8* kr = k + (size_t)t * kstride * 4;
            const u32* kw = (const u32*)(kr + (size_t)kvh * d);
            int dot = 0;
            for (int g = 0; g < d / 4; g++) dot = vlm_dp4a_ss(qw[g], kw[g], dot);
            float x = (float)dot * *(const float*)(kr + width + 4 * (size_t)kvh) * cq;
            s[t] = x;
            m = fmaxf(m, x);
        }
        m = vlm_attn_block_max(m, red);
        for (int t = tid; t < n; t += VLM_ATTN_THREADS) s[t] = vlm_softmax_weight(s[t] - m);
        __syncthreads();
        if (tid == 0) {
            float sum = 0.0f;
            for (int t = 0; t < n; t++) sum = sum + s[t];
            total = sum;
        }
        // The weights become w_t * v_scale_t only once the total has read them.
        __syncthreads();
        for (int t = tid; t < n; t += VLM_ATTN_THREADS)
            s[t] = s[t] * *(const float*)(v + (size_t)t * vstride * 4 + width + 4 * (size_t)kvh);
        __syncthreads();
        const i8* vc = (const i8*)v + (size_t)kvh * d;
        float* o = out + (size_t)r * ostride + (size_t)h * d;
        for (int c = tid; c < d; c += VLM_ATTN_THREADS) {
            float acc = 0.0f;
#pragma unroll 8
            for (int t = 0; t < n; t++) acc = acc + s[t] * (float)vc[(size_t)t * vstride * 4 + c];
            o[c] = acc / total;
        }
        __syncthreads();
    }
}
