// hf-gpt1's CPU kernel for the MLP's tanh-GELU on bf16 activations (bf16 autocast training and bf16 inference).
//
// Why: torch 2.13's CPU `gelu(approximate="tanh")` on bf16 is compute-bound, not memory-bound: ~11 ms forward and
// ~15 ms backward for a 2048x3072 activation on two AVX-512 cores, 12 times per step (docs/performance.md), where
// reading and writing those bytes takes ~2 ms.
//
// The maths, in fp32 per element (bf16 in, one rounding to bf16 out, as ATen's bf16 kernels do):
//   u = sqrt(2/pi) (x + 0.044715 x^3),  gelu(x) = x (1 + tanh u) / 2 = x s  with  s = sigmoid(2u) = 1 / (1 + e^-2u)
//   gelu'(x) = s + 2 x s (1 - s) sqrt(2/pi) (1 + 3 0.044715 x^2),  s (1 - s) = e^-2u s^2
// The same identities as torch's tanh form (1 + tanh u = 2s, 1 - tanh^2 u = 4 s (1 - s)); s needs one exp and one
// division and no cancellation near u = 0. exp: range reduction by ln 2 and a degree-6 polynomial (relative error
// ~1e-7, avx512_bf16.h); -2u is clamped to [-80, 40] so e^-2u and its square stay finite.

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "avx512_bf16.h"
#include "bf16_ops.h"

namespace {

using hf_gpt1::exp_ps;
using hf_gpt1::load_bf16;
using hf_gpt1::mask_for;
using hf_gpt1::store_bf16;

constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kKappa = 0.044715f;

// e^-2u for 16 inputs
HF_GPT1_AVX512 inline __m512 exp_minus_2u(__m512 x) {
  const __m512 x2 = _mm512_mul_ps(x, x);
  const __m512 u = _mm512_mul_ps(_mm512_set1_ps(kBeta), _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(kKappa), x2), x, x));
  const __m512 y = _mm512_mul_ps(_mm512_set1_ps(-2.0f), u);
  return exp_ps(_mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(-80.0f)), _mm512_set1_ps(40.0f)));
}

HF_GPT1_AVX512 void gelu_forward(const uint16_t* x, uint16_t* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; i += 16) {
    const __mmask16 m = mask_for(end - i);
    const __m512 v = load_bf16(x + i, m);
    const __m512 s = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), exp_minus_2u(v)));
    store_bf16(out + i, _mm512_mul_ps(v, s), m);
  }
}

HF_GPT1_AVX512 void gelu_backward(const uint16_t* grad, const uint16_t* x, uint16_t* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; i += 16) {
    const __mmask16 m = mask_for(end - i);
    const __m512 v = load_bf16(x + i, m);
    const __m512 e = exp_minus_2u(v);
    const __m512 s = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    const __m512 s_one_minus_s = _mm512_mul_ps(e, _mm512_mul_ps(s, s));
    const __m512 du = _mm512_mul_ps(  // du/dx = sqrt(2/pi) (1 + 3 kappa x^2)
        _mm512_set1_ps(kBeta), _mm512_fmadd_ps(_mm512_set1_ps(3.0f * kKappa), _mm512_mul_ps(v, v), _mm512_set1_ps(1.0f)));
    const __m512 derivative = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(2.0f), v), _mm512_mul_ps(s_one_minus_s, du), s);
    store_bf16(out + i, _mm512_mul_ps(load_bf16(grad + i, m), derivative), m);
  }
}

void check_bf16(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 && t.is_contiguous() && t.is_cpu(), "hf_gpt1::gelu_tanh_bf16: ", what,
              " must be a contiguous bf16 CPU tensor, got ", t.scalar_type(), " ", t.sizes(),
              t.is_contiguous() ? "" : " (non-contiguous)");
}

constexpr int64_t kGrain = 1 << 14;  // elements per task: 32 KB of bf16

}  // namespace

torch::Tensor hf_gpt1::gelu_tanh_bf16(const torch::Tensor& x) {
  TORCH_CHECK(__builtin_cpu_supports("avx512bf16"), "hf_gpt1::gelu_tanh_bf16 needs a CPU with AVX512-BF16");
  check_bf16(x, "x");
  auto out = torch::empty_like(x);
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr());
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) { gelu_forward(xp, op, b, e); });
  return out;
}

namespace {

torch::Tensor gelu_tanh_bf16_backward(const torch::Tensor& grad, const torch::Tensor& x) {
  TORCH_CHECK(__builtin_cpu_supports("avx512bf16"), "hf_gpt1::gelu_tanh_bf16 needs a CPU with AVX512-BF16");
  check_bf16(grad, "grad");
  check_bf16(x, "x");
  TORCH_CHECK(grad.sizes() == x.sizes(), "hf_gpt1::gelu_tanh_bf16_backward: grad ", grad.sizes(), " and x ", x.sizes(),
              " must have the same shape");
  auto out = torch::empty_like(x);
  const auto* gp = reinterpret_cast<const uint16_t*>(grad.data_ptr());
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr());
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) { gelu_backward(gp, xp, op, b, e); });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hf_gpt1, m) {
  m.def("gelu_tanh_bf16(Tensor x) -> Tensor");
  m.def("gelu_tanh_bf16_backward(Tensor grad, Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(hf_gpt1, CPU, m) {
  m.impl("gelu_tanh_bf16", &hf_gpt1::gelu_tanh_bf16);
  m.impl("gelu_tanh_bf16_backward", &gelu_tanh_bf16_backward);
}
