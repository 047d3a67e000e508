// The SVG figures of the analysis: cosine curves with std bands and the gap
// (cossim.svg), the R_o sweeps of the localization (locate.svg).
#pragma once

#include <string>

#include "analysis/cossim.h"
#include "analysis/locate.h"
#include "engine/fs.h"

namespace sppft {

void write_cossim_svg(const CosSimResult& r, const fs::path& path, const std::string& title);
void write_locate_svg(const LocateResult& r, const fs::path& path, const std::string& title);

}  // namespace sppft
