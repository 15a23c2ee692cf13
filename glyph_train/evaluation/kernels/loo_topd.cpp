// Exact leave-one-out top-D search on Intel AMX (glyph_train/evaluation/amx_search.py builds and calls it).
//
// Every query meets every gallery item in bf16 tile products (AMX, fp32 accumulation). The tile of scores is
// never written out: each score is compared with its query's bar (the D-th best exact score found so far minus
// the query's proven bf16 error bound), and only the few that clear it get an exact fp32 dot product. A query
// keeps the items whose exact score reaches its bar; once it holds 2D + 16 of them it keeps the best D and
// raises the bar to the D-th. So the result is each query's exact top D, whatever the bf16 rounding did.
//
// Items are ordered by cluster (the caller permutes them), and a block of queries starts with the gallery
// chunk that holds it: near neighbours come first, the bars rise early, and few later items pass.
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

struct TileConfig {  // the AMX tile configuration (palette 1)
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

struct Candidate {
    float score;
    int64_t index;  // the item's original index (the caller's order, not the cluster order)
};

// FAISS's order: higher score first; among equal scores the higher index first.
inline bool ranks_before(const Candidate& a, const Candidate& b) {
    return a.score > b.score || (a.score == b.score && a.index > b.index);
}

// Exact fp32 dot product in one fixed order (d is a multiple of 32): identical vectors score identically.
inline float dot(const float* a, const float* b, int d) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int i = 0; i < d; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

float lowest_score(const std::vector<Candidate>& v) {
    return std::min_element(v.begin(), v.end(), [](const Candidate& a, const Candidate& b) {
        return a.score < b.score;
    })->score;
}

constexpr int64_t kGalleryChunk = 512;  // gallery items per pass over a block of queries (stays in L2)
constexpr int64_t kQueryBlock = 1024;   // queries whose candidates are held at once

}  // namespace

// Linux hands out AMX state only on request; 0 on success.
extern "C" int amx_request(void) {
    return (int)syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */);
}

// Queries [q_begin, q_end) (q_begin a multiple of 32) of:
//   query_bf16   [nq_pad][d] bf16 rows (nq_pad a multiple of 32, padding rows zero)
//   gallery_vnni [ng_pad / 16][d / 32][16][32] bf16: 16-item tiles in AMX's pair-interleaved layout
//   query_f32    [nq][d], gallery_f32 [ng][d] fp32 (d a multiple of 32, zero-padded)
//   query_item   [nq] each query's own position in the gallery (left out of its list)
//   bar          [nq] in: a lower bound on the D-th best exact score (-inf if none); out: a tighter one
//   error_bound  [nq] bound on |bf16 tile score - exact fp32 score| for that query and any gallery item
//   depth        [nq] D, 1 <= D <= ng - 1
//   original     [ng] original index of each gallery position
//   out_row      [nq] the row of out_score/out_index [][width] that receives each query's list (best first)
// Returns the number of exact dot products taken.
extern "C" int64_t loo_topd(const uint16_t* query_bf16, const uint16_t* gallery_vnni, const float* query_f32,
                            const float* gallery_f32, int64_t ng, int64_t ng_pad, int d, const int64_t* query_item,
                            float* bar, const float* error_bound, const int32_t* depth, const int64_t* original,
                            int width, const int64_t* out_row, float* out_score, int64_t* out_index, int64_t q_begin,
                            int64_t q_end) {
    TileConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 8; ++t) {  // tiles 0-3: 2x2 fp32 score blocks; 4-5: query rows; 6-7: gallery items
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    const int chunks = d / 32;                 // 32 bf16 of depth per tile product
    const int64_t tile_elems = 16 * 32;        // bf16 per gallery tile and chunk
    alignas(64) float scores[32][32];
    int64_t exact_products = 0;

    for (int64_t qb = q_begin; qb < q_end; qb += kQueryBlock) {
        const int64_t qe = std::min(q_end, qb + kQueryBlock);
        std::vector<std::vector<Candidate>> kept(qe - qb);
        const int64_t num_chunks = (ng_pad + kGalleryChunk - 1) / kGalleryChunk;
        const int64_t first = std::min(num_chunks - 1, query_item[qb] / kGalleryChunk);
        for (int64_t c = 0; c < num_chunks; ++c) {
            const int64_t g_begin = ((first + c) % num_chunks) * kGalleryChunk;
            const int64_t g_end = std::min(ng_pad, g_begin + kGalleryChunk);
            for (int64_t qt = qb; qt < qe; qt += 32) {
                float threshold[32];
                for (int r = 0; r < 32; ++r)
                    threshold[r] = qt + r < qe ? bar[qt + r] - error_bound[qt + r] : INFINITY;
                const uint16_t* a = query_bf16 + qt * d;
                for (int64_t gt = g_begin; gt < g_end; gt += 32) {
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                    const uint16_t* b0 = gallery_vnni + (gt / 16) * chunks * tile_elems;
                    const uint16_t* b1 = b0 + chunks * tile_elems;
                    for (int k = 0; k < chunks; ++k) {
                        _tile_loadd(4, a + k * 32, d * 2);
                        _tile_loadd(5, a + 16 * d + k * 32, d * 2);
                        _tile_loadd(6, b0 + k * tile_elems, 64);
                        _tile_loadd(7, b1 + k * tile_elems, 64);
                        _tile_dpbf16ps(0, 4, 6);
                        _tile_dpbf16ps(1, 4, 7);
                        _tile_dpbf16ps(2, 5, 6);
                        _tile_dpbf16ps(3, 5, 7);
                    }
                    _tile_stored(0, &scores[0][0], 128);
                    _tile_stored(1, &scores[0][16], 128);
                    _tile_stored(2, &scores[16][0], 128);
                    _tile_stored(3, &scores[16][16], 128);
                    for (int r = 0; r < 32; ++r) {
                        const __m512 t = _mm512_set1_ps(threshold[r]);
                        uint32_t pass = (uint32_t)_mm512_cmp_ps_mask(_mm512_load_ps(&scores[r][0]), t, _CMP_GE_OQ) |
                                        (uint32_t)_mm512_cmp_ps_mask(_mm512_load_ps(&scores[r][16]), t, _CMP_GE_OQ) << 16;
                        while (pass) {
                            const int64_t q = qt + r, j = gt + __builtin_ctz(pass);
                            pass &= pass - 1;
                            if (j >= ng || j == query_item[q]) continue;
                            const float s = dot(query_f32 + q * d, gallery_f32 + j * d, d);
                            ++exact_products;
                            if (!(s >= bar[q])) continue;
                            std::vector<Candidate>& v = kept[q - qb];
                            v.push_back({s, original[j]});
                            const size_t D = (size_t)depth[q];
                            if (v.size() == D) {  // the D-th best so far bounds the D-th best overall
                                bar[q] = std::max(bar[q], lowest_score(v));
                            } else if (v.size() >= 2 * D + 16) {
                                std::nth_element(v.begin(), v.begin() + (D - 1), v.end(), ranks_before);
                                v.resize(D);
                                bar[q] = lowest_score(v);
                            } else {
                                continue;
                            }
                            threshold[r] = bar[q] - error_bound[q];
                        }
                    }
                }
            }
        }
        for (int64_t q = qb; q < qe; ++q) {
            std::vector<Candidate>& v = kept[q - qb];
            const size_t n = std::min({(size_t)depth[q], v.size(), (size_t)width});
            std::partial_sort(v.begin(), v.begin() + n, v.end(), ranks_before);
            for (size_t i = 0; i < n; ++i) {
                out_score[out_row[q] * width + i] = v[i].score;
                out_index[out_row[q] * width + i] = v[i].index;
            }
        }
    }
    _tile_release();
    return exact_products;
}
