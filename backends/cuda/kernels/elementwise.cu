// Element-wise ops, each the reference's expression (scalar::add, activate_in_place,
// glu, rope); a thread per element, rows on the grid's y.

extern "C" __global__ void vlm_add(const float* a, int astride, const float* b, int bstride,
                                   float* out, int stride, int rows, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y;
    if (c >= cols || r >= rows) return;
    out[(size_t)r * stride + c] = a[(size_t)r * astride + c] + b[(size_t)r * bstride + c];
}

extern "C" __global__ void vlm_activate_in_place(float* x, int stride, int rows, int cols,
                                                 int act) {
    int c = blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y;
    if (c >= cols || r >= rows) return;
    float* p = x + (size_t)r * stride + c;
    *p = vlm_activate(*p, act);
}

// out[r][c] = act(x[r][c]) * x[r][n + c], n = out's columns (gate first, then up).
extern "C" __global__ void vlm_glu(const float* x, int xstride, int act, float* out, int stride,
                                   int rows, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y;
    if (c >= cols || r >= rows) return;
    const float* xr = x + (size_t)r * xstride;
    out[(size_t)r * stride + c] = vlm_activate(xr[c], act) * xr[cols + c];
}

// Rotary embedding in place, "rotate half" pairing; row r at position first + r, whose
// table row holds head_dim / 2 cosines then as many sines. A thread per (head, pair).
extern "C" __global__ void vlm_rope(float* x, int stride, int rows, int heads, int head_dim,
                                    const float* table, int first) {
    int half = head_dim / 2;
    int i = blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y;
    if (i >= heads * half || r >= rows) return;
    int h = i / half, j = i % half;
    const float* t = table + (size_t)(first + r) * head_dim;
    float cs = t[j], sn = t[half + j];
    float* a = x + (size_t)r * stride + h * head_dim;
    float x1 = a[j], x2 = a[half + j];
    a[j] = x1 * cs - x2 * sn;
    a[half + j] = x2 * cs + x1 * sn;
}
