#include "tools/sppft/device_option.h"

#include "engine/device.h"
#include "engine/error.h"

namespace sppft::cli {

void place_model(Model& model, const Args& args) {
  const std::string device = args.get_or("--device", "cpu");
  if (device == "cpu") return;
  if (device != "cuda") throw InputError("--device: expected cpu or cuda, got '" + device + "'");
  if (cuda_device_count() == 0)
    throw InputError(std::string("--device cuda: ") + (built_with_cuda() ? "no CUDA device is visible" : "this build has no CUDA"));
  model.to_device(Device::CUDA, DType::BF16);
}

}  // namespace sppft::cli
