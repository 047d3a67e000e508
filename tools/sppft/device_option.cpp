#include "tools/sppft/device_option.h"

#include "engine/device.h"
#include "engine/error.h"

namespace sppft::cli {

void place_model(Model& model, const Args& args) {
  if (require_device(args.get_or("--device", "cpu")) == Device::CUDA) model.to_device(Device::CUDA, DType::BF16);
}

}  // namespace sppft::cli
