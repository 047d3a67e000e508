// `sppft profile --device cuda` (bf16-mixed, CUDA events): full vs SPPFT on a tiny
// checkpoint, train and forward modes. Per run the bytes the parts hold plus the workspace
// (graph buffers, RoPE table and the backend's own: cuBLASLt workspace, error flag, reserved
// scratch) equal the bf16-mixed memory plan; frozen blocks show no dW time and no
// gradient / optimizer bytes; the phases add up to the step timed around them (within 5%);
// the saving equals the predicted bytes (with fp32 masters); the trace has the phases.
// Without a GPU it prints "skipped: no CUDA device" and passes.
#include <doctest/doctest.h>

#include "engine/json.h"
#include "gpu_test_util.h"

using namespace sppft;
using namespace sppft::test::gpu;

TEST_CASE("sppft profile --device cuda: bytes equal the bf16-mixed plan, frozen blocks do no dW work") {
  if (!have_gpu()) return;
  const fs::path base = test::temp_dir("gpu-profile");
  test::make_tiny_checkpoint(base / "model");
  const std::string bin = test::env_path("SPPFT_BIN", "build/bin/sppft").string();
  const fs::path trace = base / "trace.json";
  auto r = test::run_command(bin + " profile " + (base / "model").string() + " --device cuda --steps 2 --warmup 1 --seq 32 " +
                             "--micro-batch 2 --compare-freeze 1-2 --json --trace " + trace.string() + " 2>/dev/null");
  REQUIRE_MESSAGE(r.exit_code == 0, r.out);
  const Json j = Json::parse(r.out);
  CHECK(j["device"] == "cuda");
  REQUIRE(j["runs"].size() == 2);
  for (const auto& run : j["runs"]) {
    CAPTURE(run["label"].get<std::string>());
    CHECK(run["bytes"]["total"] == run["bytes"]["planned_total"]);
    CHECK(run["sum_vs_step_max_error"].get<double>() < 0.05);
  }
  const Json& frozen = j["runs"][1]["parts"];
  for (int p : {2, 3}) {  // block.1, block.2 (part 0 is the embeddings)
    CAPTURE(p);
    CHECK(frozen[p]["mode"] == "frozen");
    CHECK(frozen[p]["seconds"]["backward_dw"]["median"].get<double>() == 0);
  }
  CHECK(j["comparison"]["total"]["saved_bytes"] == j["comparison"]["total"]["predicted_saved_bytes_bf16_mixed"]);
  CHECK(Json::parse(read_file(trace))["traceEvents"].size() > 10);

  // The mma.sync attention kernels through the whole step: same bytes (they need no buffer the
  // WMMA ones do not), and the JSON says which ran.
  auto mma = test::run_command(bin + " profile " + (base / "model").string() +
                               " --device cuda --attention mma --steps 1 --warmup 0 --seq 32 --micro-batch 2 --json 2>/dev/null");
  REQUIRE_MESSAGE(mma.exit_code == 0, mma.out);
  const Json m = Json::parse(mma.out);
  CHECK(m["attention_kernels"] == "mma");
  CHECK(m["attention_kernels_used"] == "mma");
  CHECK(j["attention_kernels"] == "wmma");
  CHECK(j["attention_kernels_used"] == "wmma");
  CHECK(m["runs"][0]["bytes"]["total"] == m["runs"][0]["bytes"]["planned_total"]);

  auto fwd = test::run_command(bin + " profile " + (base / "model").string() +
                               " --device cuda --mode forward --steps 1 --warmup 0 --seq 16 --json 2>/dev/null");
  REQUIRE_MESSAGE(fwd.exit_code == 0, fwd.out);
  const Json f = Json::parse(fwd.out);
  CHECK(f["runs"][0]["bytes"]["total"] == f["runs"][0]["bytes"]["planned_total"]);
}

TEST_CASE("sppft profile --device cuda --attention mma on heads of 256: WMMA runs, and a note says so") {
  if (!have_gpu()) return;
  const fs::path base = test::temp_dir("gpu-profile-d256");
  // gemma-2b's head size (2 heads of 256, 1 KV head), one block.
  test::make_tiny_checkpoint(base / "model", R"({"hidden_size": 512, "num_attention_heads": 2, "num_key_value_heads": 1,
                                                 "num_hidden_layers": 1})");
  const std::string bin = test::env_path("SPPFT_BIN", "build/bin/sppft").string();
  const fs::path err = base / "stderr.txt";
  auto r = test::run_command(bin + " profile " + (base / "model").string() +
                             " --device cuda --attention mma --steps 1 --warmup 0 --seq 16 --json 2>" + err.string());
  REQUIRE_MESSAGE(r.exit_code == 0, r.out << read_file(err));
  const Json j = Json::parse(r.out);
  CHECK(j["attention_kernels"] == "mma");
  CHECK(j["attention_kernels_used"] == "wmma");
  CHECK(read_file(err).find("note: --attention mma takes head dims up to 128; head_dim 256 runs on the WMMA kernels") !=
        std::string::npos);
}
