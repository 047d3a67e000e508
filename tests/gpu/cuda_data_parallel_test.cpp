// `sppft train --device cuda` on two GPUs (`sppft launch --nproc 2`: two processes, TCP hands
// NCCL its unique id) against one GPU with the same global batch (micro-batch 2 x 2 ranks =
// micro-batch 2 x 2 accumulation steps), plain all-reduce and ZeRO-1, with a frozen block: losses and gradient norms within bf16 precision,
// the frozen block identical, each rank's GPU bytes equal to its plan in every category, the
// bytes of every collective as planned, and the ZeRO-1 ranks holding half the optimizer state.
// NCCL's collectives run on their own stream: this is the test that they wait for the kernels
// that write their buffers (trainer/comm_nccl.cpp). Needs two GPUs: on one, or none, it prints
// why it skipped and passes. The emulated-device build (tests/emudev.cmake) gives it two.
// A second case kills a two-GPU ZeRO-1 run and resumes it on two GPUs and on one.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/json.h"
#include "engine/safetensors.h"
#include "gpu_test_util.h"

using namespace sppft;
using namespace sppft::test::gpu;

namespace {

std::vector<Json> metrics(const fs::path& run) { return test::read_jsonl(run / "metrics.jsonl"); }

bool have_two_gpus() {
  if (!have_gpu()) return false;
  if (cuda_device_count() >= 2) return true;
  std::printf("skipped: needs 2 CUDA devices, this machine has %d\n", cuda_device_count());
  return false;
}

const std::string& sppft_bin() {
  static const std::string bin = test::env_path("SPPFT_BIN", "build/bin/sppft").string();
  return bin;
}

// `sppft launch --nproc 2 train ...` (tools/sppft/cmd_launch.cpp: RANK, LOCAL_RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT per process; rank r takes GPU r).
test::CommandResult launch_two_ranks(const std::string& args, const std::string& env = "") {
  return test::run_command(env + " " + sppft_bin() + " launch --nproc 2 --grace 5" + args);
}
void run_two_ranks(const std::string& args) {
  const auto r = launch_two_ranks(args);
  REQUIRE_MESSAGE(r.exit_code == 0, r.out);
}

// A tiny checkpoint and 12 examples in `base`; returns the train arguments up to --out.
std::string setup(const fs::path& base, int max_steps) {
  test::make_tiny_checkpoint(base / "model");
  write_sft_data(base / "data.jsonl", 12);
  return " train " + (base / "model").string() + " --data " + (base / "data.jsonl").string() +
         " --micro-batch 2 --cutoff 160 --max-steps " + std::to_string(max_steps) + " --lr 3e-3 --freeze 1-1 --device cuda --out ";
}

}  // namespace

TEST_CASE("two GPUs (NCCL) train like one GPU with the same global batch: plain and ZeRO-1, with a frozen block") {
  if (!have_two_gpus()) return;
  const fs::path base = test::temp_dir("gpu-dp");
  const std::string bin = sppft_bin(), args = setup(base, 3);

  auto one = test::run_command("OMP_NUM_THREADS=1 " + bin + args + (base / "one").string() + " --grad-accum 2");
  REQUIRE_MESSAGE(one.exit_code == 0, one.out);
  run_two_ranks(args + (base / "two").string());
  run_two_ranks(args + (base / "two-zero1").string() + " --zero1");

  const auto m1 = metrics(base / "one");
  REQUIRE(m1.size() == 3);
  for (const char* run : {"two", "two-zero1"}) {
    CAPTURE(run);
    const auto m2 = metrics(base / run);
    REQUIRE(m2.size() == 3);
    for (int i = 0; i < 3; ++i) {
      CAPTURE(i);
      // bf16 gradients summed over ranks (NCCL) vs accumulated over micro-batches: a few bf16 ulps.
      CHECK(std::abs(m2[i]["loss"].get<double>() - m1[i]["loss"].get<double>()) <= 1e-2 * m1[i]["loss"].get<double>());
      CHECK(std::abs(m2[i]["grad_norm"].get<double>() - m1[i]["grad_norm"].get<double>()) <=
            2e-2 * m1[i]["grad_norm"].get<double>());
    }
    // Trained weights follow; the frozen block is the same bf16 values in both.
    Checkpoint c1(base / "one"), c2(base / run);
    for (const char* name : {"model.layers.0.mlp.down_proj.weight", "model.layers.2.self_attn.q_proj.weight"}) {
      CAPTURE(name);
      const TensorEntry &a = c1.entry(name), &b = c2.entry(name);
      std::vector<float> fa(shape_numel(a.shape)), fb(fa.size());
      convert_to_f32(a.data, a.dtype, fa.data(), fa.size());
      convert_to_f32(b.data, b.dtype, fb.data(), fb.size());
      CHECK(test::rel_error(fb.data(), fa.data(), fa.size()) < 2e-2);
    }
    const TensorEntry &fa = c1.entry("model.layers.1.mlp.down_proj.weight"), &fb = c2.entry("model.layers.1.mlp.down_proj.weight");
    CHECK(std::equal(fa.data, fa.data + fa.nbytes, fb.data));

    Json mem = read_json_file(base / run / "memory.json");
    CAPTURE(mem.dump(2));
    CHECK(mem["backend"] == "nccl");
    CHECK(mem["world_size"] == 2);
    for (const auto& r : mem["per_rank"])
      for (const char* cat : {"weights", "grads", "master", "optimizer", "activations", "workspace", "total_bytes"}) {
        CAPTURE(cat);
        CHECK(r["predicted"][cat] == r["measured_peak"][cat]);
      }
    CHECK(mem["comm_per_step_planned"]["payload_bytes"] == mem["comm_per_step_measured"]["payload_bytes"]);
    CHECK(metrics(base / run).front()["comm_bytes"] == mem["comm_per_step_measured"]["payload_bytes"]);
  }
  // ZeRO-1: each rank holds half the fp32 masters and moments.
  auto rank0 = [&](const char* run, const char* cat) {
    return read_json_file(base / run / "memory.json")["per_rank"][0]["measured_peak"][cat].get<double>();
  };
  CHECK(rank0("two-zero1", "optimizer") < 0.51 * rank0("two", "optimizer"));
  CHECK(rank0("two-zero1", "master") < 0.51 * rank0("two", "master"));
}

// ZeRO-1 checkpoints gather each rank's slice of the fp32 masters and moments from the GPUs: a
// two-GPU run killed after step 2 resumes from its step-2 checkpoint on two GPUs bit for bit like
// the uninterrupted run, and on one GPU (the same global batch) within bf16 precision.
TEST_CASE("a two-GPU ZeRO-1 run killed after step 2 resumes on two GPUs bit for bit, and on one GPU") {
  if (!have_two_gpus()) return;
  const fs::path base = test::temp_dir("gpu-dp-resume");
  const std::string bin = sppft_bin(), args = setup(base, 4), flags = " --zero1 --save-every 2";
  run_two_ranks(args + (base / "whole").string() + flags);
  const auto killed = launch_two_ranks(args + (base / "killed").string() + flags, "SPPFT_TEST_KILL_AFTER_STEP=2");
  CHECK(killed.exit_code == 128 + 9);
  REQUIRE(read_json_file(base / "killed/checkpoint/trainer_state.json")["step"] == 2);
  fs::copy(base / "killed", base / "killed-one", fs::copy_options::recursive);
  run_two_ranks(args + (base / "killed").string() + flags + " --resume");
  auto one = test::run_command("OMP_NUM_THREADS=1 " + bin + args + (base / "killed-one").string() + flags +
                               " --grad-accum 2 --resume");
  REQUIRE_MESSAGE(one.exit_code == 0, one.out);

  const auto whole = metrics(base / "whole"), two = metrics(base / "killed"), single = metrics(base / "killed-one");
  REQUIRE(whole.size() == 4);
  REQUIRE(two.size() == 4);
  REQUIRE(single.size() == 4);
  for (int i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(two[i]["loss"] == whole[i]["loss"]);
    CHECK(two[i]["grad_norm"] == whole[i]["grad_norm"]);
    CHECK(std::abs(single[i]["loss"].get<double>() - whole[i]["loss"].get<double>()) <= 1e-2 * whole[i]["loss"].get<double>());
  }
  CHECK(read_file(base / "killed/model.safetensors") == read_file(base / "whole/model.safetensors"));
}
