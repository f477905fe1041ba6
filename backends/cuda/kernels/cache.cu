// KV cache appends (ops::CacheAppend, ops::CacheAppendI8): rows of `x` into rows
// pos .. pos + rows of a cache in a state buffer. The host has checked pos + rows against
// the capacity (it reads the position on its side), so the kernels take `pos` as given.
// Rows step by the grid's height, so a launch may cap it at the hardware's 65535.

// Rust's `f32 as i8` on a value rintf has already made integral: saturating, NaN to 0.
__device__ __forceinline__ i8 vlm_sat_i8(float t) {
    if (t != t) return 0;
    return (i8)(int)fminf(fmaxf(t, -128.0f), 127.0f);
}

// The largest |x| of a head (scalar::quantize_head_i8's fold from 0): fmaxf drops a NaN
// operand as f32::max does, so the order the lanes meet in cannot change the result.
__device__ __forceinline__ float vlm_warp_amax(const float* x, int d, int lane) {
    float a = 0.0f;
    for (int c = lane; c < d; c += 32) a = fmaxf(a, fabsf(x[c]));
    for (int off = 16; off > 0; off >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, off));
    return a;
}

// Row r of `x` to row pos + r of `cache`: bit copies.
extern "C" __global__ void vlm_cache_append(const float* x, int xstride, float* cache, int stride,
                                            int pos, int rows, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    for (int r = blockIdx.y; r < rows; r += gridDim.y)
        cache[((size_t)pos + r) * stride + c] = x[(size_t)r * xstride + c];
}

// An int8 cache row (FORMAT.md, "int8 KV cache"; scalar::I8Rows) is `width` i8 values,
// heads of `d` side by side, then one f32 scale per head; rows are `stride` words apart.
// A warp per (row, head) quantizes the head as scalar::quantize_head_i8 does: scale
// amax / 127, values rint(x * (127 / amax)), all zeros when amax is not positive.
extern "C" __global__ void vlm_cache_append_i8(const float* x, int xstride, int rows, int width,
                                               int d, u8* cache, int stride, int pos) {
    int head = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    // Uniform per warp, so every lane of a live warp reaches the shuffles.
    if (head >= width / d) return;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        const float* xh = x + (size_t)r * xstride + (size_t)head * d;
        float a = vlm_warp_amax(xh, d, lane);
        u8* row = cache + ((size_t)pos + r) * stride * 4;
        i8* qh = (i8*)row + (size_t)head * d;
        bool live = a > 0.0f;
        float inv = live ? 127.0f / a : 0.0f;
        for (int c = lane; c < d; c += 32) qh[c] = live ? vlm_sat_i8(rintf(xh[c] * inv)) : (i8)0;
        if (lane == 0) *(float*)(row + width + 4 * (size_t)head) = live ? a / 127.0f : 0.0f;
    }
}
