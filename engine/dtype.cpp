#include "engine/dtype.h"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace sppft {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
  }
  return 0;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
  }
  return "?";
}

float f16_to_f32(std::uint16_t h) {
  std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<std::uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::uint16_t f32_to_f16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  std::uint16_t sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  std::uint32_t absbits = bits & 0x7fffffffu;
  if (absbits > 0x7f800000u) return sign | 0x7e00u;           // NaN
  if (absbits >= 0x477ff000u) return sign | 0x7c00u;          // overflow (incl. rounding) -> inf
  if (absbits < 0x33000001u) return sign;                     // underflow to zero
  int exp = static_cast<int>(absbits >> 23) - 127 + 15;
  std::uint32_t mant = absbits & 0x7fffffu;
  if (exp <= 0) {  // subnormal half
    mant |= 0x800000u;
    int shift = 14 - exp;
    std::uint32_t half = mant >> shift;
    std::uint32_t rem = mant & ((1u << shift) - 1);
    std::uint32_t midpoint = 1u << (shift - 1);
    if (rem > midpoint || (rem == midpoint && (half & 1u))) ++half;
    return sign | static_cast<std::uint16_t>(half);
  }
  std::uint32_t half = (static_cast<std::uint32_t>(exp) << 10) | (mant >> 13);
  std::uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;
  return sign | static_cast<std::uint16_t>(half);
}

namespace {
// A safetensors file need not align its tensors (a mapped BF16 tensor may start at an odd byte);
// memcpy is the defined way to read one, and compiles to a plain load.
inline std::uint16_t load_u16(const unsigned char* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
}  // namespace

void convert_to_f32(const void* src, DType from, float* dst, std::size_t n) {
  switch (from) {
    case DType::F32: std::memcpy(dst, src, n * 4); break;
    case DType::BF16: {
      const auto* s = static_cast<const unsigned char*>(src);
#pragma omp parallel for if (n > 65536)
      for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(s + 2 * i));
      break;
    }
    case DType::F16: {
      const auto* s = static_cast<const unsigned char*>(src);
#pragma omp parallel for if (n > 65536)
      for (std::size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(s + 2 * i));
      break;
    }
    case DType::I32: break;
  }
}

void convert_from_f32(const float* src, DType to, void* dst, std::size_t n) {
  switch (to) {
    case DType::F32: std::memcpy(dst, src, n * 4); break;
    case DType::BF16: {
      auto* d = static_cast<std::uint16_t*>(dst);
      for (std::size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      break;
    }
    case DType::F16: {
      auto* d = static_cast<std::uint16_t*>(dst);
      for (std::size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      break;
    }
    case DType::I32: break;
  }
}

}  // namespace sppft
