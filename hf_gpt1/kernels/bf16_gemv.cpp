// hf-gpt1's CPU kernel for batch-1 decoding with bf16 weights: y = bias + W x.
//
// Why: a decode step multiplies every weight matrix by one row, so it is bound by how fast the weights stream from
// memory. torch 2.13's CPU bf16 one-row products (oneDNN `addmv`/`mv`) read their bytes at ~0.5x the rate of fp32's
// MKL `addmv` on AVX-512 machines; this loop reads them at about the machine's read bandwidth (docs/performance.md).
//
// How: each thread takes a contiguous range of rows and walks it linearly (rows are contiguous, so the whole range is
// one stream). Per row, four fp32 accumulators take 128 bf16 weights per step with `vdpbf16ps` (32 products each,
// fp32 accumulation, like oneDNN's bf16 GEMV) and a software prefetch into L2 a few KB ahead keeps enough memory
// requests in flight for two cores; the tail of a row uses masked loads. The bias is added in fp32 and the sum is
// rounded to bf16 once.
//
// The AVX-512 code is compiled for its target only (`target` attribute) and runs only where the CPU reports
// AVX512-BF16; the Python loader (hf_gpt1/kernels/__init__.py) checks that before it loads this library.

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>
#include <torch/types.h>

#include <immintrin.h>

#include <cstring>
#include <optional>

#include "bf16_ops.h"

namespace {

constexpr int64_t kPrefetchBytes = 8192;  // ahead of the current position, into L2 (measured: 4-16 KB all similar)

__attribute__((target("avx512f,avx512bw,avx512bf16"))) void addmv_rows(
    const uint16_t* weight, const uint16_t* x, const uint16_t* bias, uint16_t* out, int64_t K, int64_t begin,
    int64_t end) {
  const int64_t k128 = K / 128 * 128, k32 = K / 32 * 32;
  const __mmask32 tail = K == k32 ? 0 : (__mmask32)((1u << (K - k32)) - 1u);
  for (int64_t r = begin; r < end; ++r) {
    const uint16_t* row = weight + r * K;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < k128; k += 128) {
      const char* ahead = reinterpret_cast<const char*>(row + k) + kPrefetchBytes;
      _mm_prefetch(ahead, _MM_HINT_T1);
      _mm_prefetch(ahead + 64, _MM_HINT_T1);
      _mm_prefetch(ahead + 128, _MM_HINT_T1);
      _mm_prefetch(ahead + 192, _MM_HINT_T1);
      a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(row + k), (__m512bh)_mm512_loadu_si512(x + k));
      a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(row + k + 32), (__m512bh)_mm512_loadu_si512(x + k + 32));
      a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(row + k + 64), (__m512bh)_mm512_loadu_si512(x + k + 64));
      a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(row + k + 96), (__m512bh)_mm512_loadu_si512(x + k + 96));
    }
    for (int64_t k = k128; k < k32; k += 32) {
      a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(row + k), (__m512bh)_mm512_loadu_si512(x + k));
    }
    if (tail) {  // zero-masked loads: the lanes past K multiply 0 by 0
      a1 = _mm512_dpbf16_ps(
          a1, (__m512bh)_mm512_maskz_loadu_epi16(tail, row + k32), (__m512bh)_mm512_maskz_loadu_epi16(tail, x + k32));
    }
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    if (bias != nullptr) {
      sum += static_cast<float>(c10::BFloat16(bias[r], c10::BFloat16::from_bits()));
    }
    out[r] = c10::BFloat16(sum).x;  // round to nearest even, as ATen's bf16 conversions
  }
}

}  // namespace

torch::Tensor hf_gpt1::bf16_addmv(const std::optional<torch::Tensor>& bias, const torch::Tensor& weight, const torch::Tensor& x) {
  TORCH_CHECK(__builtin_cpu_supports("avx512bf16"), "hf_gpt1::bf16_addmv needs a CPU with AVX512-BF16");
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kBFloat16 && weight.is_contiguous() && weight.is_cpu(),
              "hf_gpt1::bf16_addmv: weight must be a contiguous 2-D bf16 CPU tensor, got ", weight.scalar_type(), " ",
              weight.sizes(), weight.is_contiguous() ? "" : " (non-contiguous)");
  const int64_t N = weight.size(0), K = weight.size(1);
  TORCH_CHECK(x.dim() == 1 && x.size(0) == K && x.scalar_type() == at::kBFloat16 && x.is_contiguous() && x.is_cpu(),
              "hf_gpt1::bf16_addmv: x must be a contiguous bf16 CPU vector of length ", K, ", got ", x.scalar_type(),
              " ", x.sizes());
  const uint16_t* bias_ptr = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N && bias->scalar_type() == at::kBFloat16 && bias->is_contiguous(),
                "hf_gpt1::bf16_addmv: bias must be a contiguous bf16 vector of length ", N, ", got ",
                bias->scalar_type(), " ", bias->sizes());
    bias_ptr = reinterpret_cast<const uint16_t*>(bias->data_ptr());
  }
  auto out = torch::empty({N}, weight.options());
  const auto* w = reinterpret_cast<const uint16_t*>(weight.data_ptr());
  const auto* xv = reinterpret_cast<const uint16_t*>(x.data_ptr());
  auto* y = reinterpret_cast<uint16_t*>(out.data_ptr());
  // Contiguous row ranges per thread; 16 rows (>= 24 KB at GPT-1's widths) is the smallest worth a thread.
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) { addmv_rows(w, xv, bias_ptr, y, K, begin, end); });
  return out;
}

TORCH_LIBRARY_FRAGMENT(hf_gpt1, m) { m.def("bf16_addmv(Tensor? bias, Tensor weight, Tensor x) -> Tensor"); }

TORCH_LIBRARY_IMPL(hf_gpt1, CPU, m) { m.impl("bf16_addmv", &hf_gpt1::bf16_addmv); }
