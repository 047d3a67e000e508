// Configs of real models (the paper's four and one or more per supported family) as their
// config.json on the Hub, so memory plans and profiles need no checkpoint.
#pragma once

#include <string>
#include <vector>

#include "models/config.h"

namespace sppft {

// InputError listing the known names for an unknown one.
ModelConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();
// The names, comma-separated, for help texts and errors.
std::string preset_list();

}  // namespace sppft
