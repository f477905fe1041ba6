// tests/host_math.rs's driver: the kernels' scalar functions over the f32 bit patterns
// in IN (native-endian u32s), written to OUT as 8 u32s per input: vlm_erff, vlm_expf, vlm_activate
// for activation codes 0..3, vlm_exp2_clamped, vlm_bf16_round. A file protocol keeps
// the Rust side free of FFI and of a build script.
#include <stdio.h>

#include "host_shim.h"

#include "common.cuh"
#include "erf.cu"

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN OUT\n", argv[0]);
        return 2;
    }
    FILE* in = fopen(argv[1], "rb");
    if (!in) {
        perror(argv[1]);
        return 1;
    }
    FILE* out = fopen(argv[2], "wb");
    if (!out) {
        perror(argv[2]);
        return 1;
    }
    u32 bits;
    while (fread(&bits, sizeof bits, 1, in) == 1) {
        float x = __uint_as_float(bits);
        float r[8] = {
            vlm_erff(x),
            vlm_expf(x),
            vlm_activate(x, 0),
            vlm_activate(x, 1),
            vlm_activate(x, 2),
            vlm_activate(x, 3),
            vlm_exp2_clamped(x),
            vlm_bf16_round(x),
        };
        for (float v : r) {
            u32 b = __float_as_uint(v);
            if (fwrite(&b, sizeof b, 1, out) != 1) {
                perror(argv[2]);
                return 1;
            }
        }
    }
    if (ferror(in) || fclose(out) != 0) {
        perror("host_math_driver");
        return 1;
    }
    fclose(in);
    return 0;
}
