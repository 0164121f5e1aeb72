// oldfilmrestore CUDA kernels, compiled at run time by NVRTC (one module per context).
//
// Every kernel has a CPU twin in kernels::latent / kernels::formats and repeats its arithmetic in the same order;
// the module is compiled with --fmad=false so that no multiply-add is fused where the CPU rounds twice. KR and KB
// are defined by the Rust side as the exact bit patterns of kernels::formats::KR / KB.
//
// No headers: NVRTC may not find the toolkit's include folder, so f16 conversion uses inline PTX. The tests also
// compile this file as C++ on the CPU (cuda/emulate.rs) to check its logic against the twins without a GPU.

typedef unsigned char u8;
typedef unsigned short u16;

#define KG (1.0f - KR - KB)

// The layout of one component: sample x of row y starts at byte offsets[plane] + y * strides[plane] + x * step +
// offset. bytes = 0: absent (grey formats have no chroma).
struct Comp {
    int plane, step, offset, bits, shift, bytes;
};

// A frame of one pixel format in one device buffer (planes at their offsets). rgb = 1: packed RGB at rgb_step
// bytes a pixel, R, G, B at byte r, g, b.
struct Fmt {
    int width, height, sx, sy;
    int offsets[3];
    int strides[3];
    struct Comp c[3];
    int rgb, rgb_step, r, g, b;
};

__device__ __forceinline__ void rgb_to_ycbcr(float r, float g, float b, float* y, float* cb, float* cr) {
    float yy = KR * r + KG * g + KB * b;
    *y = yy;
    *cb = (b - yy) / (2.0f * (1.0f - KB)) + 0.5f;
    *cr = (r - yy) / (2.0f * (1.0f - KR)) + 0.5f;
}

__device__ __forceinline__ void ycbcr_to_rgb(float y, float cb, float cr, float* r, float* g, float* b) {
    float rr = y + 2.0f * (1.0f - KR) * (cr - 0.5f);
    float bb = y + 2.0f * (1.0f - KB) * (cb - 0.5f);
    *r = rr;
    *b = bb;
    *g = (y - KR * rr - KB * bb) / KG;
}

__device__ __forceinline__ u16 f32_to_f16(float v) {
#ifdef OLDFILM_EMULATED
    return oldfilm_emu_f32_to_f16(v);  // the CPU emulation in cuda/emulate.rs
#else
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
#endif
}

__device__ __forceinline__ const u8* comp_ptr(const u8* f, const struct Fmt* m, const struct Comp* c, int x, int y) {
    return f + m->offsets[c->plane] + (size_t)y * m->strides[c->plane] + (size_t)x * c->step + c->offset;
}

__device__ __forceinline__ float read_comp(const u8* f, const struct Fmt* m, const struct Comp* c, int x, int y) {
    const u8* p = comp_ptr(f, m, c, x, y);
    if (c->bytes == 1) {
        return (float)p[0] / 255.0f;
    }
    unsigned mask = (1u << c->bits) - 1u;
    unsigned code = (unsigned)p[0] | ((unsigned)p[1] << 8);
    return (float)((code >> c->shift) & mask) / (float)mask;
}

// RGB in [0, 1] of pixel (x, y), as formats::unpack then RgbImage::from_work_frame compute it.
__device__ void pixel_rgb(const u8* f, const struct Fmt* m, int x, int y, float* r, float* g, float* b) {
    if (m->rgb) {
        const u8* p = f + m->offsets[0] + (size_t)y * m->strides[0] + (size_t)x * m->rgb_step;
        float yy, cb, cr;
        rgb_to_ycbcr((float)p[m->r] / 255.0f, (float)p[m->g] / 255.0f, (float)p[m->b] / 255.0f, &yy, &cb, &cr);
        ycbcr_to_rgb(yy, cb, cr, r, g, b);
        return;
    }
    float yy = read_comp(f, m, &m->c[0], x, y);
    if (m->c[1].bytes == 0) {
        *r = yy;
        *g = yy;
        *b = yy;
        return;
    }
    float cb = read_comp(f, m, &m->c[1], x / m->sx, y / m->sy);
    float cr = read_comp(f, m, &m->c[2], x / m->sx, y / m->sy);
    ycbcr_to_rgb(yy, cb, cr, r, g, b);
}

// Tiles [n][3][th][tw] at origins (x0, y0) of the frame, border replicated past the right and bottom edges, as
// v * scale + bias. Grid: x over tw * th, y over tiles. Twin: latent::rgb::unpack_tile.
extern "C" __global__ void unpack_tiles_f32(const u8* frame, struct Fmt m, const int* origins, int tw, int th,
                                            float scale, float bias, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int t = blockIdx.y;
    if (i >= tw * th) return;
    int x = min(origins[2 * t] + i % tw, m.width - 1);
    int y = min(origins[2 * t + 1] + i / tw, m.height - 1);
    float rgb[3];
    pixel_rgb(frame, &m, x, y, &rgb[0], &rgb[1], &rgb[2]);
    float* o = out + (size_t)t * 3 * tw * th;
    for (int c = 0; c < 3; c++) o[c * tw * th + i] = rgb[c] * scale + bias;
}

// The same, written as IEEE half (round to nearest even, as half::f16::from_f32).
extern "C" __global__ void unpack_tiles_f16(const u8* frame, struct Fmt m, const int* origins, int tw, int th,
                                            float scale, float bias, u16* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int t = blockIdx.y;
    if (i >= tw * th) return;
    int x = min(origins[2 * t] + i % tw, m.width - 1);
    int y = min(origins[2 * t + 1] + i / tw, m.height - 1);
    float rgb[3];
    pixel_rgb(frame, &m, x, y, &rgb[0], &rgb[1], &rgb[2]);
    u16* o = out + (size_t)t * 3 * tw * th;
    for (int c = 0; c < 3; c++) o[c * tw * th + i] = f32_to_f16(rgb[c] * scale + bias);
}

__device__ __forceinline__ unsigned quantize(float v, float max_code) {
    return (unsigned)fminf(fmaxf(v * max_code + 0.5f, 0.0f), max_code);
}

__device__ void write_comp(u8* f, const struct Fmt* m, const struct Comp* c, int x, int y, float v) {
    u8* p = (u8*)comp_ptr(f, m, c, x, y);
    if (c->bytes == 1) {
        p[0] = (u8)quantize(v, 255.0f);
        return;
    }
    unsigned code = quantize(v, (float)((1u << c->bits) - 1u)) << c->shift;
    p[0] = (u8)(code & 0xff);
    p[1] = (u8)((code >> 8) & 0xff);
}

// Luma (or packed RGB) of planar RGB [3][h][w] into the frame; alpha and padding bytes are not written. Twin:
// latent::rgb::pack_rgb (RgbImage::to_work_frame then formats::pack).
extern "C" __global__ void pack_luma(const float* rgb, struct Fmt m, u8* frame) {
    int n = m.width * m.height;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int x = i % m.width, y = i / m.width;
    float r = rgb[i], g = rgb[n + i], b = rgb[2 * n + i];
    float yy, cb, cr;
    if (m.rgb) {
        // 4:4:4: the block mean of one sample is (0 + u) / 1, the sample itself.
        rgb_to_ycbcr(r, g, b, &yy, &cb, &cr);
        float o[3];
        ycbcr_to_rgb(yy, cb, cr, &o[0], &o[1], &o[2]);
        u8* p = frame + m.offsets[0] + (size_t)y * m.strides[0] + (size_t)x * m.rgb_step;
        p[m.r] = (u8)quantize(o[0], 255.0f);
        p[m.g] = (u8)quantize(o[1], 255.0f);
        p[m.b] = (u8)quantize(o[2], 255.0f);
        return;
    }
    if (m.c[1].bytes == 0) {
        yy = KR * r + KG * g + KB * b;
    } else {
        rgb_to_ycbcr(r, g, b, &yy, &cb, &cr);
    }
    write_comp(frame, &m, &m.c[0], x, y, yy);
}

// Chroma of planar RGB: the mean of each sx x sy block (summed in the CPU's row-major order). Grid over chroma
// samples; not launched for grey or packed RGB.
extern "C" __global__ void pack_chroma(const float* rgb, struct Fmt m, u8* frame) {
    int cw = (m.width + m.sx - 1) / m.sx, ch = (m.height + m.sy - 1) / m.sy;
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cw * ch) return;
    int cx = j % cw, cy = j / cw, n = m.width * m.height;
    int y1 = min(cy * m.sy + m.sy, m.height), x1 = min(cx * m.sx + m.sx, m.width);
    float su = 0.0f, sv = 0.0f;
    for (int y = cy * m.sy; y < y1; y++) {
        for (int x = cx * m.sx; x < x1; x++) {
            int i = y * m.width + x;
            float yy, u, v;
            rgb_to_ycbcr(rgb[i], rgb[n + i], rgb[2 * n + i], &yy, &u, &v);
            su += u;
            sv += v;
        }
    }
    float count = (float)((y1 - cy * m.sy) * (x1 - cx * m.sx));
    write_comp(frame, &m, &m.c[1], cx, cy, su / count);
    write_comp(frame, &m, &m.c[2], cx, cy, sv / count);
}

// Similarity thumbnail of planar RGB [3][h][w]: (2v - 1) box-averaged over f x f blocks. Twin:
// latent::similarity::thumbnail.
extern "C" __global__ void thumbnail(const float* rgb, int w, int h, int f, int tw, int th, float* out) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= tw * th) return;
    int tx = j % tw, ty = j / tw, n = w * h;
    int y1 = min(ty * f + f, h), x1 = min(tx * f + f, w);
    float count = (float)((y1 - ty * f) * (x1 - tx * f));
    float s[3] = {0.0f, 0.0f, 0.0f};
    for (int y = ty * f; y < y1; y++) {
        for (int x = tx * f; x < x1; x++) {
            for (int c = 0; c < 3; c++) s[c] += 2.0f * rgb[c * n + y * w + x] - 1.0f;
        }
    }
    for (int c = 0; c < 3; c++) out[c * tw * th + j] = s[c] / count;
}

// (a.b, a.a, b.b) in f64 with one block (any power-of-two size up to 1024). Twin: latent::similarity::cosine_sums.
extern "C" __global__ void cosine_sums(const float* a, const float* b, int n, double* out) {
    __shared__ double sab[1024], saa[1024], sbb[1024];
    double ab = 0.0, aa = 0.0, bb = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        double x = (double)a[i], y = (double)b[i];
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    sab[threadIdx.x] = ab;
    saa[threadIdx.x] = aa;
    sbb[threadIdx.x] = bb;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            sab[threadIdx.x] += sab[threadIdx.x + s];
            saa[threadIdx.x] += saa[threadIdx.x + s];
            sbb[threadIdx.x] += sbb[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[0] = sab[0];
        out[1] = saa[0];
        out[2] = sbb[0];
    }
}

// Latent cache, step 1: mean |cur - prev| over channels per latent pixel, for every tile ([tiles][c][h][w] in,
// [tiles][h][w] out). Grid: x over h * w, y over tiles. Twin: the first half of latent::cache::latent_change.
extern "C" __global__ void latent_change(const float* cur, const float* prev, int c, int hw, float* d) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int t = blockIdx.y;
    if (i >= hw) return;
    size_t base = (size_t)t * c * hw;
    float s = 0.0f;
    for (int ch = 0; ch < c; ch++) s += fabsf(cur[base + ch * hw + i] - prev[base + ch * hw + i]);
    d[(size_t)t * hw + i] = s / (float)c;
}

// Latent cache, step 2: 3x3 box of the change (replicated border), weight blend * exp(-(change / tol)^2) in f64,
// then den = w * cached + (1 - w) * den for every channel. Twin: latent::cache::blend_tile.
extern "C" __global__ void latent_blend(const float* d, const float* cached, float* den, int c, int h, int w,
                                        float blend, float tol) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int t = blockIdx.y;
    int hw = h * w;
    if (i >= hw) return;
    int x = i % w, y = i / w;
    const float* dt = d + (size_t)t * hw;
    float s = 0.0f;
    for (int dy = -1; dy <= 1; dy++) {
        int yy = min(max(y + dy, 0), h - 1);
        for (int dx = -1; dx <= 1; dx++) {
            int xx = min(max(x + dx, 0), w - 1);
            s += dt[yy * w + xx];
        }
    }
    s = s / 9.0f;
    double q = (double)s / (double)tol;
    float wv = (float)((double)blend * exp(-(q * q)));
    size_t base = (size_t)t * c * hw;
    for (int ch = 0; ch < c; ch++) {
        size_t j = base + ch * hw + i;
        den[j] = wv * cached[j] + (1.0f - wv) * den[j];
    }
}

// Feathered blend of tiles [n][3][th][tw] into a frame [3][h][w]: each pixel sums the tiles that cover it in
// tile order (the CPU's accumulation order), then divides by the summed weights. weights: [n][th][tw], zero
// outside the frame. Twin: latent::tiles::Grid::blend.
extern "C" __global__ void blend_tiles(const float* tiles, const float* weights, const int* origins, int n, int tw,
                                       int th, int w, int h, float* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= w * h) return;
    int x = i % w, y = i / w;
    float acc[3] = {0.0f, 0.0f, 0.0f};
    float ws = 0.0f;
    for (int t = 0; t < n; t++) {
        int dx = x - origins[2 * t], dy = y - origins[2 * t + 1];
        if (dx < 0 || dy < 0 || dx >= tw || dy >= th) continue;
        float wv = weights[(size_t)t * tw * th + dy * tw + dx];
        const float* tile = tiles + (size_t)t * 3 * tw * th;
        for (int c = 0; c < 3; c++) acc[c] += wv * tile[c * tw * th + dy * tw + dx];
        ws += wv;
    }
    for (int c = 0; c < 3; c++) out[c * w * h + i] = acc[c] / ws;
}

// Horizontal pass of the separable Gaussian over `planes` planes of w x h (replicated border). Twin: the first
// pass of latent::blur::blur.
extern "C" __global__ void blur_rows(const float* src, const float* taps, int ntaps, int w, int h, int planes,
                                     float* dst) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)planes * w * h) return;
    int x = (int)(i % w);
    const float* row = src + (i - x);
    int r = ntaps / 2;
    float acc = 0.0f;
    for (int k = 0; k < ntaps; k++) acc += taps[k] * row[min(max(x + k - r, 0), w - 1)];
    dst[i] = acc;
}

// Vertical pass. Twin: the second pass of latent::blur::blur.
extern "C" __global__ void blur_cols(const float* src, const float* taps, int ntaps, int w, int h, int planes,
                                     float* dst) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)planes * w * h) return;
    int x = (int)(i % w), y = (int)((i / w) % h);
    const float* plane = src + (i - (size_t)y * w - x);
    int r = ntaps / 2;
    float acc = 0.0f;
    for (int k = 0; k < ntaps; k++) acc += taps[k] * plane[min(max(y + k - r, 0), h - 1) * w + x];
    dst[i] = acc;
}

// Colour fix, last step: v = (v - blur(v)) + blur(reference) when have_blur, then clamp to [0, 1]. Twin: the end
// of latent::blur::colour_fix.
extern "C" __global__ void colour_fix_combine(float* v, const float* blurred, const float* blurred_ref, size_t n,
                                              int have_blur) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float o = v[i];
    if (have_blur) o = (o - blurred[i]) + blurred_ref[i];
    v[i] = fminf(fmaxf(o, 0.0f), 1.0f);
}

// z_t = a * z0 + b * noise. Twin: latent::schedule::add_noise.
extern "C" __global__ void add_noise(const float* z0, const float* noise, float a, float b, float* out, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = a * z0[i] + b * noise[i];
}

// The denoised latent from the prediction, in place on pred: kind 0 epsilon, 1 v, 2 sample; then the boundary
// condition c_out * x0 + c_skip * z. Twin: latent::schedule::denoise_values.
extern "C" __global__ void denoise(const float* zt, float* pred, int kind, float a, float b, float c_skip,
                                   float c_out, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float z = zt[i];
    float p = pred[i];
    float x0 = kind == 0 ? (z - b * p) / a : (kind == 1 ? a * z - b * p : p);
    pred[i] = c_out * x0 + c_skip * z;
}

// The decoder's [-1, 1] back to [0, 1], in place. Twin: latent::schedule::unit_from_model.
extern "C" __global__ void unit_from_model(float* v, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    v[i] = (v[i] + 1.0f) * 0.5f;
}
