// safetensors reading/writing, and every malformed-file case reported as InputError.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>

#include "engine/error.h"
#include "engine/safetensors.h"
#include "test_util.h"

using namespace sppft;

namespace {

void write_raw(const fs::path& p, const std::string& header, std::size_t data_bytes, bool fix_len = true,
               std::uint64_t len_override = 0) {
  std::ofstream f(p, std::ios::binary);
  std::uint64_t n = fix_len ? header.size() : len_override;
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>(n >> (8 * i)));
  f << header;
  f << std::string(data_bytes, '\0');
}

std::string error_of(const fs::path& p) {
  try {
    SafetensorsFile f(p);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("write then read back F32, BF16 and F16 tensors") {
  auto dir = test::temp_dir("st");
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 65504.0f};
  std::vector<std::uint16_t> b(6), h(6);
  convert_from_f32(a.data(), DType::BF16, b.data(), 6);
  convert_from_f32(a.data(), DType::F16, h.data(), 6);
  write_safetensors(dir / "x.safetensors",
                    {{"a", DType::F32, {2, 3}, a.data()}, {"b", DType::BF16, {6}, b.data()}, {"h", DType::F16, {3, 2}, h.data()}},
                    {{"format", "pt"}});
  auto ck = Checkpoint::from_file(dir / "x.safetensors");
  CHECK(ck.entries().size() == 3);
  Tensor ta = ck.load_f32("a", {2, 3}, MemCategory::Workspace);
  for (int i = 0; i < 6; ++i) CHECK(ta.data<float>()[i] == a[i]);
  Tensor tb = ck.load_f32("b", {6}, MemCategory::Workspace);
  CHECK(tb.data<float>()[1] == -2.5f);
  CHECK(tb.data<float>()[4] == doctest::Approx(1e-3).epsilon(0.01));
  Tensor th = ck.load_f32("h", {3, 2}, MemCategory::Workspace);
  CHECK(th.data<float>()[5] == 65504.0f);
  CHECK_THROWS_AS(ck.load_f32("a", {3, 2}, MemCategory::Workspace), InputError);
  CHECK_THROWS_AS(ck.entry("missing"), InputError);
  SafetensorsFile f(dir / "x.safetensors");
  CHECK(f.metadata().at("format") == "pt");
  // No temp file left behind.
  int files = 0;
  for (auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  CHECK(files == 1);
  fs::remove_all(dir);
}

TEST_CASE("malformed safetensors files are refused with a clear message") {
  auto dir = test::temp_dir("stbad");
  const fs::path p = dir / "bad.safetensors";
  {
    std::ofstream f(p, std::ios::binary);
    f << "abc";
  }
  CHECK(error_of(p).find("truncated") != std::string::npos);
  write_raw(p, "{}", 0, false, 1000);
  CHECK(error_of(p).find("past the end") != std::string::npos);
  write_raw(p, "{\"a\": {", 0);
  CHECK(error_of(p).find("malformed JSON") != std::string::npos);
  write_raw(p, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}})", 8);
  CHECK(error_of(p).find("outside the data") != std::string::npos);
  write_raw(p, R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8);
  CHECK(error_of(p).find("needs 12") != std::string::npos);
  write_raw(p, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12);
  CHECK(error_of(p).find("overlaps") != std::string::npos);
  write_raw(p, R"({"a": {"dtype": "I8", "shape": [2], "data_offsets": [0, 2]}})", 2);
  CHECK(error_of(p).find("not supported") != std::string::npos);
  write_raw(p, R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", 0);
  CHECK(error_of(p).find("negative") != std::string::npos);
  write_raw(p, R"([1, 2])", 0);
  CHECK(error_of(p).find("not a JSON object") != std::string::npos);
  CHECK_THROWS_AS(SafetensorsFile(dir / "nope.safetensors"), InputError);
  fs::remove_all(dir);
}

TEST_CASE("sharded checkpoints: index, shards and their consistency") {
  auto dir = test::temp_dir("shard");
  std::vector<float> a = {1, 2}, b = {3, 4, 5};
  write_safetensors(dir / "model-00001-of-00002.safetensors", {{"a", DType::F32, {2}, a.data()}});
  write_safetensors(dir / "model-00002-of-00002.safetensors", {{"b", DType::F32, {3}, b.data()}});
  atomic_write_text(dir / "model.safetensors.index.json",
                    R"({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})");
  Checkpoint ck(dir);
  CHECK(ck.shard_count() == 2);
  CHECK(ck.load_f32("b", {3}, MemCategory::Workspace).data<float>()[2] == 5.0f);
  // The index names a tensor that its shard lacks.
  atomic_write_text(dir / "model.safetensors.index.json",
                    R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"}})");
  CHECK_THROWS_WITH_AS(Checkpoint{dir}, doctest::Contains("not found in shard"), InputError);
  atomic_write_text(dir / "model.safetensors.index.json", R"({"weight_map": {"a": "../x"}})");
  CHECK_THROWS_AS(Checkpoint{dir}, InputError);
  fs::remove_all(dir / "model.safetensors.index.json");
  CHECK_THROWS_WITH_AS(Checkpoint{dir}, doctest::Contains("no model.safetensors"), InputError);
  CHECK_THROWS_WITH_AS(Checkpoint{dir / "missing"}, doctest::Contains("directory not found"), InputError);
  fs::remove_all(dir);
}

TEST_CASE("bf16 and f16 conversions round to nearest even") {
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(f32_to_bf16(1.00390625f) == 0x3f80);  // halfway: ties to even (down)
  CHECK(f32_to_bf16(1.01171875f) == 0x3f82);  // halfway: ties to even (up)
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f16_to_f32(0x3c00) == 1.0f);
  CHECK(f16_to_f32(0x0001) == doctest::Approx(5.960464477539063e-08));
  CHECK(f32_to_f16(65520.0f) == 0x7c00);  // rounds up to inf
  CHECK(f32_to_f16(5.960464477539063e-08f) == 0x0001);
  for (std::uint32_t h = 0; h < 0x7c00; h += 7) CHECK(f32_to_f16(f16_to_f32(static_cast<std::uint16_t>(h))) == h);
}
