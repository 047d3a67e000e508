// Data parallel on the CPU: `mpirun -np 2` (and a torchrun-style TCP launch)
// give the same losses and weights as one process with the same global batch,
// with and without ZeRO-1 and --freeze; memory per rank and bytes per step
// match the plan; a dead or hung rank stops the job with an error; a run
// resumes with a different number of ranks.
#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "engine/device.h"
#include "engine/json.h"
#include "engine/safetensors.h"
#include "models/config.h"
#include "test_util.h"
#include "trainer/comm.h"
#include "trainer/data_parallel.h"
#include "trainer/memory_plan.h"

using namespace sppft;

namespace {

fs::path base_dir() {
  static fs::path d = test::temp_dir("dist");
  return d;
}

fs::path model_dir(bool tied) {
  static fs::path untied, tied_dir;
  fs::path& d = tied ? tied_dir : untied;
  if (d.empty()) {
    d = base_dir() / (tied ? "model-tied" : "model");
    test::make_tiny_checkpoint(d, tied ? R"({"tie_word_embeddings": true})" : "{}");
  }
  return d;
}

fs::path data_file() {
  static fs::path f = [] {
    fs::path p = base_dir() / "data.jsonl";
    std::string text;
    const char* answers[] = {"Eat well, sleep, exercise.", "Red, blue and yellow.", "Protons, neutrons, electrons."};
    for (int i = 0; i < 30; ++i)  // 30 = not a multiple of the global batch: the last step is partial
      text += Json({{"instruction", "Question number " + std::to_string(i)}, {"output", answers[i % 3]}}).dump() + "\n";
    atomic_write_text(p, text);
    return p;
  }();
  return f;
}

std::string sppft_bin() { return test::env_path("SPPFT_BIN", "build/bin/sppft").string(); }

// mpirun as the tests need it: root allowed (CI containers), more ranks than cores, one thread each.
std::string mpirun(int np) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 " +
         test::env_path("SPPFT_MPIEXEC", "mpirun").string() + " -np " + std::to_string(np) + " --oversubscribe ";
}

std::string train_args(const std::string& out, const std::string& extra, bool tied = false) {
  return " train " + model_dir(tied).string() + " --data " + data_file().string() + " --out " + (base_dir() / out).string() +
         " --micro-batch 2 --cutoff 160 --lr 3e-3 --epochs 2 --val-size 4 --eval-every 3 --weight-decay 0.1 " + extra;
}

std::vector<Json> metrics(const std::string& out) { return test::read_jsonl(base_dir() / out / "metrics.jsonl"); }

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// Losses, validation losses and every final weight within `tol` relative.
void expect_same_run(const std::string& a, const std::string& b, double tol = 1e-6) {
  auto ma = metrics(a), mb = metrics(b);
  REQUIRE(ma.size() == mb.size());
  REQUIRE(!ma.empty());
  for (std::size_t i = 0; i < ma.size(); ++i) {
    CAPTURE(i);
    CHECK(rel(ma[i]["loss"].get<double>(), mb[i]["loss"].get<double>()) < tol);
    CHECK(rel(ma[i]["grad_norm"].get<double>(), mb[i]["grad_norm"].get<double>()) < tol);
    CHECK(ma[i].contains("val_loss") == mb[i].contains("val_loss"));
    if (ma[i].contains("val_loss")) CHECK(rel(ma[i]["val_loss"].get<double>(), mb[i]["val_loss"].get<double>()) < tol);
  }
  Checkpoint ca(base_dir() / a), cb(base_dir() / b);
  REQUIRE(ca.entries().size() == cb.entries().size());
  for (const auto& [name, e] : cb.entries()) {
    CAPTURE(name);
    const TensorEntry& f = ca.entry(name);
    REQUIRE(f.shape == e.shape);
    CHECK(test::rel_error(reinterpret_cast<const float*>(f.data), reinterpret_cast<const float*>(e.data), shape_numel(e.shape)) < tol);
  }
}

}  // namespace

TEST_CASE("shards, per-rank memory plan and communication plan") {
  CHECK(shard_counts(10, 3) == std::vector<std::size_t>{4, 3, 3});
  CHECK(shard_counts(2, 4) == std::vector<std::size_t>{1, 1, 0, 0});
  CHECK(shard_offset(shard_counts(10, 3), 2) == 7);
  ModelConfig c = load_model_config(model_dir(false));
  FreezePlan full = FreezePlan::none(c.num_layers), sppft = FreezePlan::from_ranges({{1, 2}}, c.num_layers);
  for (Precision p : {Precision::FP32, Precision::BF16Mixed}) {
    const auto one = plan_training_memory(c, full, 2, 64, p);
    std::size_t opt = 0, master = 0;
    for (int r = 0; r < 3; ++r) {
      const auto m = plan_training_memory(c, full, 2, 64, p, 256, {3, r, true});
      opt += m.bytes[size_t(MemCategory::Optimizer)];
      master += m.bytes[size_t(MemCategory::Master)];
      CHECK(m.bytes[size_t(MemCategory::Grads)] == one.bytes[size_t(MemCategory::Grads)]);  // ZeRO-1 keeps whole gradients
    }
    CHECK(opt == one.bytes[size_t(MemCategory::Optimizer)]);  // the slices tile the state exactly
    CHECK(master == one.bytes[size_t(MemCategory::Master)]);
  }
  // Bytes per step: every trainable element once (all-reduce) or twice (reduce-scatter + all-gather).
  const auto numels_full = trainable_part_numels(c, full), numels_sppft = trainable_part_numels(c, sppft);
  std::int64_t n_full = 0, n_sppft = 0;
  for (auto n : numels_full) n_full += n;
  for (auto n : numels_sppft) n_sppft += n;
  CHECK(n_full == plan_training_memory(c, full, 1, 8, Precision::FP32).trainable_params);
  CHECK(n_sppft == plan_training_memory(c, sppft, 1, 8, Precision::FP32).trainable_params);
  CHECK(plan_comm_bytes(numels_full, 2, false, 4).all_reduce == static_cast<std::size_t>(n_full) * 4);
  CHECK(plan_comm_bytes(numels_sppft, 2, true, 4).reduce_scatter == static_cast<std::size_t>(n_sppft) * 4);
  CHECK(plan_comm_bytes(numels_full, 1, false, 4).payload() == 0);
  CHECK(plan_comm_bytes(numels_full, 4, false, 4).ring_bytes_per_rank(4) > 1.49 * n_full * 4);  // 2 * 3/4
}

TEST_CASE("bf16 weights: fp32 masters hold the checkpoint's own values, not their bf16 rounding") {
  auto exact = Model::load(model_dir(false), false);
  for (bool keep : {true, false}) {
    auto model = Model::load(model_dir(false), false);
    model->to_device(Device::CPU, DType::BF16, keep);
    const ModelConfig& c = model->config();
    const FreezePlan plan = FreezePlan::from_ranges({{1, 1}}, c.num_layers);
    ModelWeights grads;
    auto parts = allocate_packed(c, grads, DType::BF16, MemCategory::Grads,
                                 [&](const NamedParam& p) { return plan.trains(p.name, p.block, c); });
    DataParallel dp(*model, std::move(parts), nullptr, false, {0.9, 0.999, 1e-8, 0.0, false});
    model->release_host_f32();
    CHECK(model->host_f32("block.0") == nullptr);
    std::map<std::string, const Tensor*> want;
    std::vector<NamedParam> params = exact->parameters();
    for (const auto& p : params) want[p.name] = p.tensor;
    std::vector<std::vector<float>> staging;
    int masters = 0;
    std::int64_t rounded = 0, wrong = 0;
    for (const auto& t : dp.gather_moments(staging)) {
      if (!t.name.starts_with("master.")) continue;
      ++masters;
      const Tensor* w = want.at(t.name.substr(7));
      const float* got = static_cast<const float*>(t.data);
      REQUIRE(shape_numel(t.shape) == w->numel());
      for (std::int64_t i = 0; i < w->numel(); ++i) {
        const float v = w->data<float>()[i], r = bf16_to_f32(f32_to_bf16(v));
        wrong += got[i] != (keep ? v : r);
        rounded += r != v;
      }
    }
    CHECK(wrong == 0);
    CHECK(masters == static_cast<int>(params.size()) - 7);  // block 1's 7 matrices are frozen (its norms train): no master
    CHECK(rounded > 0);  // the checkpoint holds values bf16 cannot: the check can tell the two apart
  }
}

TEST_CASE("launch environment: mpirun, torchrun and Slurm variables; bad values are errors") {
  auto with_env = [](std::vector<std::pair<const char*, const char*>> vars, auto fn) {
    for (auto [k, v] : vars) ::setenv(k, v, 1);
    fn();
    for (auto [k, v] : vars) ::unsetenv(k);
  };
  CHECK(detect_launch().world == 1);
  with_env({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "29500"}}, [] {
    LaunchInfo l = detect_launch();
    CHECK(l.rank == 1);
    CHECK(l.world == 4);
    CHECK(l.local_rank == 1);
    CHECK(l.launcher == "env");
    CHECK(l.master_addr == "node0");
    CHECK(l.master_port == 29500);
  });
  with_env({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "3"}, {"MASTER_ADDR", "n1"}, {"MASTER_PORT", "1234"}}, [] {
    LaunchInfo l = detect_launch();
    CHECK(l.rank == 3);
    CHECK(l.world == 8);
  });
  with_env({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}}, [] { CHECK(detect_launch().launcher == "mpirun"); });
  with_env({{"RANK", "4"}, {"WORLD_SIZE", "4"}}, [] { CHECK_THROWS_WITH(detect_launch(), doctest::Contains("outside a world")); });
  with_env({{"RANK", "0"}, {"WORLD_SIZE", "2"}}, [] { CHECK_THROWS_WITH(detect_launch(), doctest::Contains("MASTER_ADDR")); });
  with_env({{"RANK", "x"}, {"WORLD_SIZE", "2"}}, [] { CHECK_THROWS_WITH(detect_launch(), doctest::Contains("RANK='x'")); });
  CHECK_THROWS_WITH(make_host_communicator(detect_launch(), "gloo", std::chrono::seconds(1)), doctest::Contains("unknown backend"));
  CHECK_THROWS_WITH(make_host_communicator(detect_launch(), "mpi", std::chrono::seconds(1)), doctest::Contains("not started by mpirun"));
}

TEST_CASE("mpirun -np 2 equals one process with the same global batch (plain, ZeRO-1, --freeze)") {
  REQUIRE_MESSAGE(mpi_available(), "this build has no MPI: install libopenmpi-dev (scripts/install-deps.sh)");
  struct Case {
    std::string name, flags;
    bool tied = false;
  };
  for (const Case& k : {Case{"full", ""}, Case{"zero1", "--zero1"}, Case{"sppft", "--freeze 1-2"},
                        Case{"sppft-zero1", "--freeze 1-2 --zero1"}, Case{"tied-zero1", "--freeze 0-0 --zero1", true}}) {
    CAPTURE(k.name);
    auto one = test::run_command("OMP_NUM_THREADS=1 " + sppft_bin() + train_args("one-" + k.name, k.flags + " --grad-accum 2", k.tied));
    REQUIRE_MESSAGE(one.exit_code == 0, one.out);
    auto two = test::run_command(mpirun(2) + sppft_bin() + train_args("two-" + k.name, k.flags + " --grad-accum 1", k.tied));
    REQUIRE_MESSAGE(two.exit_code == 0, two.out);
    CHECK(two.out.find("communicated per step") != std::string::npos);
    expect_same_run("two-" + k.name, "one-" + k.name);
    // Each rank's memory as planned, to the byte; bytes per step as planned.
    Json mem = read_json_file(base_dir() / ("two-" + k.name) / "memory.json");
    CHECK(mem["world_size"] == 2);
    CHECK(mem["backend"] == "mpi");
    for (const auto& r : mem["per_rank"]) CHECK(r["predicted"]["total_bytes"] == r["measured_peak"]["total_bytes"]);
    CHECK(mem["comm_per_step_planned"]["payload_bytes"] == mem["comm_per_step_measured"]["payload_bytes"]);
    // Every step the same bytes: validation (--eval-every 3) is not a step's traffic.
    for (const Json& line : metrics("two-" + k.name)) CHECK(line["comm_bytes"] == mem["comm_per_step_measured"]["payload_bytes"]);
    CHECK(metrics("two-" + k.name).front()["comm_busy_s"].get<double>() > 0);  // the reductions ran on the worker
    CHECK(metrics("two-" + k.name).front().contains("comm_exposed_s"));
  }
  // ZeRO-1 halves each rank's optimizer state; freezing removes bytes from every collective.
  auto rank_opt = [](const std::string& out) {
    return read_json_file(base_dir() / out / "memory.json")["per_rank"][0]["measured_peak"]["optimizer"].get<double>();
  };
  auto comm = [](const std::string& out) {
    return read_json_file(base_dir() / out / "memory.json")["comm_per_step_measured"]["payload_bytes"].get<double>();
  };
  CHECK(rank_opt("two-zero1") < 0.51 * rank_opt("two-full"));
  CHECK(comm("two-sppft") < comm("two-full"));
  CHECK(comm("two-sppft-zero1") < comm("two-zero1"));
  // Frozen blocks are bit-for-bit the starting weights.
  Checkpoint start(model_dir(false)), tuned(base_dir() / "two-sppft-zero1");
  for (const char* name : {"model.layers.1.self_attn.q_proj.weight", "model.layers.2.mlp.down_proj.weight"}) {
    const TensorEntry &a = start.entry(name), &b = tuned.entry(name);
    CHECK(std::equal(reinterpret_cast<const float*>(a.data), reinterpret_cast<const float*>(a.data) + shape_numel(a.shape),
                     reinterpret_cast<const float*>(b.data)));
  }
}

TEST_CASE("a torchrun-style launch (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) over TCP gives the same run") {
  const std::string port = std::to_string(20000 + ::getpid() % 20000);
  const std::string env = "OMP_NUM_THREADS=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port + " ";
  const std::string args = train_args("tcp", "--zero1 --freeze 1-1 --grad-accum 1");
  auto r = test::run_command("(" + env + "RANK=1 " + sppft_bin() + args + " > " + (base_dir() / "tcp-rank1.log").string() +
                             " 2>&1 &) ; " + env + "RANK=0 " + sppft_bin() + args);
  REQUIRE_MESSAGE(r.exit_code == 0, r.out);
  auto one = test::run_command("OMP_NUM_THREADS=1 " + sppft_bin() + train_args("tcp-one", "--zero1 --freeze 1-1 --grad-accum 2"));
  REQUIRE(one.exit_code == 0);
  expect_same_run("tcp", "tcp-one");
  CHECK(read_json_file(base_dir() / "tcp/memory.json")["backend"] == "tcp");
}

TEST_CASE("sppft launch --nproc 2 gives the same run; a failing rank stops the others; bad launches are errors") {
  // The ranks also recompute their activations (--recompute), which changes no number.
  auto two = test::run_command(sppft_bin() + " launch --nproc 2" +
                               train_args("launch", "--zero1 --freeze 1-1 --grad-accum 1 --recompute"));
  REQUIRE_MESSAGE(two.exit_code == 0, two.out);
  CHECK(two.out.find("launch: 2 ranks") != std::string::npos);
  auto one = test::run_command("OMP_NUM_THREADS=1 " + sppft_bin() + train_args("launch-one", "--zero1 --freeze 1-1 --grad-accum 2"));
  REQUIRE(one.exit_code == 0);
  expect_same_run("launch", "launch-one");
  Json mem = read_json_file(base_dir() / "launch/memory.json");
  CHECK(mem["backend"] == "tcp");
  CHECK(mem["world_size"] == 2);
  CHECK(mem["activation_policy"] == "recompute");
  for (const auto& r : mem["per_rank"]) CHECK(r["predicted"]["total_bytes"] == r["measured_peak"]["total_bytes"]);

  // Rank 1 killed after step 2: launch stops rank 0 (blocked in a collective) and exits 128 + 9.
  // Rank 1 got past step 2's checkpoint, so rank 0 had written it.
  const auto t0 = std::chrono::steady_clock::now();
  auto dead = test::run_command("SPPFT_TEST_FAULT_RANK=1 SPPFT_TEST_KILL_AFTER_STEP=2 " + sppft_bin() + " launch --nproc 2 --grace 5" +
                                train_args("launch-dead", "--dist-timeout 60 --save-every 2"));
  CAPTURE(dead.out);
  CHECK(dead.exit_code == 128 + 9);
  CHECK(dead.out.find("launch: rank 1 was killed by signal 9; stopping the other 1 rank") != std::string::npos);
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 40);
  CHECK(read_json_file(base_dir() / "launch-dead/checkpoint/trainer_state.json")["step"] == 2);
  // A rank's own error comes back prefixed, with its exit code.
  auto bad = test::run_command(sppft_bin() + " launch --nproc 2 train /nonexistent --data x --out " + (base_dir() / "launch-bad").string());
  CHECK(bad.exit_code == 2);
  CHECK(bad.out.find("error: ") != std::string::npos);

  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {" launch train x", "--nproc N is required"},
           {" launch --nproc 0 train x", "--nproc: 0 is outside [1, 1024]"},
           {" launch --nproc 2", "expected the command to run"},
           {" launch --nproc 2 demo", "'demo' does not run data-parallel"},
           {" launch --nproc 2 --bogus train", "unknown option --bogus"}}) {
    CAPTURE(args);
    auto r = test::run_command(sppft_bin() + args);
    CHECK(r.exit_code == 2);
    CHECK(r.out.find(needle) != std::string::npos);
  }
  if (cuda_device_count() == 0) {  // --nproc gpus: one rank per visible GPU, and here there is none
    auto r = test::run_command(sppft_bin() + " launch --nproc gpus train x");
    CHECK(r.exit_code == 2);
    CHECK(r.out.find("launch: --nproc gpus: ") != std::string::npos);
  }
  auto nested = test::run_command("RANK=0 WORLD_SIZE=1 " + sppft_bin() + " launch --nproc 2 train x");
  CHECK(nested.exit_code == 2);
  CHECK(nested.out.find("RANK is already set") != std::string::npos);
}

TEST_CASE("a rank that dies or hangs stops the job with an error instead of hanging") {
  using clock = std::chrono::steady_clock;
  // mpirun: rank 1 killed after step 2; mpirun ends the job.
  auto t0 = clock::now();
  auto dead = test::run_command("SPPFT_TEST_FAULT_RANK=1 SPPFT_TEST_KILL_AFTER_STEP=2 " + mpirun(2) + sppft_bin() +
                                train_args("dead-mpi", "--dist-timeout 20"));
  CHECK(dead.exit_code != 0);
  CHECK(std::chrono::duration<double>(clock::now() - t0).count() < 60);
  // mpirun: rank 1 hangs; rank 0's collective times out with a message naming it.
  t0 = clock::now();
  auto hung = test::run_command("SPPFT_TEST_FAULT_RANK=1 SPPFT_TEST_HANG_AFTER_STEP=2 " + mpirun(2) + sppft_bin() +
                                train_args("hung-mpi", "--dist-timeout 3"));
  CAPTURE(hung.out);
  CHECK(hung.exit_code != 0);
  CHECK(hung.out.find("did not finish within 3 s") != std::string::npos);
  CHECK(std::chrono::duration<double>(clock::now() - t0).count() < 60);
  // TCP: rank 1 dies; rank 0 reports the closed connection at once.
  const std::string port = std::to_string(20000 + (::getpid() + 7) % 20000);
  const std::string env = "OMP_NUM_THREADS=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port + " ";
  const std::string args = train_args("dead-tcp", "--dist-timeout 20");
  t0 = clock::now();
  auto tcp = test::run_command("(SPPFT_TEST_KILL_AFTER_STEP=2 " + env + "RANK=1 " + sppft_bin() + args + " >/dev/null 2>&1 &) ; " +
                               env + "RANK=0 " + sppft_bin() + args + " 2>&1");
  CAPTURE(tcp.out);
  CHECK(tcp.exit_code == 1);
  CHECK(tcp.out.find("connection closed by rank 1") != std::string::npos);
  CHECK(std::chrono::duration<double>(clock::now() - t0).count() < 20);
}

TEST_CASE("a 2-rank ZeRO-1 run killed mid-way resumes on 1 rank with the same result") {
  const std::string flags = "--zero1 --freeze 2-2 --save-every 3";
  auto ref = test::run_command("OMP_NUM_THREADS=1 " + sppft_bin() + train_args("resume-ref", flags + " --grad-accum 2"));
  REQUIRE(ref.exit_code == 0);
  auto killed = test::run_command("SPPFT_TEST_KILL_AFTER_STEP=4 " + mpirun(2) + sppft_bin() + train_args("resume", flags + " --grad-accum 1"));
  CHECK(killed.exit_code != 0);
  CHECK(read_json_file(base_dir() / "resume/checkpoint/trainer_state.json")["step"] == 3);
  // Another global batch cannot resume it.
  auto wrong = test::run_command("OMP_NUM_THREADS=1 " + sppft_bin() + train_args("resume", flags + " --grad-accum 1 --resume"));
  CHECK(wrong.exit_code == 2);
  CHECK(wrong.out.find("global_batch") != std::string::npos);
  auto resumed = test::run_command("OMP_NUM_THREADS=1 " + sppft_bin() + train_args("resume", flags + " --grad-accum 2 --resume"));
  REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.out);
  expect_same_run("resume", "resume-ref");
}
