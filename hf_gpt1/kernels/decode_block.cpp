// hf-gpt1's CPU kernel for one GPT-1 block during batch-1 decoding (bf16 or fp32 weights): everything after the q/k/v
// projection and the KV-cache update, in one call.
//
// Why: once the weight products stream at memory speed (bf16_gemv.cpp), a decode step on two cores is ~15 ms of
// products and ~4-5 ms of Python and operator dispatch: ~25 small operators per block (views, SDPA's wrapper, the
// residual adds, LayerNorms, GELU), each ~5-15 us whatever its size. This kernel does the block's tail in one
// dispatch (docs/performance.md):
//
//   a   = softmax(q k^T * scaling) v          per head, over every cached key (one query, so no causal mask)
//   h   = LN_1(x + a W_o^T + b_o)
//   out = LN_2(h + gelu_tanh(h W_fc^T + b_fc) W_p^T + b_p)
//
// One op, `decode_block`, checks its inputs once and dispatches on their dtype:
// - bf16: hand-written. Roundings follow the unfused bf16 path (every tensor the operators would hand each other is
//   rounded to bf16 here too: attention output, each product, each residual sum, each LayerNorm output); inside each
//   step the maths is in fp32 (scores, softmax and P.V accumulate in fp32, LayerNorm statistics in fp32 over two
//   passes).
// - fp32: ATen's own operators called from C++ (the modules' maths, without ~25 dispatches from Python per block).

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <cmath>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "avx512_bf16.h"
#include "bf16_ops.h"

namespace {

using hf_gpt1::load_bf16;
using hf_gpt1::mask_for;
using hf_gpt1::store_bf16;

constexpr int64_t kMaxHeadDim = 256;

const uint16_t* bits(const torch::Tensor& t) { return reinterpret_cast<const uint16_t*>(t.data_ptr()); }

bool present(const std::optional<torch::Tensor>& t) { return t.has_value() && t->defined(); }

// One head: out[0:D] = softmax(q . k_t * scaling) . v, keys/values at `row_stride` elements apart.
HF_GPT1_AVX512 void attend_head(const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t T, int64_t D,
                                int64_t k_row, int64_t v_row, float scaling, uint16_t* out) {
  const int64_t chunks = (D + 15) / 16;
  __m512 qv[kMaxHeadDim / 16], acc[kMaxHeadDim / 16];
  for (int64_t c = 0; c < chunks; ++c) {
    qv[c] = load_bf16(q + 16 * c, mask_for(D - 16 * c));
    acc[c] = _mm512_setzero_ps();
  }
  std::vector<float> scores(T);
  float max_score = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < T; ++t) {
    __m512 dot = _mm512_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) {
      dot = _mm512_fmadd_ps(load_bf16(k + t * k_row + 16 * c, mask_for(D - 16 * c)), qv[c], dot);
    }
    scores[t] = _mm512_reduce_add_ps(dot) * scaling;
    max_score = std::max(max_score, scores[t]);
  }
  float total = 0.0f;
  for (int64_t t = 0; t < T; ++t) {
    const float p = std::exp(scores[t] - max_score);
    total += p;
    const __m512 pv = _mm512_set1_ps(p);
    for (int64_t c = 0; c < chunks; ++c) {
      acc[c] = _mm512_fmadd_ps(load_bf16(v + t * v_row + 16 * c, mask_for(D - 16 * c)), pv, acc[c]);
    }
  }
  const __m512 inv = _mm512_set1_ps(1.0f / total);
  for (int64_t c = 0; c < chunks; ++c) store_bf16(out + 16 * c, _mm512_mul_ps(acc[c], inv), mask_for(D - 16 * c));
}

float to_float(uint16_t b) { return static_cast<float>(c10::BFloat16(b, c10::BFloat16::from_bits())); }

// LN(x + y) of two bf16 vectors: the sum rounded to bf16 (as `x + y` on bf16 tensors), statistics in fp32.
torch::Tensor add_layer_norm(const torch::Tensor& x, const torch::Tensor& y, const std::optional<torch::Tensor>& weight,
                             const std::optional<torch::Tensor>& bias, double eps) {
  const int64_t n = x.numel();
  std::vector<float> sum(n);
  const uint16_t *xp = bits(x), *yp = bits(y);
  double mean = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    sum[i] = to_float(c10::BFloat16(to_float(xp[i]) + to_float(yp[i])).x);
    mean += sum[i];
  }
  mean /= n;
  double var = 0.0;
  for (int64_t i = 0; i < n; ++i) var += (sum[i] - mean) * (sum[i] - mean);
  const float rstd = static_cast<float>(1.0 / std::sqrt(var / n + eps)), shift = static_cast<float>(mean);
  auto out = torch::empty({n}, x.options());
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr());
  const uint16_t* w = present(weight) ? bits(*weight) : nullptr;
  const uint16_t* b = present(bias) ? bits(*bias) : nullptr;
  for (int64_t i = 0; i < n; ++i) {
    float value = (sum[i] - shift) * rstd;
    if (w != nullptr) value *= to_float(w[i]);
    if (b != nullptr) value += to_float(b[i]);
    op[i] = c10::BFloat16(value).x;
  }
  return out;
}

// The block's parameters after its q/k/v product (biases and LayerNorm parameters may be absent).
struct BlockWeights {
  const torch::Tensor& attn_proj_weight;
  const std::optional<torch::Tensor>& attn_proj_bias;
  const std::optional<torch::Tensor>& ln_1_weight;
  const std::optional<torch::Tensor>& ln_1_bias;
  const torch::Tensor& fc_weight;
  const std::optional<torch::Tensor>& fc_bias;
  const torch::Tensor& mlp_proj_weight;
  const std::optional<torch::Tensor>& mlp_proj_bias;
  const std::optional<torch::Tensor>& ln_2_weight;
  const std::optional<torch::Tensor>& ln_2_bias;
};

void check_tensor(const torch::Tensor& t, at::ScalarType dtype, const char* what) {
  TORCH_CHECK(t.scalar_type() == dtype && t.is_cpu(), "hf_gpt1::decode_block: ", what,
              " must be a CPU tensor of x's dtype (", dtype, "), got ", t.scalar_type(), " on ", t.device());
}

void check_vector(const std::optional<torch::Tensor>& t, at::ScalarType dtype, int64_t n, const char* what) {
  if (!present(t)) return;
  check_tensor(*t, dtype, what);
  TORCH_CHECK(t->dim() == 1 && t->size(0) == n && t->is_contiguous(), "hf_gpt1::decode_block: ", what,
              " must be a contiguous vector of length ", n, ", got ", t->sizes());
}

void check_matrix(const torch::Tensor& t, at::ScalarType dtype, int64_t rows, int64_t cols, const char* what) {
  check_tensor(t, dtype, what);
  TORCH_CHECK(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols && t.is_contiguous(), "hf_gpt1::decode_block: ",
              what, " must be a contiguous ", rows, "x", cols, " matrix, got ", t.sizes());
}

// Everything either dtype's implementation relies on, with errors that name what was wrong.
void check_inputs(const torch::Tensor& x, const torch::Tensor& query, const torch::Tensor& keys,
                  const torch::Tensor& values, const BlockWeights& w) {
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kBFloat16 || dtype == at::kFloat, "hf_gpt1::decode_block: x must be bf16 or fp32, got ",
              dtype);
  TORCH_CHECK(dtype != at::kBFloat16 || __builtin_cpu_supports("avx512bf16"),
              "hf_gpt1::decode_block: bf16 needs a CPU with AVX512-BF16");
  check_tensor(x, dtype, "x");
  const int64_t E = x.numel();
  TORCH_CHECK(x.is_contiguous(), "hf_gpt1::decode_block: x must be one contiguous row, got strides ", x.strides());
  check_tensor(query, dtype, "query");
  TORCH_CHECK(query.numel() == E && query.is_contiguous(),
              "hf_gpt1::decode_block: query must be one contiguous row of ", E, " values (x's size), got ",
              query.sizes());
  check_tensor(keys, dtype, "keys");
  check_tensor(values, dtype, "values");
  TORCH_CHECK(keys.dim() == 4 && keys.size(0) == 1 && values.sizes() == keys.sizes() && keys.size(1) * keys.size(3) == E,
              "hf_gpt1::decode_block: keys and values must be (1, heads, cached, head_dim) with heads * head_dim = ", E,
              ", got ", keys.sizes(), " and ", values.sizes());
  TORCH_CHECK(keys.size(2) > 0, "hf_gpt1::decode_block: no cached keys to attend to");
  TORCH_CHECK(keys.stride(3) == 1 && values.stride(3) == 1,
              "hf_gpt1::decode_block: keys and values must be laid out (heads, positions, head_dim) with head_dim "
              "contiguous, got strides ", keys.strides(), " and ", values.strides());
  TORCH_CHECK(dtype != at::kBFloat16 || keys.size(3) <= kMaxHeadDim,
              "hf_gpt1::decode_block: bf16 head_dim must be at most ", kMaxHeadDim, ", got ", keys.size(3));
  TORCH_CHECK(w.fc_weight.dim() == 2, "hf_gpt1::decode_block: fc_weight (the MLP's first layer) must be an (inner, ",
              E, ") matrix, got ", w.fc_weight.sizes());
  const int64_t inner = w.fc_weight.size(0);  // the MLP's width, which the other MLP tensors must match
  check_matrix(w.attn_proj_weight, dtype, E, E, "attn_proj_weight (the attention's output projection)");
  check_matrix(w.fc_weight, dtype, inner, E, "fc_weight (the MLP's first layer, (inner, n_embd))");
  check_matrix(w.mlp_proj_weight, dtype, E, inner, "mlp_proj_weight (the MLP's second layer, (n_embd, inner))");
  check_vector(w.attn_proj_bias, dtype, E, "attn_proj_bias");
  check_vector(w.fc_bias, dtype, inner, "fc_bias");
  check_vector(w.mlp_proj_bias, dtype, E, "mlp_proj_bias");
  for (const auto& [t, what] : {std::pair{&w.ln_1_weight, "ln_1_weight"}, {&w.ln_1_bias, "ln_1_bias"},
                                {&w.ln_2_weight, "ln_2_weight"}, {&w.ln_2_bias, "ln_2_bias"}}) {
    check_vector(*t, dtype, E, what);
  }
}

// bf16: attention by hand (fp32 maths), the products on bf16_gemv.cpp's one-row kernel, LayerNorms by hand.
torch::Tensor block_bf16(const torch::Tensor& x, const torch::Tensor& query, const torch::Tensor& keys,
                         const torch::Tensor& values, const BlockWeights& w, double scaling, double eps) {
  const int64_t E = x.numel(), H = keys.size(1), T = keys.size(2), D = keys.size(3);
  const auto row = x.reshape({E});
  auto attended = torch::empty({E}, x.options());
  {
    const uint16_t *q = bits(query), *k = bits(keys), *v = bits(values);
    auto* out = reinterpret_cast<uint16_t*>(attended.data_ptr());
    const int64_t k_head = keys.stride(1), k_row = keys.stride(2), v_head = values.stride(1), v_row = values.stride(2);
    at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t h = begin; h < end; ++h) {
        attend_head(q + h * D, k + h * k_head, v + h * v_head, T, D, k_row, v_row, static_cast<float>(scaling),
                    out + h * D);
      }
    });
  }
  const auto hidden = add_layer_norm(row, hf_gpt1::bf16_addmv(w.attn_proj_bias, w.attn_proj_weight, attended),
                                     w.ln_1_weight, w.ln_1_bias, eps);
  const auto inner = hf_gpt1::gelu_tanh_bf16(hf_gpt1::bf16_addmv(w.fc_bias, w.fc_weight, hidden));
  return add_layer_norm(hidden, hf_gpt1::bf16_addmv(w.mlp_proj_bias, w.mlp_proj_weight, inner), w.ln_2_weight,
                        w.ln_2_bias, eps)
      .view(x.sizes());
}

// fp32: the modules' maths as ATen's operators (attention as softmax(q k^T * scaling) v, MKL's one-row products,
// LayerNorm, tanh-GELU).
torch::Tensor block_fp32(const torch::Tensor& x, const torch::Tensor& query, const torch::Tensor& keys,
                         const torch::Tensor& values, const BlockWeights& w, double scaling, double eps) {
  const int64_t E = x.numel(), H = keys.size(1), D = keys.size(3);
  const auto q = query.reshape({H, 1, D});
  const auto scores = at::bmm(q, keys.select(0, 0).transpose(1, 2)).mul_(scaling);  // (heads, 1, cached)
  const auto attended = at::bmm(at::softmax(scores, -1), values.select(0, 0)).reshape({E});
  const auto linear = [](const std::optional<torch::Tensor>& bias, const torch::Tensor& weight, const torch::Tensor& v) {
    return present(bias) ? at::addmv(*bias, weight, v) : at::mv(weight, v);
  };
  const auto row = x.reshape({E});
  const auto hidden = at::layer_norm(row + linear(w.attn_proj_bias, w.attn_proj_weight, attended), {E}, w.ln_1_weight,
                                     w.ln_1_bias, eps);
  const auto inner = at::gelu(linear(w.fc_bias, w.fc_weight, hidden), "tanh");
  return at::layer_norm(hidden + linear(w.mlp_proj_bias, w.mlp_proj_weight, inner), {E}, w.ln_2_weight, w.ln_2_bias,
                        eps)
      .view(x.sizes());
}

torch::Tensor decode_block(const torch::Tensor& x, const torch::Tensor& query, const torch::Tensor& keys,
                           const torch::Tensor& values, const torch::Tensor& attn_proj_weight,
                           const std::optional<torch::Tensor>& attn_proj_bias,
                           const std::optional<torch::Tensor>& ln_1_weight,
                           const std::optional<torch::Tensor>& ln_1_bias,
                           const torch::Tensor& fc_weight, const std::optional<torch::Tensor>& fc_bias,
                           const torch::Tensor& mlp_proj_weight, const std::optional<torch::Tensor>& mlp_proj_bias,
                           const std::optional<torch::Tensor>& ln_2_weight,
                           const std::optional<torch::Tensor>& ln_2_bias, double scaling, double eps) {
  const BlockWeights w{attn_proj_weight, attn_proj_bias, ln_1_weight,   ln_1_bias,   fc_weight,
                       fc_bias,          mlp_proj_weight, mlp_proj_bias, ln_2_weight, ln_2_bias};
  check_inputs(x, query, keys, values, w);
  return x.scalar_type() == at::kBFloat16 ? block_bf16(x, query, keys, values, w, scaling, eps)
                                          : block_fp32(x, query, keys, values, w, scaling, eps);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hf_gpt1, m) {
  m.def(
      "decode_block(Tensor x, Tensor query, Tensor keys, Tensor values, Tensor attn_proj_weight, "
      "Tensor? attn_proj_bias, Tensor? ln_1_weight, Tensor? ln_1_bias, Tensor fc_weight, Tensor? fc_bias, "
      "Tensor mlp_proj_weight, Tensor? mlp_proj_bias, Tensor? ln_2_weight, Tensor? ln_2_bias, float scaling, "
      "float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(hf_gpt1, CPU, m) { m.impl("decode_block", &decode_block); }
