// The SVG figure of `sppft profile`: median time per part (embeddings, blocks,
// final norm, lm_head, loss) and phase (forward, backward-dX, backward-dW,
// optimizer) as grouped bars, one panel per run; with two runs (full and SPPFT)
// a third panel sets their per-part totals side by side.
#pragma once

#include <string>
#include <vector>

#include "engine/fs.h"
#include "trainer/profile.h"

namespace sppft {

std::string profile_svg(const std::vector<const ProfileRun*>& runs, const std::string& title);
void write_profile_svg(const std::vector<const ProfileRun*>& runs, const fs::path& path, const std::string& title);

}  // namespace sppft
