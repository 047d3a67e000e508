// Emulated-device build: NVTX ranges are no-ops (no profiler attaches to the emulator).
#pragma once
inline int nvtxRangePushA(const char*) { return 0; }
inline int nvtxRangePop() { return 0; }
