// Configs of the paper's models at their real shapes, so memory plans and
// profiles need no checkpoint: llama-3-8b, llama-2-7b, gemma-2b, phi-3-mini.
#pragma once

#include <string>
#include <vector>

#include "models/config.h"

namespace sppft {

// InputError listing the known names for an unknown one.
ModelConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace sppft
