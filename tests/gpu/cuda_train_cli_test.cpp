// `sppft train --device cuda` against `--device cpu` on the same tiny checkpoint and
// data: the losses of every step agree within bf16 precision (2e-2 relative: the GPU
// holds weights, activations and gradients in bf16, with fp32 masters and moments), the
// frozen block is bit-for-bit untouched, the safety probe runs on the GPU, and the bytes
// the run measured on the GPU equal the bf16-mixed plan in every category, the workspace
// included (the cuBLASLt workspace, error flag and reserved scratch of
// kernels/device_scratch.h).
// A second case kills a GPU run and resumes it. Without a GPU both print "skipped: no CUDA
// device" and pass.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/json.h"
#include "engine/safetensors.h"
#include "gpu_test_util.h"

using namespace sppft;
using namespace sppft::test::gpu;

namespace {

// One value of `key` per step of a metrics.jsonl, NaN where absent.
std::vector<double> metric_values(const fs::path& file, const char* key) {
  std::vector<double> out;
  for (const Json& line : test::read_jsonl(file)) out.push_back(line.contains(key) ? line[key].get<double>() : std::nan(""));
  return out;
}

}  // namespace

TEST_CASE("sppft train --device cuda follows the CPU run") {
  if (!have_gpu()) return;
  const fs::path base = test::temp_dir("gpu-train");
  test::make_tiny_checkpoint(base / "model");
  write_sft_data(base / "data.jsonl", 16);
  const std::string bin = test::env_path("SPPFT_BIN", "build/bin/sppft").string();
  // The probe on the first 12 prompts of each set (the whole sets take minutes on the emulated device).
  for (const char* set : {"normal.csv", "malicious.csv"}) test::write_head(test::source_dir() / "data" / set, base / set, 12);
  const std::string args = " train " + (base / "model").string() + " --data " + (base / "data.jsonl").string() +
                           " --micro-batch 4 --cutoff 160 --max-steps 4 --lr 1e-3 --freeze 1-2 --safety-probe " +
                           (base / "normal.csv").string() + "," + (base / "malicious.csv").string() + " --probe-every 2 --out ";
  auto cpu = test::run_command(bin + args + (base / "cpu").string());
  REQUIRE_MESSAGE(cpu.exit_code == 0, cpu.out);
  auto gpu = test::run_command(bin + args + (base / "gpu").string() + " --device cuda");
  REQUIRE_MESSAGE(gpu.exit_code == 0, gpu.out);

  auto metric = [&](const char* run, const char* key) { return metric_values(base / run / "metrics.jsonl", key); };
  const auto lc = metric("cpu", "loss"), lg = metric("gpu", "loss");
  // The safety probe (steps 1, 2, 4) runs its forward on the GPU with the bf16 training weights:
  // the angle gap follows the CPU's within 2 degrees.
  const auto pc = metric("cpu", "probe_gap_deg"), pg = metric("gpu", "probe_gap_deg");
  REQUIRE(pg.size() == 4);
  for (int i : {0, 1, 3}) {
    CAPTURE(i);
    CHECK(std::isfinite(pg[i]));
    CHECK(std::abs(pg[i] - pc[i]) < 2.0);
  }
  REQUIRE(lc.size() == 4);
  REQUIRE(lg.size() == 4);
  for (int i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(std::abs(lg[i] - lc[i]) / lc[i] < 2e-2);
  }
  // The same run on the mma.sync attention kernels (first two steps, no probe) follows the CPU too.
  auto mma = test::run_command(bin + " train " + (base / "model").string() + " --data " + (base / "data.jsonl").string() +
                               " --micro-batch 4 --cutoff 160 --max-steps 2 --lr 1e-3 --freeze 1-2 --device cuda "
                               "--attention mma --out " + (base / "gpu-mma").string());
  REQUIRE_MESSAGE(mma.exit_code == 0, mma.out);
  const auto lm = metric("gpu-mma", "loss");
  REQUIRE(lm.size() == 2);
  for (int i = 0; i < 2; ++i) {
    CAPTURE(i);
    CHECK(std::abs(lm[i] - lc[i]) / lc[i] < 2e-2);
  }
  // The frozen block keeps the starting weights (bf16-rounded on the GPU, so compare rounded values).
  Checkpoint start(base / "model"), tuned(base / "gpu");
  const TensorEntry &a = start.entry("model.layers.1.mlp.down_proj.weight"), &b = tuned.entry("model.layers.1.mlp.down_proj.weight");
  REQUIRE(b.dtype == DType::BF16);
  std::vector<float> fa(shape_numel(a.shape)), fb(fa.size());
  convert_to_f32(a.data, a.dtype, fa.data(), fa.size());
  convert_to_f32(b.data, b.dtype, fb.data(), fb.size());
  for (auto& x : fa) x = round_bf16(x);
  CHECK(fa == fb);

  Json mem = read_json_file(base / "gpu" / "memory.json");
  CAPTURE(mem.dump(2));
  CHECK(mem["device"] == "cuda");
  CHECK(mem.contains("cuda_mem_get_info"));
  for (const char* cat : {"weights", "grads", "master", "optimizer", "activations", "workspace", "total_bytes"}) {
    CAPTURE(cat);
    CHECK(mem["predicted"][cat] == mem["measured_peak"][cat]);
  }
}

// bf16-mixed checkpoints hold the fp32 masters and moments: a GPU run killed after step 3 and
// resumed from its step-2 checkpoint ends with the uninterrupted run's losses and weights.
TEST_CASE("a GPU run killed with SIGKILL resumes with the same losses and weights") {
  if (!have_gpu()) return;
  const fs::path base = test::temp_dir("gpu-resume");
  test::make_tiny_checkpoint(base / "model");
  write_sft_data(base / "data.jsonl", 16);
  const std::string cmd = test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " train " + (base / "model").string() +
                          " --data " + (base / "data.jsonl").string() +
                          " --micro-batch 2 --grad-accum 2 --cutoff 160 --max-steps 4 --save-every 2 --lr 1e-3 --freeze 1-1"
                          " --device cuda --out ";
  REQUIRE(test::run_command(cmd + (base / "whole").string()).exit_code == 0);
  const auto killed = test::run_command("SPPFT_TEST_KILL_AFTER_STEP=3 " + cmd + (base / "killed").string());
  REQUIRE(killed.exit_code != 0);
  const auto resumed = test::run_command(cmd + (base / "killed").string() + " --resume");
  REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.out);
  const auto lw = metric_values(base / "whole" / "metrics.jsonl", "loss"), lk = metric_values(base / "killed" / "metrics.jsonl", "loss");
  REQUIRE(lw.size() == 4);
  REQUIRE(lk.size() == 4);
  for (int i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(std::abs(lk[i] - lw[i]) <= 1e-6 * std::abs(lw[i]));
  }
  CHECK(read_file(base / "whole" / "model.safetensors") == read_file(base / "killed" / "model.safetensors"));
}

// A 70B-shaped config (no weights needed: the plan is checked before any weight is read) cannot
// train on one GPU: exit 2 with the plan's total and the driver's free bytes, nothing written.
TEST_CASE("a GPU run that cannot fit is refused before anything is read or written") {
  if (!have_gpu()) return;
  const fs::path base = test::temp_dir("gpu-fit");
  fs::create_directories(base / "model");
  atomic_write_text(base / "model" / "config.json",
                    R"({"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                        "num_attention_heads": 64, "num_key_value_heads": 8, "max_position_embeddings": 8192,
                        "vocab_size": 128256, "eos_token_id": 2, "bos_token_id": 1})");
  write_sft_data(base / "data.jsonl", 16);
  const auto r = test::run_command(test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " train " + (base / "model").string() +
                                   " --data " + (base / "data.jsonl").string() + " --out " + (base / "out").string() +
                                   " --micro-batch 8 --cutoff 4096 --device cuda");
  CAPTURE(r.out);
  CHECK(r.exit_code == 2);
  CHECK(r.out.find("error: train: the run needs ") != std::string::npos);
  CHECK(r.out.find(" are free; try --freeze") != std::string::npos);
  CHECK(r.out.find("--recompute (") != std::string::npos);  // with what the run would need recomputing
  CHECK_FALSE(fs::exists(base / "out"));
}

TEST_CASE("sppft train --device cuda --attention mma on heads of 256 says WMMA runs them") {
  if (!have_gpu()) return;
  const fs::path base = test::temp_dir("gpu-train-d256");
  test::make_tiny_checkpoint(base / "model", R"({"hidden_size": 512, "num_attention_heads": 2, "num_key_value_heads": 1,
                                                 "num_hidden_layers": 1})");
  write_sft_data(base / "data.jsonl", 4);
  const auto r = test::run_command(test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " train " + (base / "model").string() +
                                   " --data " + (base / "data.jsonl").string() + " --out " + (base / "out").string() +
                                   " --micro-batch 2 --cutoff 160 --max-steps 1 --device cuda --attention mma");
  CAPTURE(r.out);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("note: --attention mma takes head dims up to 128; head_dim 256 runs on the WMMA kernels") != std::string::npos);
}
