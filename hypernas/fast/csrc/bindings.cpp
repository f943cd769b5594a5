// The compiled module hypernas.fast.kernels loads: mix.cpp, pointwise.cpp and depthwise.cpp.
#include <torch/extension.h>

#include <vector>

std::vector<torch::Tensor> mix_forward(torch::Tensor g, std::vector<torch::Tensor> Y, std::vector<int64_t> fi,
                                       std::vector<torch::Tensor> S, std::vector<int64_t> si,
                                       std::vector<c10::optional<torch::Tensor>> acc);
std::vector<torch::Tensor> mix_backward(torch::Tensor g, std::vector<torch::Tensor> Y, std::vector<int64_t> fi,
                                        std::vector<torch::Tensor> S, std::vector<int64_t> si,
                                        std::vector<torch::Tensor> G);
torch::Tensor pointwise_rows(torch::Tensor x, torch::Tensor M);
torch::Tensor pointwise_weight_grad(torch::Tensor x, torch::Tensor dy);
torch::Tensor depthwise_forward(torch::Tensor x, torch::Tensor w, int64_t E, int64_t K, int64_t S);
torch::Tensor depthwise_input_grad(torch::Tensor g, torch::Tensor w, int64_t E, int64_t K, int64_t S, int64_t H,
                                   int64_t W);
torch::Tensor depthwise_weight_grad(torch::Tensor x, torch::Tensor g, int64_t E, int64_t K, int64_t S);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("mix_forward", &mix_forward, "op mixture of one source node (mix.cpp)");
  m.def("mix_backward", &mix_backward, "its backward: dgamma, dY..., dS... (mix.cpp)");
  m.def("pointwise_rows", &pointwise_rows, "grouped 1x1 convolution, 16 channels per group (pointwise.cpp)");
  m.def("pointwise_weight_grad", &pointwise_weight_grad, "its weight gradient (pointwise.cpp)");
  m.def("depthwise_forward", &depthwise_forward, "depthwise KxK conv at stride 1 or 2 of x repeated E times (depthwise.cpp)");
  m.def("depthwise_input_grad", &depthwise_input_grad, "its input gradient, summed over the E copies");
  m.def("depthwise_weight_grad", &depthwise_weight_grad, "its weight gradient");
}
