// Row norms in the reference's order (scalar::layer_norm, scalar::rms_norm): 16 threads
// per row, thread i summing columns i, i + 16, ... in order (the reference's lane i),
// the 16 sums reduced by the fixed tree; no fused multiply-add.

#define VLM_NORM_ROWS 16

// The half-warp's 16 sums by the fixed tree. Only the row's own half-warp takes part (the
// other half may have left at the last row), so the barriers name its 16 lanes.
__device__ __forceinline__ float vlm_row_sum(volatile float* lanes, int lane, float mine) {
    unsigned half = 0xffffu << (threadIdx.x & 16);
    lanes[lane] = mine;
    __syncwarp(half);
    float s = vlm_sum16(lanes);
    __syncwarp(half);
    return s;
}

extern "C" __global__ void __launch_bounds__(256)
vlm_layer_norm(const float* x, int xstride, const float* gamma, const float* beta, float eps,
               float* out, int stride, int rows, int cols) {
    __shared__ float lanes[VLM_NORM_ROWS][16];
    int lane = threadIdx.x % 16, rr = threadIdx.x / 16;
    int r = blockIdx.x * VLM_NORM_ROWS + rr;
    // A whole half-warp shares a row, so `r < rows` is uniform within it.
    if (r >= rows) return;
    const float* xr = x + (size_t)r * xstride;
    float n = (float)cols;
    float s = 0.0f;
    for (int c = lane; c < cols; c += 16) s = s + xr[c];
    float mean = vlm_row_sum(lanes[rr], lane, s) / n;
    float v = 0.0f;
    for (int c = lane; c < cols; c += 16) {
        float d = xr[c] - mean;
        v = v + d * d;
    }
    float var = vlm_row_sum(lanes[rr], lane, v) / n;
    float inv = 1.0f / sqrtf(var + eps);
    float* yr = out + (size_t)r * stride;
    for (int c = lane; c < cols; c += 16) yr[c] = (xr[c] - mean) * inv * gamma[c] + beta[c];
}

extern "C" __global__ void __launch_bounds__(256)
vlm_rms_norm(const float* x, int xstride, const float* gamma, float eps, float* out, int stride,
             int rows, int cols) {
    __shared__ float lanes[VLM_NORM_ROWS][16];
    int lane = threadIdx.x % 16, rr = threadIdx.x / 16;
    int r = blockIdx.x * VLM_NORM_ROWS + rr;
    if (r >= rows) return;
    const float* xr = x + (size_t)r * xstride;
    float s = 0.0f;
    for (int c = lane; c < cols; c += 16) s = s + xr[c] * xr[c];
    float ms = vlm_row_sum(lanes[rr], lane, s) / (float)cols;
    float inv = 1.0f / sqrtf(ms + eps);
    float* yr = out + (size_t)r * stride;
    for (int c = lane; c < cols; c += 16) yr[c] = xr[c] * inv * gamma[c];
}
