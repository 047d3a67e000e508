#include "models/hidden.h"

#include <algorithm>

#include "engine/error.h"
#include "engine/safetensors.h"

namespace sppft {

HiddenStates capture_hidden_states(Model& model, const std::vector<std::vector<std::int32_t>>& prompts,
                                   std::int64_t batch_size, const std::function<void(std::size_t, std::size_t)>& progress) {
  const ModelConfig& c = model.config();
  const auto n = static_cast<std::int64_t>(prompts.size()), L = c.num_layers, h = c.hidden_size;
  HiddenStates out;
  out.states = Tensor::empty({n, L + 1, h}, DType::F32, MemCategory::Activations);
  out.final_normed = Tensor::empty({n, h}, DType::F32, MemCategory::Activations);
  batch_size = std::max<std::int64_t>(1, batch_size);
  for (std::int64_t begin = 0; begin < n; begin += batch_size) {
    const std::int64_t end = std::min(n, begin + batch_size);
    StepInput in;
    std::int64_t longest = 0;
    for (std::int64_t i = begin; i < end; ++i) {
      if (prompts[i].empty()) throw InputError("prompt " + std::to_string(i + 1) + " is empty (no tokens)");
      in.tokens.push_back(prompts[i]);
      in.slots.push_back(i - begin);
      longest = std::max<std::int64_t>(longest, prompts[i].size());
    }
    KVCache cache = model.make_cache(end - begin, longest);
    HiddenCapture cap;
    model.forward(in, cache, false, &cap);
    std::copy_n(cap.states.data<float>(), (end - begin) * (L + 1) * h, out.states.data<float>() + begin * (L + 1) * h);
    std::copy_n(cap.final_normed.data<float>(), (end - begin) * h, out.final_normed.data<float>() + begin * h);
    if (progress) progress(static_cast<std::size_t>(end), static_cast<std::size_t>(n));
  }
  return out;
}

void save_hidden_states(const HiddenStates& h, const fs::path& path) {
  write_safetensors(path,
                    {{"hidden_states", DType::F32, h.states.shape(), h.states.raw()},
                     {"final_normed", DType::F32, h.final_normed.shape(), h.final_normed.raw()}},
                    {{"format", "pt"}, {"indexing", "0=embeddings, k+1=raw output of block k, last prompt position"}});
}

}  // namespace sppft
