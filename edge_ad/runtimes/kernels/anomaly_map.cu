// Anomaly-map post-processing on the GPU: raw patch-score map -> full-resolution smoothed map + image score.
//
// Computes, per image n (SIMPLENET_SPEC.md section 8; reference: edge_ad.postprocess.numpy_ops.postprocess):
//   score[n]      = max over the raw patch map patch[n, :, :]                     (before resize/smoothing)
//   out[n, y, x]  = G_y * G_x * R(patch[n])                                       (separable Gaussian)
// where R is the bilinear resize h x w -> H x W with torch's align_corners=False convention and G is the
// 1-D Gaussian correlation with scipy's "reflect" boundary (d c b a | a b c d: index i < 0 -> -i - 1,
// i >= n -> 2n - 1 - i).
//
// Fusion. Bilinear resize is separable too: R = Ry * Rx (Rx resizes along x, Ry along y), and the
// horizontal blur Gx commutes with Ry (they act on different axes). So
//   out = Gy * Ry * (Gx * Rx * patch)
// and the work splits into two passes, neither of which writes the full-resolution unsmoothed map:
//   1. anomaly_map_hpass: rows[n, i, x] = (Gx * Rx * patch[n])[i, x]  -- one small [N, h, W] intermediate
//      (h rows only, e.g. 28 x 224 for a 224 crop), the x-resize evaluated on the fly from the patch row.
//   2. anomaly_map_vpass: out[n, y, x] = sum_k g[k] * (Ry * rows[n])[reflect(y + k - r), x], the y-resize
//      evaluated on the fly from the small intermediate (which stays in L1/L2).
//   3. anomaly_map_image_max: one block per image, max of the raw patch map.
//
// Taps. The Gaussian taps are not computed here: the host passes them as a device array of 2 * radius + 1
// floats, built by edge_ad.postprocess.gaussian.gaussian_taps (float64, normalised, then rounded to
// float32) -- the very taps the numpy and torch/ONNX implementations use. Sums are accumulated in float32;
// the result agrees with scipy.ndimage.gaussian_filter to ~1e-6 relative.
//
// Preconditions (checked on the host): float32, C-contiguous arrays; H, W >= radius + 1 (single reflection).
// No headers needed: compiles with NVRTC (CuPy), nvcc (pycuda SourceModule, torch extensions) alike.

// Bilinear source sample for output index `dst` of an axis resized from `in_size` to `out_size`,
// exactly as torch's upsample_bilinear2d (align_corners=False, no scale_factor) computes it in float:
// src = (in / out) * (dst + 0.5) - 0.5, clamped at 0; i1 = min(i0 + 1, in - 1); weights (1 - l, l).
__device__ __forceinline__ void bilinear_source(int dst, int in_size, int out_size, int* i0, int* i1,
                                                float* lam1) {
    const float scale = (float)in_size / (float)out_size;
    float src = scale * ((float)dst + 0.5f) - 0.5f;
    src = src < 0.0f ? 0.0f : src;
    int lo = (int)src;  // floor, src >= 0
    lo = lo < in_size - 1 ? lo : in_size - 1;
    *i0 = lo;
    *i1 = lo < in_size - 1 ? lo + 1 : lo;
    *lam1 = src - (float)lo;
}

// scipy "reflect" boundary for one reflection: valid for -n <= i < 2n.
__device__ __forceinline__ int reflect_index(int i, int n) {
    if (i < 0) return -i - 1;
    if (i >= n) return 2 * n - 1 - i;
    return i;
}

// max that propagates NaN like numpy.max / torch.amax (fmaxf would drop it).
__device__ __forceinline__ float max_nan(float a, float b) {
    return (a != a || a > b) ? a : b;
}

// Pass 1: horizontal blur of the x-resized patch rows.
//   patch: [N, h, w]   taps: [2 * radius + 1]   rows (out): [N, h, W]
// Launch: block (128, 1, 1); grid (ceil(W / 128), h, N).
extern "C" __global__ void anomaly_map_hpass(const float* __restrict__ patch, int h, int w, int W,
                                             const float* __restrict__ taps, int radius,
                                             float* __restrict__ rows) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y;
    const int n = blockIdx.z;
    if (x >= W || i >= h) return;

    const float* row = patch + ((long long)n * h + i) * w;
    float acc = 0.0f;
    for (int k = -radius; k <= radius; ++k) {
        const int xs = reflect_index(x + k, W);  // column of the resized map under this tap
        int j0, j1;
        float l1;
        bilinear_source(xs, w, W, &j0, &j1, &l1);
        const float value = (1.0f - l1) * row[j0] + l1 * row[j1];
        acc += taps[k + radius] * value;
    }
    rows[((long long)n * h + i) * W + x] = acc;
}

// Pass 2: vertical blur of the y-resized intermediate, written at full resolution.
//   rows: [N, h, W]   taps: [2 * radius + 1]   out: [N, H, W]
// Launch: block (32, 8, 1); grid (ceil(W / 32), ceil(H / 8), N). Consecutive threads read consecutive x.
extern "C" __global__ void anomaly_map_vpass(const float* __restrict__ rows, int h, int W, int H,
                                             const float* __restrict__ taps, int radius,
                                             float* __restrict__ out) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int n = blockIdx.z;
    if (x >= W || y >= H) return;

    const float* column = rows + (long long)n * h * W + x;  // element i of the column: column[i * W]
    float acc = 0.0f;
    for (int k = -radius; k <= radius; ++k) {
        const int ys = reflect_index(y + k, H);  // row of the resized map under this tap
        int i0, i1;
        float l1;
        bilinear_source(ys, h, H, &i0, &i1, &l1);
        const float value = (1.0f - l1) * column[(long long)i0 * W] + l1 * column[(long long)i1 * W];
        acc += taps[k + radius] * value;
    }
    out[((long long)n * H + y) * W + x] = acc;
}

// Image score: max of each raw patch map.
//   patch: [N, count] (count = h * w)   score (out): [N]
// Launch: block (B, 1, 1) with B a power of two <= IMAGE_MAX_THREADS (256 is typical); grid (N, 1, 1).
#define IMAGE_MAX_THREADS 256
extern "C" __global__ void anomaly_map_image_max(const float* __restrict__ patch, int count,
                                                 float* __restrict__ score) {
    __shared__ float partial[IMAGE_MAX_THREADS];
    const int n = blockIdx.x;
    const int t = threadIdx.x;
    const float* map = patch + (long long)n * count;

    float m = map[0];  // count >= 1; a real sample as the identity keeps NaN semantics simple
    for (int j = t; j < count; j += blockDim.x) m = max_nan(m, map[j]);
    partial[t] = m;
    __syncthreads();

    for (int stride = (int)blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) partial[t] = max_nan(partial[t], partial[t + stride]);
        __syncthreads();
    }
    if (t == 0) score[n] = partial[0];
}
