// Grouped 1x1 convolution on channels-last float32 tensors, forward and backward, for
// groups of 16 channels (hypernas.fast.kernels explains when and why it is used).
//
// x: (B, G*16, H, W) channels-last, i.e. rows x[n, g, :] of 16 channels for each pixel n
// and group g; W: (G, 16, 16) with y[n, g, o] = sum_i W[g, o, i] x[n, g, i].
//
//   forward:      y[n, g, :] = sum_i x[n, g, i] * Wt[g, i, :]    (Wt = W transposed)
//   input grad:   dx[n, g, :] = sum_o dy[n, g, o] * W[g, o, :]   (the same loop, W as is)
//   weight grad:  dW[g, o, i] = sum_n dy[n, g, o] * x[n, g, i]
//
// oneDNN's grouped 1x1 convolution is several times slower than its dense one on this
// layout; here a row of 16 floats is one vector register (or two, or four), a group's
// 16 x 16 weights stay in registers, and the weight gradient is summed in fixed chunks of
// pixels (float) and the chunks in double, so it does not depend on the thread count.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace {

constexpr int kC = 16;
constexpr int64_t kChunk = 256;  // pixels per partial sum of the weight gradient
typedef float v16 __attribute__((vector_size(64)));

inline v16 load(const float* p) { v16 v; __builtin_memcpy(&v, p, 64); return v; }
inline void store(float* p, v16 v) { __builtin_memcpy(p, &v, 64); }

// rows n0..n1 of y = x W^T for every group; M: (G, 16, 16) with M[g, i, :] the vector
// that x[n, g, i] multiplies
void rows_times(const float* __restrict__ x, const float* __restrict__ M, float* __restrict__ y,
                int64_t n0, int64_t n1, int64_t G) {
  for (int64_t g = 0; g < G; ++g) {
    v16 w[kC];
    for (int i = 0; i < kC; ++i) w[i] = load(M + (g * kC + i) * kC);
    for (int64_t n = n0; n < n1; ++n) {
      const float* xr = x + (n * G + g) * kC;
      v16 acc = xr[0] * w[0];
      for (int i = 1; i < kC; ++i) acc += xr[i] * w[i];
      store(y + (n * G + g) * kC, acc);
    }
  }
}

// dW partial sums over rows n0..n1: out[g, o, :] += dy[n, g, o] * x[n, g, :]
void outer_sum(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ out,
               int64_t n0, int64_t n1, int64_t G) {
  for (int64_t g = 0; g < G; ++g) {
    v16 a[kC];
    for (int o = 0; o < kC; ++o) a[o] = v16{};
    for (int64_t n = n0; n < n1; ++n) {
      const v16 xv = load(x + (n * G + g) * kC);
      const float* d = dy + (n * G + g) * kC;
      for (int o = 0; o < kC; ++o) a[o] += d[o] * xv;
    }
    for (int o = 0; o < kC; ++o) store(out + (g * kC + o) * kC, a[o]);
  }
}

void check(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.dim() == 4 &&
              t.size(1) % kC == 0 && t.is_contiguous(at::MemoryFormat::ChannelsLast),
              "pointwise: ", what, " must be a channels-last float32 CPU tensor of 16k channels");
}

}  // namespace

// y = x * M for every group: M (G, 16, 16) contiguous, M[g, i, :] multiplies x[., g, i]
torch::Tensor pointwise_rows(torch::Tensor x, torch::Tensor M) {
  check(x, "the input");
  const int64_t G = x.size(1) / kC, N = x.size(0) * x.size(2) * x.size(3);
  TORCH_CHECK(M.scalar_type() == torch::kFloat && M.is_contiguous() && M.dim() == 3 && M.size(0) == G &&
              M.size(1) == kC && M.size(2) == kC, "pointwise: weights must be (groups, 16, 16)");
  auto y = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
  const float* xp = x.data_ptr<float>();
  const float* mp = M.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N, 512, [&](int64_t a, int64_t b) { rows_times(xp, mp, yp, a, b, G); });
  return y;
}

// dW (G, 16, 16) = sum over pixels of dy[n, g, :] (outer) x[n, g, :]
torch::Tensor pointwise_weight_grad(torch::Tensor x, torch::Tensor dy) {
  check(x, "the input");
  check(dy, "the output gradient");
  TORCH_CHECK(x.sizes() == dy.sizes(), "pointwise: input and output gradient differ in shape");
  const int64_t G = x.size(1) / kC, N = x.size(0) * x.size(2) * x.size(3);
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  auto parts = torch::empty({chunks, G, kC, kC}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* dp = dy.data_ptr<float>();
  float* pp = parts.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t a, int64_t b) {
    for (int64_t c = a; c < b; ++c)
      outer_sum(xp, dp, pp + c * G * kC * kC, c * kChunk, std::min(N, (c + 1) * kChunk), G);
  });
  return parts.sum(0, false, torch::kDouble).to(torch::kFloat);
}
