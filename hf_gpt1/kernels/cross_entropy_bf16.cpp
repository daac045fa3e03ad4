// hf-gpt1's CPU kernel for the language-modelling loss on bf16 logits (bf16 autocast pretraining and fine-tuning).
//
// Why: the LM loss reads 2048 x 40478 bf16 logits per 4x512 step. The chunked fp32 path in modeling_gpt1.py
// (`_ChunkedCrossEntropy`) upcasts each chunk to fp32, then runs logsumexp, gather, exp, scatter and a multiply over
// it: ~250 ms of a ~4 s bf16 step on two cores, most of it conversions and passes over fp32 copies.
//
// Per row, on the bf16 row itself (81 KB at GPT-1's vocabulary: it stays in L2 between the passes):
//   forward:  m = max_j x_j;  lse = m + log(sum_j e^(x_j - m));  picked = x_target   (fp32, 16-lane accumulators)
//   backward: grad_j = (e^(x_j - lse) - [j == target]) * scale,  rounded once to bf16
// `targets` are already safe (ignored rows carry a valid index and scale 0, as in the Python path).

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>
#include <torch/types.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "avx512_bf16.h"

namespace {

using hf_gpt1::exp_ps;
using hf_gpt1::load_bf16;
using hf_gpt1::mask_for;
using hf_gpt1::store_bf16;

inline float bf16_at(const uint16_t* p, int64_t i) { return static_cast<float>(c10::BFloat16(p[i], c10::BFloat16::from_bits())); }

HF_GPT1_AVX512 float row_logsumexp(const uint16_t* row, int64_t vocab) {
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 mx = minus_inf;
  for (int64_t i = 0; i < vocab; i += 16) {
    const __mmask16 m = mask_for(vocab - i);
    mx = _mm512_mask_max_ps(mx, m, mx, load_bf16(row + i, m));
  }
  const float row_max = _mm512_reduce_max_ps(mx);
  const __m512 shift = _mm512_set1_ps(row_max), floor = _mm512_set1_ps(-100.0f);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  int64_t i = 0;
  for (; i + 32 <= vocab; i += 32) {  // two accumulators: the exp chains are independent
    s0 = _mm512_add_ps(s0, exp_ps(_mm512_max_ps(_mm512_sub_ps(load_bf16(row + i, 0xFFFF), shift), floor)));
    s1 = _mm512_add_ps(s1, exp_ps(_mm512_max_ps(_mm512_sub_ps(load_bf16(row + i + 16, 0xFFFF), shift), floor)));
  }
  for (; i < vocab; i += 16) {
    const __mmask16 m = mask_for(vocab - i);
    s0 = _mm512_mask_add_ps(s0, m, s0, exp_ps(_mm512_max_ps(_mm512_sub_ps(load_bf16(row + i, m), shift), floor)));
  }
  return row_max + std::log(_mm512_reduce_add_ps(_mm512_add_ps(s0, s1)));
}

HF_GPT1_AVX512 void row_gradient(const uint16_t* row, uint16_t* out, int64_t vocab, float lse, float scale) {
  const __m512 shift = _mm512_set1_ps(lse), floor = _mm512_set1_ps(-100.0f), factor = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < vocab; i += 16) {
    const __mmask16 m = mask_for(vocab - i);
    const __m512 p = exp_ps(_mm512_max_ps(_mm512_sub_ps(load_bf16(row + i, m), shift), floor));
    store_bf16(out + i, _mm512_mul_ps(p, factor), m);
  }
}

void check_logits(const torch::Tensor& logits, const torch::Tensor& targets) {
  TORCH_CHECK(__builtin_cpu_supports("avx512bf16"), "hf_gpt1::cross_entropy_bf16 needs a CPU with AVX512-BF16");
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == at::kBFloat16 && logits.is_contiguous() && logits.is_cpu(),
              "hf_gpt1::cross_entropy_bf16: logits must be a contiguous 2-D (rows, vocab) bf16 CPU tensor, got ",
              logits.scalar_type(), " ", logits.sizes());
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0) && targets.scalar_type() == at::kLong &&
                  targets.is_contiguous(),
              "hf_gpt1::cross_entropy_bf16: targets must be a contiguous int64 vector of length ", logits.size(0),
              ", got ", targets.scalar_type(), " ", targets.sizes());
  if (targets.numel()) {
    const int64_t lo = targets.min().item<int64_t>(), hi = targets.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < logits.size(1), "hf_gpt1::cross_entropy_bf16: targets must lie in [0, ",
                logits.size(1), "), got [", lo, ", ", hi, "]");
  }
}

std::tuple<torch::Tensor, torch::Tensor> cross_entropy_bf16(const torch::Tensor& logits, const torch::Tensor& targets) {
  check_logits(logits, targets);
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  auto lse = torch::empty({rows}, logits.options().dtype(at::kFloat));
  auto picked = torch::empty({rows}, logits.options().dtype(at::kFloat));
  const auto* x = reinterpret_cast<const uint16_t*>(logits.data_ptr());
  const int64_t* t = targets.data_ptr<int64_t>();
  float* lse_p = lse.data_ptr<float>();
  float* picked_p = picked.data_ptr<float>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      lse_p[r] = row_logsumexp(x + r * vocab, vocab);
      picked_p[r] = bf16_at(x + r * vocab, t[r]);
    }
  });
  return {lse, picked};
}

torch::Tensor cross_entropy_bf16_backward(const torch::Tensor& logits, const torch::Tensor& targets,
                                          const torch::Tensor& lse, const torch::Tensor& scale) {
  check_logits(logits, targets);
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  for (const auto* v : {&lse, &scale}) {
    TORCH_CHECK(v->dim() == 1 && v->size(0) == rows && v->scalar_type() == at::kFloat && v->is_contiguous(),
                "hf_gpt1::cross_entropy_bf16_backward: lse and scale must be contiguous fp32 vectors of length ", rows);
  }
  auto grad = torch::empty_like(logits);
  const auto* x = reinterpret_cast<const uint16_t*>(logits.data_ptr());
  auto* g = reinterpret_cast<uint16_t*>(grad.data_ptr());
  const int64_t* t = targets.data_ptr<int64_t>();
  const float* lse_p = lse.data_ptr<float>();
  const float* scale_p = scale.data_ptr<float>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      row_gradient(x + r * vocab, g + r * vocab, vocab, lse_p[r], scale_p[r]);
      // the one-hot term, from the same fp32 probability the vector loop rounded
      const float p = std::exp(std::max(bf16_at(x + r * vocab, t[r]) - lse_p[r], -100.0f));
      g[r * vocab + t[r]] = c10::BFloat16((p - 1.0f) * scale_p[r]).x;
    }
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hf_gpt1, m) {
  m.def("cross_entropy_bf16(Tensor logits, Tensor targets) -> (Tensor lse, Tensor picked)");
  m.def("cross_entropy_bf16_backward(Tensor logits, Tensor targets, Tensor lse, Tensor scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(hf_gpt1, CPU, m) {
  m.impl("cross_entropy_bf16", &cross_entropy_bf16);
  m.impl("cross_entropy_bf16_backward", &cross_entropy_bf16_backward);
}
