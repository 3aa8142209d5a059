/* XNOR + popcount binary convolution / GEMM on bit-packed operands (nnshrink.binary.xnor).
 *
 * Built on first use by nnshrink/binary/_build.py (gcc -O3 -shared -fPIC -fopenmp
 * -ffp-contract=off, no -march): the portable path runs anywhere, the AVX-512 VPOPCNTDQ path is
 * compiled with a target attribute and chosen at run time (nns_xnor_has_avx512).
 *
 * Encoding: bit 1 = +1 (value >= 0, so sign(0) = +1), bit 0 = -1. Channels are packed 64 to a
 * uint64 word, channel c in bit c % 64 of word c / 64; unused high bits of the last word are 0
 * in both operands, so their XOR is 0 and they never count.
 *
 *   packed input   [N][H + 2ph][W + 2pw][Cw]   (NHWC, spatial zero padding already in place)
 *   packed weights [OB][T][Cw][8]              (T = kh*kw taps, OB = ceil(O/8), 8 output
 *                                               channels side by side: one AVX-512 vector)
 *   weight pops    [OB][T][8]                  (number of +1 bits of each channel's tap)
 *   output         [N][Ho][Wo][O] float32       (NHWC)
 *
 * For a pixel whose every tap lies inside the image, dot = C*T - 2*popcount(x XOR w). A padded
 * position holds zero bits and so XORs to the weight bits: its count is exactly the weight's pop,
 * which is subtracted again, and only in-image taps enter the count of valid products (padding
 * contributes 0, as in a float convolution of sign(x) with zero padding). The result is then
 * scaled as (float)dot * K[p] * alpha[o] + bias[o], each a separately rounded float32 operation
 * (no fused multiply-add), which is what the PyTorch reference computes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NNS_HAVE_X86 1
#define NNS_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512vpopcntdq")))
#endif

#define NNS_API __attribute__((visibility("default")))
#define MR 4 /* output pixels per micro-kernel */
#define NR 4 /* vectors of 8 output channels per micro-kernel */

NNS_API int nns_xnor_abi_version(void) { return 1; }

NNS_API int nns_xnor_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

NNS_API int nns_xnor_has_avx512(void) {
#ifdef NNS_HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vpopcntdq");
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------------------------------- */
/* Packing: float signs -> words                                                             */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    const float *x;
    int64_t n, c, h, w;     /* logical NCHW sizes */
    int64_t sn, sc, sh, sw; /* strides in elements */
    const float *scale;     /* per-channel u = x * scale + shift before the sign, or NULL */
    const float *shift;
    int64_t ph, pw; /* zero border written around each image */
    uint64_t *out;  /* [N][H+2ph][W+2pw][Cw] */
} pack_args;

static inline float affine(const pack_args *a, float v, int64_t c) {
    if (a->scale) {
        v = v * a->scale[c];
        v = v + a->shift[c];
    }
    return v;
}

static void pack_row_portable(const pack_args *a, int64_t n, int64_t y) {
    const int64_t cw = (a->c + 63) / 64, wp = a->w + 2 * a->pw;
    uint64_t *row = a->out + ((n * (a->h + 2 * a->ph) + y + a->ph) * wp + a->pw) * cw;
    const float *base = a->x + n * a->sn + y * a->sh;
    for (int64_t x = 0; x < a->w; x++) {
        uint64_t *word = row + x * cw;
        for (int64_t c = 0; c < a->c; c++) {
            float v = affine(a, base[x * a->sw + c * a->sc], c);
            word[c >> 6] |= (uint64_t)(v >= 0.0f) << (c & 63);
        }
    }
}

#ifdef NNS_HAVE_X86
/* Channels contiguous (NHWC): 16 channels per compare. */
NNS_AVX512 static void pack_row_nhwc(const pack_args *a, int64_t n, int64_t y) {
    const int64_t cw = (a->c + 63) / 64, wp = a->w + 2 * a->pw;
    uint64_t *row = a->out + ((n * (a->h + 2 * a->ph) + y + a->ph) * wp + a->pw) * cw;
    const float *base = a->x + n * a->sn + y * a->sh;
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t x = 0; x < a->w; x++) {
        const float *px = base + x * a->sw;
        for (int64_t k = 0; k < cw; k++) {
            uint64_t bits = 0;
            for (int q = 0; q < 4; q++) {
                const int64_t c0 = k * 64 + q * 16;
                if (c0 >= a->c) break;
                const int64_t left = a->c - c0;
                const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
                __m512 v = _mm512_maskz_loadu_ps(m, px + c0);
                if (a->scale) {
                    v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, a->scale + c0));
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a->shift + c0));
                }
                bits |= (uint64_t)_mm512_mask_cmp_ps_mask(m, v, zero, _CMP_GE_OQ) << (q * 16);
            }
            row[x * cw + k] = bits;
        }
    }
}

/* Pixels contiguous (NCHW): 8 pixels per compare, one bit plane per channel. */
NNS_AVX512 static void pack_row_nchw(const pack_args *a, int64_t n, int64_t y) {
    const int64_t cw = (a->c + 63) / 64, wp = a->w + 2 * a->pw;
    uint64_t *row = a->out + ((n * (a->h + 2 * a->ph) + y + a->ph) * wp + a->pw) * cw;
    const float *base = a->x + n * a->sn + y * a->sh;
    const __m256 zero = _mm256_setzero_ps();
    uint64_t lanes[8];
    for (int64_t x0 = 0; x0 < a->w; x0 += 8) {
        const int64_t cnt = a->w - x0 < 8 ? a->w - x0 : 8;
        const __mmask8 pm = (__mmask8)((1u << cnt) - 1);
        for (int64_t k = 0; k < cw; k++) {
            __m512i acc = _mm512_setzero_si512();
            const int64_t c1 = (k + 1) * 64 < a->c ? (k + 1) * 64 : a->c;
            for (int64_t c = k * 64; c < c1; c++) {
                __m256 v = _mm256_maskz_loadu_ps(pm, base + c * a->sc + x0);
                if (a->scale) {
                    v = _mm256_mul_ps(v, _mm256_set1_ps(a->scale[c]));
                    v = _mm256_add_ps(v, _mm256_set1_ps(a->shift[c]));
                }
                const __mmask8 ge = _mm256_mask_cmp_ps_mask(pm, v, zero, _CMP_GE_OQ);
                acc = _mm512_mask_or_epi64(acc, ge, acc, _mm512_set1_epi64((long long)(1ULL << (c & 63))));
            }
            _mm512_storeu_si512(lanes, acc);
            for (int64_t i = 0; i < cnt; i++) row[(x0 + i) * cw + k] = lanes[i];
        }
    }
}
#endif

/* Sign-pack a float tensor. backend: 0 portable, 1 AVX-512. The output must be zeroed. */
NNS_API void nns_xnor_pack(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t sn,
                           int64_t sc, int64_t sh, int64_t sw, const float *scale,
                           const float *shift, int64_t ph, int64_t pw, uint64_t *out, int backend,
                           int threads) {
    pack_args a = {x, n, c, h, w, sn, sc, sh, sw, scale, shift, ph, pw, out};
    const int64_t rows = n * h;
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows * w * c > 32768)
#endif
    for (int64_t r = 0; r < rows; r++) {
        const int64_t i = r / h, y = r % h;
#ifdef NNS_HAVE_X86
        if (backend == 1 && sc == 1) {
            pack_row_nhwc(&a, i, y);
            continue;
        }
        if (backend == 1 && sw == 1) {
            pack_row_nchw(&a, i, y);
            continue;
        }
#endif
        pack_row_portable(&a, i, y);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Convolution                                                                               */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    const uint64_t *xb;   /* input words [N][Hp][Wp][cw]; slot-fused when c <= 32 (cw = 1) */
    const uint64_t *wk;   /* weights [OB][tf][cw][8], fused like the input */
    const int64_t *wpop;  /* [OB][T][8], per original tap */
    int64_t n, h, w, c, cw;
    int64_t o, ob;        /* output channels, ceil(o / 8) */
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    int64_t ho, wo;
    int64_t tf;           /* words per window and channel word: kh * ceil(kw / slots) */
    const float *k;       /* [N][Ho][Wo] activation scale, or NULL */
    const float *alpha;   /* [O] weight scale, or NULL */
    const float *bias;    /* [O] or NULL */
    float *out;           /* [N][Ho][Wo][O] */
    const int64_t *toff;  /* [tf] word offset of each window word from the window origin */
    const uint64_t *tmask; /* [tf] bits of real taps in that word (slots past kw are masked) */
    const int64_t *vrow, *vcol;  /* [Ho], [Wo] kernel rows / columns inside the image */
    const int64_t *crow, *ccol;  /* [Ho], [Wo] padding class of each output row / column */
    int64_t ncol;                /* number of column classes */
    const int64_t *corr;         /* [row class][column class][OB][8] padding pops (see below) */
} conv_args;

/* One output pixel: where its window starts and how many of its products are real. */
typedef struct {
    const uint64_t *win;
    int64_t y, x, index; /* index = (n * Ho + y) * Wo + x */
    int64_t nvalid;
    int border; /* some tap falls into the zero padding */
} pixel;

static inline void pixel_at(const conv_args *a, int64_t n, int64_t y, int64_t x, pixel *px) {
    const int64_t wp = a->w + 2 * a->pw;
    px->win = a->xb + ((n * (a->h + 2 * a->ph) + y * a->sh) * wp + x * a->sw) * a->cw;
    px->y = y;
    px->x = x;
    px->index = (n * a->ho + y) * a->wo + x;
    px->nvalid = a->c * a->vrow[y] * a->vcol[x];
    px->border = a->vrow[y] != a->kh || a->vcol[x] != a->kw;
}

/* The pixels p0 .. p0 + count - 1 of image n (row-major, may wrap to the next row). */
static inline void pixels_from(const conv_args *a, int64_t n, int64_t p0, int64_t count,
                               pixel *px) {
    int64_t y = p0 / a->wo, x = p0 % a->wo;
    for (int64_t m = 0; m < count; m++) {
        pixel_at(a, n, y, x, px + m);
        if (++x == a->wo) x = 0, y++;
    }
}

/* The padding correction of pixel px for block ob: the summed weight pops of its taps that
 * fall into the padding (they read zero bits, so their XOR counted exactly the weight's +1
 * bits). It depends only on which kernel rows and columns are inside, so it is tabulated once
 * per (row class, column class). */
static inline const int64_t *padding_pops(const conv_args *a, const pixel *px, int64_t ob) {
    return a->corr + ((a->crow[px->y] * a->ncol + a->ccol[px->x]) * a->ob + ob) * 8;
}

/* Scale the popcounts of one pixel for 8 output channels (lanes o0..o0+7) and store them. */
static inline void finish_portable(const conv_args *a, const pixel *px, int64_t o0,
                                   const int64_t *pop) {
    const float kk = a->k ? a->k[px->index] : 1.0f;
    float *dst = a->out + px->index * a->o;
    const int64_t *corr = px->border ? padding_pops(a, px, o0 / 8) : NULL;
    for (int l = 0; l < 8 && o0 + l < a->o; l++) {
        float v = (float)(px->nvalid - 2 * (pop[l] - (corr ? corr[l] : 0)));
        if (a->k) v = v * kk;
        if (a->alpha) v = v * a->alpha[o0 + l];
        if (a->bias) v = v + a->bias[o0 + l];
        dst[o0 + l] = v;
    }
}

static void block_portable(const conv_args *a, int64_t n, int64_t p0, int64_t mr, int64_t ob0,
                           int64_t nr) {
    const int64_t tf = a->tf, cw = a->cw;
    pixel px[MR];
    pixels_from(a, n, p0, mr, px);
    for (int64_t m = 0; m < mr; m++) {
        for (int64_t r = 0; r < nr; r++) {
            const uint64_t *wb = a->wk + (ob0 + r) * tf * cw * 8;
            int64_t pop[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t t = 0; t < tf; t++)
                for (int64_t k = 0; k < cw; k++) {
                    const uint64_t v = px[m].win[a->toff[t] + k], mask = a->tmask[t];
                    const uint64_t *ws = wb + (t * cw + k) * 8;
                    for (int l = 0; l < 8; l++) pop[l] += __builtin_popcountll((v ^ ws[l]) & mask);
                }
            finish_portable(a, px + m, (ob0 + r) * 8, pop);
        }
    }
}

#ifdef NNS_HAVE_X86
NNS_AVX512 static inline void finish_avx512(const conv_args *a, const pixel *px, int64_t o0,
                                            __m512i pop) {
    if (px->border) pop = _mm512_sub_epi64(pop, _mm512_loadu_si512(padding_pops(a, px, o0 / 8)));
    const __m512i dot = _mm512_sub_epi64(_mm512_set1_epi64(px->nvalid), _mm512_slli_epi64(pop, 1));
    __m256 v = _mm512_cvtepi64_ps(dot); /* exact: |dot| < 2^24 */
    const int64_t left = a->o - o0;
    const __mmask8 om = left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1);
    if (a->k) v = _mm256_mul_ps(v, _mm256_set1_ps(a->k[px->index]));
    if (a->alpha) v = _mm256_mul_ps(v, _mm256_maskz_loadu_ps(om, a->alpha + o0));
    if (a->bias) v = _mm256_add_ps(v, _mm256_maskz_loadu_ps(om, a->bias + o0));
    _mm256_mask_storeu_ps(a->out + px->index * a->o + o0, om, v);
}

/* MRxNR register block: MR pixels times NR*8 output channels, accumulators stay in registers
 * (the loops have constant trip counts once inlined into the specialised callers below).
 * (x XOR w) AND mask is one vpternlogq (imm 0x28). */
NNS_AVX512 static inline __attribute__((always_inline)) void
block_avx512_fixed(const conv_args *a, int64_t n, int64_t p0, int64_t ob0, const int mr,
                   const int nr) {
    const int64_t tf = a->tf, cw = a->cw, bstride = tf * cw * 8;
    pixel px[MR];
    const uint64_t *win[MR];
    __m512i acc[MR][NR];
    pixels_from(a, n, p0, mr, px);
#pragma GCC unroll 4
    for (int m = 0; m < mr; m++) {
        win[m] = px[m].win;
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) acc[m][r] = _mm512_setzero_si512();
    }
    const uint64_t *wb = a->wk + ob0 * bstride;
    for (int64_t t = 0; t < tf; t++) {
        const int64_t off = a->toff[t];
        const __m512i mask = _mm512_set1_epi64((long long)a->tmask[t]);
        const uint64_t *wt = wb + t * cw * 8;
        for (int64_t k = 0; k < cw; k++) {
            __m512i b[NR];
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) b[r] = _mm512_loadu_si512(wt + r * bstride + k * 8);
#pragma GCC unroll 4
            for (int m = 0; m < mr; m++) {
                const __m512i x = _mm512_set1_epi64((long long)win[m][off + k]);
#pragma GCC unroll 4
                for (int r = 0; r < nr; r++)
                    acc[m][r] = _mm512_add_epi64(
                        acc[m][r], _mm512_popcnt_epi64(_mm512_ternarylogic_epi64(x, b[r], mask, 0x28)));
            }
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < mr; m++)
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) finish_avx512(a, px + m, (ob0 + r) * 8, acc[m][r]);
}

#define NNS_BLOCK(M, R)                                                                        \
    NNS_AVX512 static void block_avx512_##M##_##R(const conv_args *a, int64_t n, int64_t p0,  \
                                                  int64_t ob0) {                              \
        block_avx512_fixed(a, n, p0, ob0, M, R);                                              \
    }
NNS_BLOCK(4, 4) NNS_BLOCK(4, 3) NNS_BLOCK(4, 2) NNS_BLOCK(4, 1)
NNS_BLOCK(3, 4) NNS_BLOCK(3, 3) NNS_BLOCK(3, 2) NNS_BLOCK(3, 1)
NNS_BLOCK(2, 4) NNS_BLOCK(2, 3) NNS_BLOCK(2, 2) NNS_BLOCK(2, 1)
NNS_BLOCK(1, 4) NNS_BLOCK(1, 3) NNS_BLOCK(1, 2) NNS_BLOCK(1, 1)

typedef void (*block_fn)(const conv_args *, int64_t, int64_t, int64_t);
static const block_fn BLOCKS[MR][NR] = {
    {block_avx512_1_1, block_avx512_1_2, block_avx512_1_3, block_avx512_1_4},
    {block_avx512_2_1, block_avx512_2_2, block_avx512_2_3, block_avx512_2_4},
    {block_avx512_3_1, block_avx512_3_2, block_avx512_3_3, block_avx512_3_4},
    {block_avx512_4_1, block_avx512_4_2, block_avx512_4_3, block_avx512_4_4},
};
#endif

/* Kernel taps (of k, spaced dil) inside [0, size) for output position out, as a bit mask. */
static uint64_t inside_mask(int64_t out, int64_t stride, int64_t pad, int64_t k, int64_t dil,
                            int64_t size) {
    uint64_t bits = 0;
    for (int64_t i = 0; i < k; i++) {
        const int64_t at = out * stride - pad + i * dil;
        if (at >= 0 && at < size) bits |= 1ULL << i;
    }
    return bits;
}

/* Binary convolution (a GEMM when H = W = kh = kw = 1). backend: 0 portable, 1 AVX-512.
 *
 * With c <= 32 channels a 64-bit word would be mostly empty, so `slots` = min(64 / c, kw)
 * horizontally adjacent taps share one word ("slot fusion": word(y, x) holds the pixels
 * x, x + dw, ... in slots of c bits, and so do the weights); slots past the kernel's width are
 * masked out. Returns 0, -1 when kh or kw exceeds 64, -2 when out of memory. */
NNS_API int nns_xnor_conv(const uint64_t *xb, const uint64_t *wk, const int64_t *wpop, int64_t n,
                          int64_t c, int64_t h, int64_t w, int64_t o, int64_t kh, int64_t kw,
                          int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                          int64_t ho, int64_t wo, const float *k, const float *alpha,
                          const float *bias, float *out, int backend, int threads) {
    if (kh > 64 || kw > 64) return -1;
    const int64_t T = kh * kw, cw = (c + 63) / 64, wp = w + 2 * pw, hp = h + 2 * ph;
    const int64_t ob = (o + 7) / 8;
    int64_t slots = c <= 32 ? 64 / c : 1;
    if (slots > kw) slots = kw;
    const int64_t groups = (kw + slots - 1) / slots, tf = kh * groups;
    const size_t meta = (size_t)(4 * (ho + wo) + 2 * tf);
    int64_t *buf = (int64_t *)malloc(meta * sizeof(int64_t));
    uint64_t *fx = NULL, *fw = NULL;
    if (slots > 1) {
        fx = (uint64_t *)malloc((size_t)(n * hp * wp > 0 ? n * hp * wp : 1) * sizeof(uint64_t));
        fw = (uint64_t *)malloc((size_t)(ob * tf * 8) * sizeof(uint64_t));
    }
    if (!buf || (slots > 1 && (!fx || !fw))) {
        free(buf), free(fx), free(fw);
        return -2;
    }
    int64_t *vrow = buf, *vcol = vrow + ho, *crow = vcol + wo, *ccol = crow + ho, *toff = ccol + wo;
    uint64_t *mrow = (uint64_t *)(toff + tf), *mcol = mrow + ho, *tmask = mcol + wo;
    /* classes: distinct masks of inside rows (columns), numbered in order of appearance */
    int64_t nrow = 0, ncol = 0;
    for (int64_t y = 0; y < ho; y++) {
        mrow[y] = inside_mask(y, sh, ph, kh, dh, h);
        vrow[y] = __builtin_popcountll(mrow[y]);
        crow[y] = -1;
        for (int64_t q = 0; q < y && crow[y] < 0; q++)
            if (mrow[q] == mrow[y]) crow[y] = crow[q];
        if (crow[y] < 0) crow[y] = nrow++;
    }
    for (int64_t x = 0; x < wo; x++) {
        mcol[x] = inside_mask(x, sw, pw, kw, dw, w);
        vcol[x] = __builtin_popcountll(mcol[x]);
        ccol[x] = -1;
        for (int64_t q = 0; q < x && ccol[x] < 0; q++)
            if (mcol[q] == mcol[x]) ccol[x] = ccol[q];
        if (ccol[x] < 0) ccol[x] = ncol++;
    }
    int64_t *corr = (int64_t *)calloc((size_t)(nrow * ncol * ob * 8), sizeof(int64_t));
    char *filled = (char *)calloc((size_t)(nrow * ncol), 1);
    if (!corr || !filled) {
        free(buf), free(fx), free(fw), free(corr), free(filled);
        return -2;
    }
    for (int64_t y = 0; y < ho; y++)
        for (int64_t x = 0; x < wo; x++) {
            const int64_t cls = crow[y] * ncol + ccol[x];
            if (filled[cls]) continue;
            filled[cls] = 1;
            int64_t *dst = corr + cls * ob * 8;
            for (int64_t i = 0; i < kh; i++)
                for (int64_t j = 0; j < kw; j++) {
                    if (((mrow[y] >> i) & 1) && ((mcol[x] >> j) & 1)) continue;
                    for (int64_t b = 0; b < ob * 8; b++)
                        dst[b] += wpop[((b / 8) * T + i * kw + j) * 8 + b % 8];
                }
        }
    free(filled);
    const uint64_t *xin = xb, *win = wk;
    int64_t cwk = cw;
    if (slots == 1) {
        for (int64_t t = 0; t < T; t++) {
            toff[t] = ((t / kw) * dh * wp + (t % kw) * dw) * cw;
            tmask[t] = ~0ULL;
        }
    } else {
        const uint64_t low = (1ULL << c) - 1;
        for (int64_t i = 0; i < kh; i++)
            for (int64_t g = 0; g < groups; g++) {
                uint64_t m = 0;
                for (int64_t s = 0; s < slots && g * slots + s < kw; s++) m |= low << (s * c);
                toff[i * groups + g] = i * dh * wp + g * slots * dw;
                tmask[i * groups + g] = m;
            }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && n * hp > 8)
#endif
        for (int64_t r = 0; r < n * hp; r++)
            for (int64_t x = 0; x < wp; x++) {
                uint64_t v = 0;
                for (int64_t s = 0; s < slots && x + s * dw < wp; s++)
                    v |= xb[r * wp + x + s * dw] << (s * c);
                fx[r * wp + x] = v;
            }
        for (int64_t b = 0; b < ob; b++)
            for (int64_t i = 0; i < kh; i++)
                for (int64_t g = 0; g < groups; g++)
                    for (int l = 0; l < 8; l++) {
                        uint64_t v = 0;
                        for (int64_t s = 0; s < slots && g * slots + s < kw; s++)
                            v |= wk[(b * T + i * kw + g * slots + s) * 8 + l] << (s * c);
                        fw[((b * tf) + i * groups + g) * 8 + l] = v;
                    }
        xin = fx, win = fw, cwk = 1;
    }
    conv_args a = {xin, win, wpop, n, h, w, c, cwk, o, ob, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                   tf, k, alpha, bias, out, toff, tmask, vrow, vcol, crow, ccol, ncol, corr};
    const int64_t P = ho * wo, npb = (P + MR - 1) / MR, nog = (ob + NR - 1) / NR;
    const int64_t tasks = n * nog * npb;
    (void)threads;
    (void)backend;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && tasks > 1)
#endif
    for (int64_t task = 0; task < tasks; task++) {
        /* pixel blocks innermost: a thread walks the image with one weight block in L1 */
        const int64_t pb = task % npb, og = (task / npb) % nog, i = task / (npb * nog);
        const int64_t p0 = pb * MR, ob0 = og * NR;
        const int64_t mr = P - p0 < MR ? P - p0 : MR;
        const int64_t nr = ob - ob0 < NR ? ob - ob0 : NR;
#ifdef NNS_HAVE_X86
        if (backend == 1) {
            BLOCKS[mr - 1][nr - 1](&a, i, p0, ob0);
            continue;
        }
#endif
        block_portable(&a, i, p0, mr, ob0, nr);
    }
    free(buf), free(fx), free(fw), free(corr);
    return 0;
}

/* Pack the signs of a float input (optionally u = x * scale + shift first) into a scratch buffer
 * and run nns_xnor_conv on it: one call per layer. Returns 0, -1 (too many taps) or -2 (out of
 * memory). */
NNS_API int nns_xnor_conv_float(const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                                int64_t sn, int64_t sc, int64_t sh_, int64_t sw_,
                                const float *scale, const float *shift, const uint64_t *wk,
                                const int64_t *wpop, int64_t o, int64_t kh, int64_t kw,
                                int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                                int64_t dw, int64_t ho, int64_t wo, const float *k,
                                const float *alpha, const float *bias, float *out, int backend,
                                int threads) {
    const int64_t words = n * (h + 2 * ph) * (w + 2 * pw) * ((c + 63) / 64);
    uint64_t *xb = (uint64_t *)calloc((size_t)(words > 0 ? words : 1), sizeof(uint64_t));
    if (!xb) return -2;
    nns_xnor_pack(x, n, c, h, w, sn, sc, sh_, sw_, scale, shift, ph, pw, xb, backend, threads);
    const int rc = nns_xnor_conv(xb, wk, wpop, n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, ho,
                                 wo, k, alpha, bias, out, backend, threads);
    free(xb);
    return rc;
}
