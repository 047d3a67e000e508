// The analysis commands with `--device cuda` (bf16 weights and activations on the GPU) against
// `--device cpu` (fp32) on the same tiny checkpoint: cossim's per-layer cosine means within
// 5e-3 and angle gaps within 0.5 degrees, locate's over-rejection counts and final range, and
// eval's refusal counts equal (greedy decoding of a random tiny model: the short responses
// agree). Without a GPU it prints "skipped: no CUDA device" and passes.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/json.h"
#include "gpu_test_util.h"

using namespace sppft;
using namespace sppft::test::gpu;

TEST_CASE("cossim, locate and eval with --device cuda follow the CPU") {
  if (!have_gpu()) return;
  const fs::path base = test::temp_dir("gpu-analysis");
  test::make_tiny_checkpoint(base / "model");
  const std::string bin = test::env_path("SPPFT_BIN", "build/bin/sppft").string(), model = (base / "model").string();
  const fs::path data = test::source_dir() / "data";
  auto both = [&](const std::string& args) {  // runs args on both devices, out dirs base/<name>-cpu and -cuda
    for (const char* dev : {"cpu", "cuda"}) {
      auto r = test::run_command(bin + args + "-" + dev + " --device " + dev + " 2>&1");
      CAPTURE(dev);
      REQUIRE_MESSAGE(r.exit_code == 0, r.out);
    }
  };

  // cossim on the first 30 prompts of each set (all 199 take 44 s on the emulated device).
  for (const char* set : {"normal.csv", "malicious.csv"}) test::write_head(data / set, base / set, 30);
  both(" cossim " + model + " --normal " + (base / "normal.csv").string() + " --malicious " +
       (base / "malicious.csv").string() + " --pairs 30 --out " + (base / "cossim").string());
  const Json cc = read_json_file(base / "cossim-cpu" / "cossim.json"), cg = read_json_file(base / "cossim-cuda" / "cossim.json");
  for (const char* key : {"nn_mean", "mm_mean", "nm_mean"}) {
    CAPTURE(key);
    REQUIRE(cc[key].size() == cg[key].size());
    for (std::size_t l = 0; l < cc[key].size(); ++l) CHECK(std::abs(cc[key][l].get<double>() - cg[key][l].get<double>()) < 5e-3);
  }
  for (std::size_t l = 0; l < cc["gap_deg"].size(); ++l)
    CHECK(std::abs(cc["gap_deg"][l].get<double>() - cg["gap_deg"][l].get<double>()) < 0.5);

  both(" locate " + model + " --over-rejection " + (data / "over_rejection.csv").string() +
       " --initial 1-2 --alpha 1.2 --window 2 --limit 12 --max-new-tokens 8 --out " + (base / "locate").string());
  const Json lc = read_json_file(base / "locate-cpu" / "locate.json"), lg = read_json_file(base / "locate-cuda" / "locate.json");
  CHECK(lc["baseline"] == lg["baseline"]);
  CHECK(lc["upper"] == lg["upper"]);
  CHECK(lc["lower"] == lg["lower"]);
  CHECK(lc["final_range"] == lg["final_range"]);

  both(" eval " + model + " --harmful " + (data / "advbench_harmful_behaviors.csv").string() + " --over-rejection " +
       (data / "over_rejection.csv").string() + " --limit 8 --max-new-tokens 8 --out " + (base / "eval").string());
  const Json ec = read_json_file(base / "eval-cpu" / "eval.json"), eg = read_json_file(base / "eval-cuda" / "eval.json");
  CHECK(ec["harmful"] == eg["harmful"]);
  CHECK(ec["over_rejection"] == eg["over_rejection"]);
}

TEST_CASE("experiment with --device cuda: every stage on the GPU, GPU memory planned to the byte in both arms") {
  if (!have_gpu()) return;
  const fs::path base = test::temp_dir("gpu-experiment");
  test::make_tiny_checkpoint(base / "model", R"({"num_hidden_layers": 3})");
  const fs::path data = test::source_dir() / "data";
  test::write_head(data / "over_rejection.csv", base / "o.csv", 4);
  test::write_head(data / "advbench_harmful_behaviors.csv", base / "h.csv", 5);
  Json ft = Json::array();
  for (int i = 0; i < 4; ++i) ft.push_back({{"instruction", "Name a colour number " + std::to_string(i)}, {"input", ""}, {"output", "Blue."}});
  atomic_write_text(base / "ft.json", ft.dump());
  const std::string cmd = test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " experiment " + (base / "model").string() +
                          " --device cuda --freeze 1-1 --data " + (base / "ft.json").string() + " --over-rejection " +
                          (base / "o.csv").string() + " --harmful " + (base / "h.csv").string() +
                          " --max-new-tokens 4 --max-steps 2 --micro-batch 2 --out " + (base / "exp").string() + " 2>&1";
  auto r = test::run_command(cmd);
  REQUIRE_MESSAGE(r.exit_code == 0, r.out);
  const Json sum = read_json_file(base / "exp/summary.json");
  CHECK(sum["device"] == "cuda");
  const Json& trained = sum["training"][0];
  CHECK(trained["prediction_exact"] == true);
  CHECK(trained["memory_bytes"]["master"]["full"].get<double>() > 0);  // bf16-mixed: fp32 masters
  CHECK(trained["memory_bytes"]["master"]["sppft"].get<double>() < trained["memory_bytes"]["master"]["full"].get<double>());
  for (const char* arm : {"ft-full", "ft-sppft"}) CHECK(read_json_file(base / "exp" / arm / "memory.json")["device"] == "cuda");
  r = test::run_command(cmd);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("5/5 eval-sppft: cached") != std::string::npos);
}
