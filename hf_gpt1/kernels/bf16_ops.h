// hf-gpt1's bf16 CPU operators that other kernels of the library call directly (also registered as torch.ops.hf_gpt1.*).
#pragma once

#include <torch/types.h>

#include <optional>

namespace hf_gpt1 {

// bias + weight @ x for one bf16 row x (bf16_gemv.cpp)
torch::Tensor bf16_addmv(const std::optional<torch::Tensor>& bias, const torch::Tensor& weight, const torch::Tensor& x);

// tanh-GELU of a contiguous bf16 tensor (gelu_tanh_bf16.cpp)
torch::Tensor gelu_tanh_bf16(const torch::Tensor& x);

}  // namespace hf_gpt1
