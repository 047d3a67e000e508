// Element types of tensors and files, with exact fp16/bf16 <-> fp32 conversion.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace sppft {

enum class DType : std::uint8_t { F32, F16, BF16, I32 };

std::size_t dtype_size(DType t);
std::string_view dtype_name(DType t);  // safetensors spelling: "F32", "F16", "BF16", "I32"

inline float bf16_to_f32(std::uint16_t h) {
  std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, NaN kept quiet (as torch does).
inline std::uint16_t f32_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

float f16_to_f32(std::uint16_t h);
std::uint16_t f32_to_f16(float f);

// Converts `n` elements of `src` (dtype `from`, F32/F16/BF16) to fp32.
void convert_to_f32(const void* src, DType from, float* dst, std::size_t n);
// Converts `n` fp32 values to `to` (F32/F16/BF16).
void convert_from_f32(const float* src, DType to, void* dst, std::size_t n);

}  // namespace sppft
