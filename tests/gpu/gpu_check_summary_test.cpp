// The benchmark half of bench/gpu_check.sh at toy size: `bench_kernels --smoke --json` and
// `sppft profile --device cuda --json` (full vs SPPFT on a tiny checkpoint, and full on the
// mma.sync attention kernels) produce what
// bench/gpu_summary.py reads, and the summary prints its table and writes summary.json - so
// the first run on a real GPU does not lose its closing table to a format mismatch. The
// numbers themselves are meaningless here. Without a GPU it prints "skipped: no CUDA device".
#include <doctest/doctest.h>

#include <cmath>

#include "engine/json.h"
#include "gpu_test_util.h"

using namespace sppft;
using namespace sppft::test::gpu;

TEST_CASE("bench_kernels --smoke, profile --json and gpu_summary.py fit together") {
  if (!have_gpu()) return;
  const fs::path base = test::temp_dir("gpu-summary"), out = base / "out";
  fs::create_directories(out);
  test::make_tiny_checkpoint(base / "model");

  auto kernels = test::run_command(test::env_path("SPPFT_BENCH_KERNELS", "build/bin/bench_kernels").string() +
                                   " --smoke --json --partial " + (base / "kernels.partial.json").string() + " 2>/dev/null");
  REQUIRE_MESSAGE(kernels.exit_code == 0, kernels.out);
  atomic_write_text(out / "kernels.json", kernels.out);
  const Json k = Json::parse(kernels.out);
  REQUIRE(k["rows"].size() >= 20);
  // --partial left the rows measured so far (all of them, at the end), marked partial.
  const Json partial = read_json_file(base / "kernels.partial.json");
  CHECK(partial["partial"] == true);
  CHECK(partial["rows"].size() == k["rows"].size());
  CHECK_FALSE(k.contains("partial"));
  for (const auto& r : k["rows"]) {
    CAPTURE(r.dump());
    CHECK(r["ms"].get<double>() >= 0);
    CHECK(std::isfinite(r["rate"].get<double>()));
  }
  CHECK(k["gemm_bf16_tflops"].get<double>() > 0);
  // The tensor-core attention paths agree with the fp32 CUDA-core one at the benchmark's shape
  // (bf16 inputs and outputs: within 2e-2 of the largest value, as cuda_attention_train_test).
  for (const char* path : {"tensor_cores", "mma_sync"})
    for (const char* t : {"out", "lse", "dq", "dk", "dv"}) {
      CAPTURE(path);
      CAPTURE(t);
      CHECK(k["attention_agreement"][path][t].get<double>() < 2e-2);
    }
  // And at head_dim 256 (gemma-2b's heads), where the tensor-core path is WMMA only,
  for (const char* t : {"out", "lse", "dq", "dk", "dv"}) {
    CAPTURE(t);
    CHECK(k["attention_agreement_d256"]["tensor_cores"][t].get<double>() < 2e-2);
  }
  CHECK_FALSE(k["attention_agreement_d256"].contains("mma_sync"));
  for (const char* path : {"tensor_cores", "mma_sync"})  // and at head_dim 96 (Phi-3-mini's), both paths
    for (const char* t : {"out", "lse", "dq", "dk", "dv"}) {
      CAPTURE(path);
      CAPTURE(t);
      CHECK(k["attention_agreement_d96"][path][t].get<double>() < 2e-2);
    }

  auto prof = test::run_command(test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " profile " +
                                (base / "model").string() +
                                 " --device cuda --steps 1 --warmup 0 --seq 32 --micro-batch 2 --compare-freeze 1-2 --ops --json 2>/dev/null");
  REQUIRE_MESSAGE(prof.exit_code == 0, prof.out);
  atomic_write_text(out / "profile.json", prof.out);
  auto prof_mma = test::run_command(test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " profile " +
                                    (base / "model").string() +
                                    " --device cuda --attention mma --steps 1 --warmup 0 --seq 32 --micro-batch 2 --json 2>/dev/null");
  REQUIRE_MESSAGE(prof_mma.exit_code == 0, prof_mma.out);
  atomic_write_text(out / "profile-mma.json", prof_mma.out);
  auto prof_rc = test::run_command(test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " profile " +
                                   (base / "model").string() +
                                   " --device cuda --recompute --steps 1 --warmup 0 --seq 32 --micro-batch 2 --json 2>/dev/null");
  REQUIRE_MESSAGE(prof_rc.exit_code == 0, prof_rc.out);
  atomic_write_text(out / "profile-recompute.json", prof_rc.out);

  auto summary = test::run_command("python3 " + (test::source_dir() / "bench/gpu_summary.py").string() + " " + out.string() +
                                   " passed 1 'test GPU' 'release 13.0' commit 0 90a '{\"stage\":\"test\",\"status\":\"ok\",\"seconds\":1}'");
  CAPTURE(summary.out);
  REQUIRE(summary.exit_code == 0);
  CHECK(summary.out.find("rmsnorm_forward") != std::string::npos);
  CHECK(summary.out.find("attention mma_sync vs fp32 CUDA cores") != std::string::npos);
  CHECK(summary.out.find("attention tensor_cores vs fp32 CUDA cores at B2 Hq8 Hkv1 T64 D256") != std::string::npos);
  CHECK(summary.out.find("train step full ") != std::string::npos);
  CHECK(summary.out.find("(nothing frozen)), attention wmma: ") != std::string::npos);
  CHECK(summary.out.find("(nothing frozen)), attention mma: ") != std::string::npos);
  CHECK(summary.out.find("SPPFT saved") != std::string::npos);
  CHECK(summary.out.find("% of the step") != std::string::npos);
  CHECK(summary.out.find("activations recomputed), attention wmma: ") != std::string::npos);
  CHECK(summary.out.find("--recompute: the reruns take ") != std::string::npos);
  CHECK(summary.out.find("% longer") != std::string::npos);  // against the same step with activations saved  // --ops: the slowest ops of the full step
  const Json prof_json = Json::parse(prof.out);
  bool multi_tensor_adamw = false;  // the GPU's AdamW bypasses kernels/ops.h and labels itself
  for (const auto& op : prof_json["runs"][0]["ops"]) multi_tensor_adamw |= op["name"] == "adamw_multi_tensor";
  CHECK(multi_tensor_adamw);
  const Json s = read_json_file(out / "summary.json");
  CHECK(s["result"] == "passed");
  CHECK(s["benchmarks"]["kernels"]["rows"].size() == k["rows"].size());
  CHECK(s["benchmarks"]["profile"]["runs"].size() == 2);
  REQUIRE(s["benchmarks"]["profile_mma"]["runs"].size() == 1);
  CHECK(s["benchmarks"]["profile_mma"]["runs"][0]["tflops"].get<double>() > 0);  // the table's numbers are saved too
  CHECK(s["benchmarks"]["torch_attention"].contains("missing"));  // not run here: recorded as missing

  // A kernels stage stopped by its limit: gpu_check.sh keeps the partial rows, the summary says so.
  const fs::path cut = base / "cut";
  fs::create_directories(cut);
  Json rows_so_far = partial;
  rows_so_far["rows"] = Json::array({partial["rows"][0], partial["rows"][1]});
  atomic_write_text(cut / "kernels.json", rows_so_far.dump());
  auto cut_summary = test::run_command("python3 " + (test::source_dir() / "bench/gpu_summary.py").string() + " " + cut.string() +
                                       " failed 1 'test GPU' 'release 13.0' commit 0 90a '{\"stage\":\"kernels\",\"status\":\"timeout\",\"seconds\":60}'");
  CAPTURE(cut_summary.out);
  REQUIRE(cut_summary.exit_code == 0);
  CHECK(cut_summary.out.find("kernels: partial, the stage stopped after 2 rows") != std::string::npos);
}
