// Running this binary again: sppft launch starts its ranks this way, sppft experiment each stage
// (so that a stage runs exactly as its printed command line would, in a process of its own: a
// fine-tuning's memory measurement, and on a GPU its device, start clean).
#pragma once

#include <string>
#include <vector>

namespace sppft::cli {

// The path of the running executable (/proc/self/exe); RuntimeFailure when it cannot be read.
std::string self_executable();

// Runs this binary with `args` (after the program name), output passed through, and waits:
// its exit code, or 128 + the signal that ended it.
int run_self(const std::vector<std::string>& args);

}  // namespace sppft::cli
