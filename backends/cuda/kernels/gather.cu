// Ops that move values rather than compute them (scalar::im2col, pixel_shuffle, and the
// embedding, last-row and constant ops' loops): a thread per element, columns on the
// grid's x and rows on its y. Rows step by the grid's height, so a launch may cap it at
// the hardware's 65535 and still cover any number of rows. The one op here that
// computes, the embedding, is the reference's two roundings, product then sum.

// Patch p's tile in (channel, row, col) order: row p of `cols`, k = channels * patch^2
// values, for the gw patches across and as many down as `rows` covers.
extern "C" __global__ void vlm_im2col(const float* image, int h, int w, int patch, int gw,
                                      float* cols, int rows, int k) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= k) return;
    int pp = patch * patch;
    int ch = i / pp, y = (i % pp) / patch, x = i % patch;
    for (int p = blockIdx.y; p < rows; p += gridDim.y) {
        int gy = p / gw, gx = p % gw;
        size_t src = ((size_t)ch * h + (size_t)gy * patch + y) * w + (size_t)gx * patch + x;
        cols[(size_t)p * k + i] = image[src];
    }
}

// out[r][c] += t[r][c], `t` dense: the patch embedding's table, added after its GEMM as
// the reference adds it (the GEMM's own bias is a per-column vector).
extern "C" __global__ void vlm_add_rows_in_place(float* out, int stride, const float* t,
                                                 int rows, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        float* y = out + (size_t)r * stride + c;
        *y = *y + t[(size_t)r * cols + c];
    }
}

// out[r] = table[ids[r]] * scale[ids[r]] + add[first + r]; `scale` null is times 1.0, as
// the reference multiplies. The host has checked the ids and `first` against the
// tables; the id is checked again here because it is read from the device's copy, so
// that no id can take a thread outside the table.
extern "C" __global__ void vlm_embedding(const u32* ids, const void* table, int table_i8,
                                         const float* scale, int vocab, const float* add,
                                         int first, float* out, int stride, int rows,
                                         int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        u32 id = ids[r];
        if (id >= (u32)vocab) continue;
        size_t at = (size_t)id * cols + c;
        float v = table_i8 ? (float)((const i8*)table)[at] : ((const float*)table)[at];
        float s = scale ? scale[id] : 1.0f;
        out[(size_t)r * stride + c] = v * s + add[((size_t)first + r) * cols + c];
    }
}

// Row r of `x` to row r of `out`: the last-row and constant ops.
extern "C" __global__ void vlm_copy_rows(const float* x, int xstride, float* out, int stride,
                                         int rows, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    for (int r = blockIdx.y; r < rows; r += gridDim.y)
        out[(size_t)r * stride + c] = x[(size_t)r * xstride + c];
}

// Output token o = (i, j) of the grid gw / s wide: its column (a * s + b) * d + e is
// column e of input token (i * s + a) * gw + j * s + b.
extern "C" __global__ void vlm_pixel_shuffle(const float* x, int xstride, int gw, int s, int d,
                                             float* out, int stride, int rows, int cols) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    int blk = col / d, e = col % d;
    int a = blk / s, b = blk % s;
    int ow = gw / s;
    for (int o = blockIdx.y; o < rows; o += gridDim.y) {
        int i = o / ow, j = o % ow;
        size_t src = ((size_t)i * s + a) * gw + (size_t)j * s + b;
        out[(size_t)o * stride + col] = x[src * xstride + e];
    }
}
