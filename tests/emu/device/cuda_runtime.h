// Emulated-device build (tests/emudev.cmake): the CUDA runtime is tests/emu/emu_runtime.h, the
// device environment tests/emu/emu_cuda.h.
#pragma once
#include "emu_cuda.h"
