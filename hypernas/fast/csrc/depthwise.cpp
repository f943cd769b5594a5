// A depthwise convolution of E copies of one input (a source node's input for its E edges;
// E = 1 for the second half of a separable convolution, the average pool and derived
// networks), without the copies (hypernas.fast.kernels explains when and why it is used).
// Channels-last float32, stride S = 1 or 2, zero padding K/2, C a multiple of 16.
//
// x: (B, C, H, W), w[e*C+c, t]: the tap t = K*di + dj of output channel e*C + c (passed
// arranged in blocks of 16 channels, see check_weight):
//
//   forward:      y[b, e*C+c, i, j] = sum_t x[b, c, S*i+di-K/2, S*j+dj-K/2] * w[e*C+c, t]
//   input grad:   dx[b, c, i, j]    = sum_e sum_{t, (i', j'): S*i'+di-K/2 = i, S*j'+dj-K/2 = j}
//                                         g[b, e*C+c, i', j'] * w[e*C+c, t]
//   weight grad:  dw[e*C+c, t]      = sum_{b,i,j} g[b, e*C+c, i, j] * x[b, c, S*i+di-K/2, S*j+dj-K/2]
//
// This is F.conv2d(torch.cat([x] * E, 1), w, stride=S, padding=K//2, groups=E*C) and its gradients,
// without the E copies of x (forward) nor the sum of E slices of the gradient (backward).
// A row of 16 channels is one vector register; the weight gradient is summed per image
// (float), then over the images in order (double), so it does not depend on the thread
// count.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <vector>

namespace {

typedef float v16 __attribute__((vector_size(64)));
constexpr int64_t kMaxEdges = 4;  // edges per source node (hypernas.fast.kernels.DEPTHWISE_MAX_EDGES)

inline v16 load(const float* p) { v16 v; __builtin_memcpy(&v, p, 64); return v; }
inline void store(float* p, v16 v) { __builtin_memcpy(p, &v, 64); }

// f(t, ii, jj) for every tap t = K*di + dj of output pixel (io, jo) that reads inside the
// H x W input, at (ii, jj) = S * (io, jo) + (di - K/2, dj - K/2)
template <int K, int S, typename F>
inline void input_taps(int64_t io, int64_t jo, int64_t H, int64_t W, F&& f) {
  constexpr int P = K / 2;
  for (int di = 0; di < K; ++di) {
    const int64_t ii = S * io + di - P;
    if (ii < 0 || ii >= H) continue;
    for (int dj = 0; dj < K; ++dj) {
      const int64_t jj = S * jo + dj - P;
      if (jj < 0 || jj >= W) continue;
      f(di * K + dj, ii, jj);
    }
  }
}

// f(t, io, jo) for every output pixel (io, jo) of the Ho x Wo output that reads input pixel
// (i, j) through tap t: S * io + di - K/2 = i (and the same for the columns)
template <int K, int S, typename F>
inline void output_taps(int64_t i, int64_t j, int64_t Ho, int64_t Wo, F&& f) {
  constexpr int P = K / 2;
  for (int di = 0; di < K; ++di) {
    const int64_t ni = i + P - di;
    if (ni < 0 || ni % S) continue;
    const int64_t io = ni / S;
    if (io >= Ho) continue;
    for (int dj = 0; dj < K; ++dj) {
      const int64_t nj = j + P - dj;
      if (nj < 0 || nj % S) continue;
      const int64_t jo = nj / S;
      if (jo >= Wo) continue;
      f(di * K + dj, io, jo);
    }
  }
}

// the output size of a KxK convolution at stride S with zero padding K/2
inline int64_t out_size(int64_t n, int64_t K, int64_t S) { return (n + 2 * (K / 2) - K) / S + 1; }

// Shapes of one call: the input is H x W, the output Ho x Wo, C channels per copy, E copies.
struct Shape {
  int64_t H, W, Ho, Wo, C, E;
};

// one output row (b, io) of the forward pass for the channel block cb of edge e
template <int K, int S>
void forward_row(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int64_t b,
                 int64_t io, const Shape& d, int64_t e, int64_t cb) {
  v16 wt[K * K];
  const float* wb = w + (e * (d.C / 16) + cb / 16) * K * K * 16;
  for (int t = 0; t < K * K; ++t) wt[t] = load(wb + t * 16);
  for (int64_t jo = 0; jo < d.Wo; ++jo) {
    v16 acc = v16{};
    input_taps<K, S>(io, jo, d.H, d.W, [&](int t, int64_t ii, int64_t jj) {
      acc += load(x + ((b * d.H + ii) * d.W + jj) * d.C + cb) * wt[t];
    });
    store(y + ((b * d.Ho + io) * d.Wo + jo) * (d.E * d.C) + e * d.C + cb, acc);
  }
}

// one input row (b, i) of the input gradient for the channel block cb, summed over the edges
template <int K, int S, int E>
void input_grad_row(const float* __restrict__ g, const float* __restrict__ w, float* __restrict__ dx, int64_t b,
                    int64_t i, const Shape& d, int64_t cb) {
  v16 wt[E * K * K];
  for (int e = 0; e < E; ++e) {
    const float* wb = w + (e * (d.C / 16) + cb / 16) * K * K * 16;
    for (int t = 0; t < K * K; ++t) wt[e * K * K + t] = load(wb + t * 16);
  }
  for (int64_t j = 0; j < d.W; ++j) {
    v16 acc = v16{};
    output_taps<K, S>(i, j, d.Ho, d.Wo, [&](int t, int64_t io, int64_t jo) {   // the outputs that read (i, j)
      const float* px = g + ((b * d.Ho + io) * d.Wo + jo) * (E * d.C) + cb;
      for (int e = 0; e < E; ++e) acc += load(px + e * d.C) * wt[e * K * K + t];
    });
    store(dx + ((b * d.H + i) * d.W + j) * d.C + cb, acc);
  }
}

template <int K, int S>
void input_grad_row_e(const float* g, const float* w, float* dx, int64_t b, int64_t i, const Shape& d, int64_t cb) {
  switch (d.E) {
    case 1: input_grad_row<K, S, 1>(g, w, dx, b, i, d, cb); break;
    case 2: input_grad_row<K, S, 2>(g, w, dx, b, i, d, cb); break;
    case 3: input_grad_row<K, S, 3>(g, w, dx, b, i, d, cb); break;
    default: input_grad_row<K, S, 4>(g, w, dx, b, i, d, cb); break;
  }
}

// image b's share of the weight gradient of edge e, channel block cb: out[t] (16 floats)
template <int K, int S>
void weight_grad_image(const float* __restrict__ x, const float* __restrict__ g, float* __restrict__ out, int64_t b,
                       const Shape& d, int64_t e, int64_t cb) {
  v16 acc[K * K];
  for (int t = 0; t < K * K; ++t) acc[t] = v16{};
  for (int64_t io = 0; io < d.Ho; ++io)
    for (int64_t jo = 0; jo < d.Wo; ++jo) {
      const v16 gv = load(g + ((b * d.Ho + io) * d.Wo + jo) * (d.E * d.C) + e * d.C + cb);
      input_taps<K, S>(io, jo, d.H, d.W, [&](int t, int64_t ii, int64_t jj) {
        acc[t] += gv * load(x + ((b * d.H + ii) * d.W + jj) * d.C + cb);
      });
    }
  for (int t = 0; t < K * K; ++t) store(out + t * 16, acc[t]);
}

void check(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.dim() == 4 && t.size(1) % 16 == 0 &&
                  t.is_contiguous(at::MemoryFormat::ChannelsLast),
              "depthwise: ", what, " must be a channels-last float32 CPU tensor of 16k channels");
}

// the weights arranged (E*C/16, K*K, 16): the 16 channels of a block adjacent for each tap
void check_weight(const torch::Tensor& w, int64_t EC, int64_t K) {
  TORCH_CHECK(w.scalar_type() == torch::kFloat && w.is_contiguous() && w.dim() == 3 && w.size(0) * 16 == EC &&
                  w.size(1) == K * K && w.size(2) == 16 && (K == 3 || K == 5),
              "depthwise: weights must be contiguous (E*C/16, K*K, 16) float32 with K 3 or 5");
}

#define DISPATCH(K, S, FN, ...)                      \
  if ((K) == 3 && (S) == 1) FN<3, 1>(__VA_ARGS__);   \
  else if ((K) == 3) FN<3, 2>(__VA_ARGS__);          \
  else if ((S) == 1) FN<5, 1>(__VA_ARGS__);          \
  else FN<5, 2>(__VA_ARGS__);

void check_stride(int64_t S) { TORCH_CHECK(S == 1 || S == 2, "depthwise: stride must be 1 or 2"); }

}  // namespace

torch::Tensor depthwise_forward(torch::Tensor x, torch::Tensor w, int64_t E, int64_t K, int64_t S) {
  check(x, "the input");
  check_stride(S);
  TORCH_CHECK(E >= 1 && E <= kMaxEdges, "depthwise: at most ", kMaxEdges, " copies");
  check_weight(w, E * x.size(1), K);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const Shape d{H, W, out_size(H, K, S), out_size(W, K, S), C, E};
  auto y = torch::empty({B, E * C, d.Ho, d.Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t blocks = C / 16;
  at::parallel_for(0, B * d.Ho, 1, [&](int64_t a, int64_t z) {
    for (int64_t r = a; r < z; ++r)
      for (int64_t e = 0; e < E; ++e)
        for (int64_t k = 0; k < blocks; ++k) DISPATCH(K, S, forward_row, xp, wp, yp, r / d.Ho, r % d.Ho, d, e, k * 16)
  });
  return y;
}

// H, W: the input's size (at stride 2 the output's size does not determine it)
torch::Tensor depthwise_input_grad(torch::Tensor g, torch::Tensor w, int64_t E, int64_t K, int64_t S, int64_t H,
                                   int64_t W) {
  check(g, "the output gradient");
  check_stride(S);
  const int64_t B = g.size(0), C = g.size(1) / E;
  TORCH_CHECK(g.size(1) == E * C && C % 16 == 0 && E >= 1 && E <= kMaxEdges,
              "depthwise: gradient channels must be E * C, C a multiple of 16, E at most ", kMaxEdges);
  const Shape d{H, W, out_size(H, K, S), out_size(W, K, S), C, E};
  TORCH_CHECK(g.size(2) == d.Ho && g.size(3) == d.Wo, "depthwise: gradient and input sizes do not match");
  check_weight(w, E * C, K);
  auto dx = torch::empty({B, C, H, W}, g.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float *gp = g.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* dp = dx.data_ptr<float>();
  const int64_t blocks = C / 16;
  at::parallel_for(0, B * H, 1, [&](int64_t a, int64_t z) {
    for (int64_t r = a; r < z; ++r)
      for (int64_t k = 0; k < blocks; ++k) DISPATCH(K, S, input_grad_row_e, gp, wp, dp, r / H, r % H, d, k * 16)
  });
  return dx;
}

torch::Tensor depthwise_weight_grad(torch::Tensor x, torch::Tensor g, int64_t E, int64_t K, int64_t S) {
  check(x, "the input");
  check(g, "the output gradient");
  check_stride(S);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const Shape d{H, W, out_size(H, K, S), out_size(W, K, S), C, E};
  TORCH_CHECK(g.size(0) == B && g.size(1) == E * C && g.size(2) == d.Ho && g.size(3) == d.Wo,
              "depthwise: gradient and input shapes do not match");
  const int64_t blocks = C / 16, KK = K * K;
  auto parts = torch::empty({B, E, blocks, KK, 16}, x.options());
  const float *xp = x.data_ptr<float>(), *gp = g.data_ptr<float>();
  float* pp = parts.data_ptr<float>();
  at::parallel_for(0, B * E * blocks, 1, [&](int64_t a, int64_t z) {
    for (int64_t r = a; r < z; ++r) {
      const int64_t b = r / (E * blocks), e = (r / blocks) % E, k = r % blocks;
      DISPATCH(K, S, weight_grad_image, xp, gp, pp + r * KK * 16, b, d, e, k * 16)
    }
  });
  // (B, E, blocks, KK, 16) -> sum over B in double -> (E, blocks, 16, KK) = (E*C, KK)
  return parts.sum(0, false, torch::kDouble).to(torch::kFloat).permute({0, 1, 3, 2}).reshape({E * C, KK});
}
