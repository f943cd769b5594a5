// The op mixture of one source node of a search cell, forward and backward, in one pass
// over the activations each (hypernas.fast.kernels explains when and why it is used).
//
// For the E edges t leaving a node, with op weights g[b, t, m] for image b:
//
//   out_t = acc_t + sum_{fused m} g[b, t, m] * Y_m[:, t*C:(t+1)*C] + sum_{shared m} g[b, t, m] * S_m
//
// Y_m: a fused op's output for all E edges, (B, E*C, H, W); S_m: a shared op's output,
// (B, C, H, W); acc_t: what target t has gathered from earlier source nodes (or none).
// Every tensor is channels-last and contiguous, so one pixel's channels are adjacent.
//
// Backward, given G_t = dL/d out_t:
//   dY_m[:, tC:(t+1)C] = g[b,t,m] G_t,   dS_m = sum_t g[b,t,m] G_t,   d acc_t = G_t,
//   dg[b,t,m] = <G_t[b], term_{t,m}[b]>  (sum over channels and pixels).
//
// Images are independent: each thread takes whole images, so results do not depend on
// the number of threads.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

constexpr int64_t kMaxChannels = 1024;

// CC: channels known at compile time (vectorised and unrolled), 0: C at run time
template <typename T, int CC>
static void forward_image(int64_t b, const T* __restrict__ gb, int64_t k, int64_t E, int64_t C_, int64_t P,
                          const std::vector<const T*>& Y, const std::vector<int64_t>& fi,
                          const std::vector<const T*>& S, const std::vector<int64_t>& si,
                          const std::vector<const T*>& acc, const std::vector<T*>& out) {
  const int64_t C = CC ? CC : C_;
  for (int64_t p = 0; p < P; ++p) {
    const int64_t px = (b * P + p) * C;  // this pixel in a C-channel tensor
    for (int64_t t = 0; t < E; ++t) {
      T v[CC ? CC : kMaxChannels];
      const T* __restrict__ a = acc[t];
      if (a) { for (int64_t c = 0; c < C; ++c) v[c] = a[px + c]; }
      else { for (int64_t c = 0; c < C; ++c) v[c] = 0; }
      for (size_t m = 0; m < Y.size(); ++m) {
        const T w = gb[t * k + fi[m]];
        const T* __restrict__ y = Y[m] + px * E + t * C;
        for (int64_t c = 0; c < C; ++c) v[c] += w * y[c];
      }
      for (size_t m = 0; m < S.size(); ++m) {
        const T w = gb[t * k + si[m]];
        const T* __restrict__ s = S[m] + px;
        for (int64_t c = 0; c < C; ++c) v[c] += w * s[c];
      }
      T* __restrict__ o = out[t] + px;
      for (int64_t c = 0; c < C; ++c) o[c] = v[c];
    }
  }
}

template <typename T, int CC>
static void backward_image(int64_t b, const T* __restrict__ gb, T* __restrict__ dgb, int64_t k, int64_t E,
                           int64_t C_, int64_t P,
                           const std::vector<const T*>& Y, const std::vector<int64_t>& fi,
                           const std::vector<const T*>& S, const std::vector<int64_t>& si,
                           const std::vector<const T*>& G, const std::vector<T*>& dY,
                           const std::vector<T*>& dS, std::vector<double>& dots) {
  const int64_t C = CC ? CC : C_;
  const size_t nf = Y.size(), ns = S.size();
  std::fill(dots.begin(), dots.end(), 0.0);  // per (op, edge, channel) sums of dg, in double:
  // dg sums products that largely cancel (BatchNorm outputs), and float sums lose digits
  for (int64_t p = 0; p < P; ++p) {
    const int64_t px = (b * P + p) * C;
    for (size_t m = 0; m < ns; ++m) {
      T v[CC ? CC : kMaxChannels];
      for (int64_t c = 0; c < C; ++c) v[c] = 0;
      const T* __restrict__ s = S[m] + px;
      for (int64_t t = 0; t < E; ++t) {
        const T w = gb[t * k + si[m]];
        const T* __restrict__ Gt = G[t] + px;
        double* __restrict__ d = dots.data() + ((nf + m) * E + t) * C;
        for (int64_t c = 0; c < C; ++c) { v[c] += w * Gt[c]; d[c] += double(Gt[c]) * s[c]; }
      }
      T* __restrict__ o = dS[m] + px;
      for (int64_t c = 0; c < C; ++c) o[c] = v[c];
    }
    for (size_t m = 0; m < nf; ++m) {
      for (int64_t t = 0; t < E; ++t) {
        const T w = gb[t * k + fi[m]];
        const T* __restrict__ Gt = G[t] + px;
        const T* __restrict__ y = Y[m] + px * E + t * C;
        T* __restrict__ o = dY[m] + px * E + t * C;
        double* __restrict__ d = dots.data() + (m * E + t) * C;
        for (int64_t c = 0; c < C; ++c) { o[c] = w * Gt[c]; d[c] += double(Gt[c]) * y[c]; }
      }
    }
  }
  for (size_t m = 0; m < nf + ns; ++m) {
    const int64_t op = m < nf ? fi[m] : si[m - nf];
    for (int64_t t = 0; t < E; ++t) {
      double sum = 0;
      const double* d = dots.data() + (m * E + t) * C;
      for (int64_t c = 0; c < C; ++c) sum += d[c];
      dgb[t * k + op] = static_cast<T>(sum);
    }
  }
}

#define DISPATCH_CHANNELS(C, FN, ...)                   \
  switch (C) {                                          \
    case 8: FN<scalar_t, 8>(__VA_ARGS__); break;        \
    case 16: FN<scalar_t, 16>(__VA_ARGS__); break;      \
    case 32: FN<scalar_t, 32>(__VA_ARGS__); break;      \
    case 64: FN<scalar_t, 64>(__VA_ARGS__); break;      \
    default: FN<scalar_t, 0>(__VA_ARGS__); break;       \
  }

static void check(const torch::Tensor& t, const torch::Tensor& g, int64_t channels, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == g.scalar_type() && t.dim() == 4,
              "mix: ", what, " must be a 4-d CPU tensor of gamma's dtype");
  TORCH_CHECK(t.size(0) == g.size(0) && t.size(1) == channels, "mix: ", what, " has the wrong shape");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), "mix: ", what, " must be channels-last contiguous");
}

std::vector<torch::Tensor> mix_forward(torch::Tensor g, std::vector<torch::Tensor> Y, std::vector<int64_t> fi,
                                       std::vector<torch::Tensor> S, std::vector<int64_t> si,
                                       std::vector<c10::optional<torch::Tensor>> acc) {
  TORCH_CHECK(g.dim() == 3 && g.is_contiguous(), "mix: gamma must be a contiguous (B, E, k) tensor");
  TORCH_CHECK(!Y.empty() || !S.empty(), "mix: no op outputs");
  const int64_t B = g.size(0), E = g.size(1), k = g.size(2);
  TORCH_CHECK(Y.size() == fi.size() && S.size() == si.size() && (int64_t)acc.size() == E, "mix: argument counts");
  const auto& ref = Y.empty() ? S[0] : Y[0];
  const int64_t C = Y.empty() ? ref.size(1) : ref.size(1) / E;
  TORCH_CHECK(C <= kMaxChannels, "mix: at most ", kMaxChannels, " channels per edge");
  const int64_t H = ref.size(2), W = ref.size(3), P = H * W;
  for (auto& y : Y) check(y, g, E * C, "a fused op's output");
  for (auto& s : S) check(s, g, C, "a shared op's output");
  for (auto& a : acc) if (a.has_value()) check(*a, g, C, "an accumulator");
  for (auto m : fi) TORCH_CHECK(m >= 0 && m < k, "mix: op index out of range");
  for (auto m : si) TORCH_CHECK(m >= 0 && m < k, "mix: op index out of range");
  std::vector<torch::Tensor> out;
  for (int64_t t = 0; t < E; ++t)
    out.push_back(torch::empty({B, C, H, W}, ref.options().memory_format(at::MemoryFormat::ChannelsLast)));
  AT_DISPATCH_FLOATING_TYPES(ref.scalar_type(), "mix_forward", [&] {
    std::vector<const scalar_t*> yp, sp, ap;
    std::vector<scalar_t*> op;
    for (auto& y : Y) yp.push_back(y.data_ptr<scalar_t>());
    for (auto& s : S) sp.push_back(s.data_ptr<scalar_t>());
    for (auto& a : acc) ap.push_back(a.has_value() ? a->data_ptr<scalar_t>() : nullptr);
    for (auto& o : out) op.push_back(o.data_ptr<scalar_t>());
    const scalar_t* gd = g.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        DISPATCH_CHANNELS(C, forward_image, b, gd + b * E * k, k, E, C, P, yp, fi, sp, si, ap, op)
      }
    });
  });
  return out;
}

// returns dg, then dY_m for each fused op, then dS_m for each shared op
std::vector<torch::Tensor> mix_backward(torch::Tensor g, std::vector<torch::Tensor> Y, std::vector<int64_t> fi,
                                        std::vector<torch::Tensor> S, std::vector<int64_t> si,
                                        std::vector<torch::Tensor> G) {
  TORCH_CHECK(g.dim() == 3 && g.is_contiguous(), "mix: gamma must be a contiguous (B, E, k) tensor");
  const int64_t B = g.size(0), E = g.size(1), k = g.size(2);
  TORCH_CHECK((int64_t)G.size() == E, "mix: one gradient per edge");
  const int64_t C = G[0].size(1), P = G[0].size(2) * G[0].size(3);
  TORCH_CHECK(C <= kMaxChannels, "mix: at most ", kMaxChannels, " channels per edge");
  for (auto& x : G) check(x, g, C, "a gradient");
  for (auto& y : Y) check(y, g, E * C, "a fused op's output");
  for (auto& s : S) check(s, g, C, "a shared op's output");
  auto dg = torch::zeros_like(g);
  std::vector<torch::Tensor> dY, dS;
  for (auto& y : Y) dY.push_back(torch::empty_like(y, at::MemoryFormat::ChannelsLast));
  for (auto& s : S) dS.push_back(torch::empty_like(s, at::MemoryFormat::ChannelsLast));
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "mix_backward", [&] {
    std::vector<const scalar_t*> yp, sp, Gp;
    std::vector<scalar_t*> dyp, dsp;
    for (auto& y : Y) yp.push_back(y.data_ptr<scalar_t>());
    for (auto& s : S) sp.push_back(s.data_ptr<scalar_t>());
    for (auto& x : G) Gp.push_back(x.data_ptr<scalar_t>());
    for (auto& x : dY) dyp.push_back(x.data_ptr<scalar_t>());
    for (auto& x : dS) dsp.push_back(x.data_ptr<scalar_t>());
    const scalar_t* gd = g.data_ptr<scalar_t>();
    scalar_t* dgd = dg.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> dots((Y.size() + S.size()) * E * C);
      for (int64_t b = begin; b < end; ++b) {
        DISPATCH_CHANNELS(C, backward_image, b, gd + b * E * k, dgd + b * E * k, k, E, C, P, yp, fi, sp, si,
                          Gp, dyp, dsp, dots)
      }
    });
  });
  std::vector<torch::Tensor> res{dg};
  res.insert(res.end(), dY.begin(), dY.end());
  res.insert(res.end(), dS.begin(), dS.end());
  return res;
}
