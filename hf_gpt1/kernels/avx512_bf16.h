// AVX-512 helpers shared by hf-gpt1's bf16 CPU kernels: bf16 <-> fp32 vectors and an fp32 exp.
#pragma once

#include <immintrin.h>

#include <cstdint>

#define HF_GPT1_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace hf_gpt1 {

// e^y for 16 floats: y = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial (relative error ~1e-7, far below
// bf16's 2^-9), times 2^n by scalef (which underflows to 0 and overflows to inf). y must not be NaN or -inf.
HF_GPT1_AVX512 inline __m512 exp_ps(__m512 y) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), y);  // y - n ln2, ln2 split in two for exactness
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);  // p * 2^n
}

// 16 bf16 values (masked lanes read as 0) widened to fp32: bf16 is the high half of an fp32
HF_GPT1_AVX512 inline __m512 load_bf16(const uint16_t* p, __mmask16 mask) {
  const __m256i h = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

HF_GPT1_AVX512 inline void store_bf16(uint16_t* p, __m512 v, __mmask16 mask) {
  _mm256_mask_storeu_epi16(p, mask, (__m256i)_mm512_cvtneps_pbh(v));  // round to nearest even
}

inline __mmask16 mask_for(int64_t remaining) {
  return remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1u);
}

}  // namespace hf_gpt1
