#include "tools/sppft/device_option.h"

#include "engine/device.h"
#include "engine/error.h"
#ifdef SPPFT_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace sppft::cli {

void place_model(Model& model, const Args& args) {
  if (require_device(args.get_or("--device", "cpu")) == Device::CUDA) model.to_device(Device::CUDA, DType::BF16);
}

std::string apply_attention_option(const Args& args, bool gpu) {
  const std::string name = args.get_or("--attention", "wmma");
  if (name != "wmma" && name != "mma" && name != "cuda-cores")
    throw InputError("--attention: expected wmma, mma or cuda-cores, got '" + name + "'");
  if (args.has("--attention") && !gpu) throw InputError("--attention: chooses GPU kernels; it needs --device cuda");
#ifdef SPPFT_HAVE_CUDA
  if (gpu)
    cuda::set_attention_kernels(name == "mma"          ? cuda::AttentionKernels::mma_sync
                                : name == "cuda-cores" ? cuda::AttentionKernels::cuda_cores
                                                       : cuda::AttentionKernels::tensor_cores);
#endif
  return name;
}

}  // namespace sppft::cli
