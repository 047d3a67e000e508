#include "tools/sppft/device_option.h"

#include <cstdio>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/json.h"
#include "models/prompting.h"
#include "trainer/freeze.h"
#ifdef SPPFT_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace sppft::cli {

void place_model(Model& model, const Args& args) {
  if (require_device(args.get_or("--device", "cpu")) == Device::CUDA) model.to_device(Device::CUDA, DType::BF16);
}

nlohmann::ordered_json chat_template_kwargs_option(const Args& args, PromptTemplate tmpl) {
  const auto text = args.get("--chat-template-kwargs");
  if (!text) return nlohmann::ordered_json::object();
  if (tmpl != PromptTemplate::Chat) throw InputError("--chat-template-kwargs: only with --template chat");
  return parse_chat_template_kwargs(*text, "--chat-template-kwargs");
}

std::string located_range(const fs::path& file) {
  const LayerRange r = layer_range_at(read_json_file(file), "/final_range", file.string());
  return std::to_string(r.first) + "-" + std::to_string(r.last);
}

std::string freeze_option(const Args& args) {
  const std::string value = args.get_or("--freeze", "");
  if (value.empty() || value.find_first_not_of("0123456789-, ") == std::string::npos) return value;
  fs::path file = value;
  if (fs::is_directory(file)) file /= "locate.json";
  if (!fs::is_regular_file(file))
    throw InputError("--freeze " + value + ": expected block ranges such as 6-12, or a locate.json (or its directory)");
  const std::string ranges = located_range(file);
  std::fprintf(stderr, "sppft: note: --freeze %s: the located safety layers of %s\n", ranges.c_str(), file.c_str());
  return ranges;
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

std::string attention_kernels_used(bool gpu, std::int64_t head_dim) {
#ifdef SPPFT_HAVE_CUDA
  if (gpu) {
    switch (cuda::training_attention_kernels(head_dim)) {
      case cuda::AttentionKernels::tensor_cores: return "wmma";
      case cuda::AttentionKernels::mma_sync: return "mma";
      case cuda::AttentionKernels::cuda_cores: return "cuda-cores";
    }
  }
#endif
  (void)gpu, (void)head_dim;
  return "cpu";
}

std::string attention_note(const std::string& requested, const std::string& used, std::int64_t head_dim) {
  if (used == requested || used == "cpu") return "";
  const std::string hd = "head_dim " + std::to_string(head_dim);
  if (used == "wmma") return "note: --attention mma takes head dims up to 128; " + hd + " runs on the WMMA kernels";
  return "note: " + hd + " does not fit the tensor-core kernels on this GPU (a multiple of 8 up to 128, or up to 256 "
         "with sm_90's shared memory); attention runs on the fp32 CUDA-core kernels";
}

ActivationPolicy activation_policy_option(const Args& args) {
  if (args.has("--recompute") && args.has("--recompute-blocks"))
    throw InputError("--recompute-blocks: give it or --recompute (every block), not both");
  if (args.has("--recompute")) return ActivationPolicy::recompute();
  if (args.has("--recompute-blocks")) return ActivationPolicy::recompute(args.get_int("--recompute-blocks", 1, 1, 1 << 20));
  return ActivationPolicy::save();
}

}  // namespace sppft::cli
