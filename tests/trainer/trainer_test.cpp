// The trainer: freezing that is real (no buffers, no updates, exact memory),
// determinism, SIGKILL + resume, and the bad inputs of issue 3.
#include <doctest/doctest.h>

#include <csignal>

#include "engine/error.h"
#include "engine/json.h"
#include "models/model.h"
#include "models/presets.h"
#include "test_util.h"
#include "trainer/trainer.h"

using namespace sppft;

namespace {

const fs::path& model_dir() {
  static fs::path d = [] {
    fs::path p = test::temp_dir("trainer") / "model";
    test::make_tiny_checkpoint(p);
    return p;
  }();
  return d;
}

fs::path data_file() {
  static fs::path f = [] {
    fs::path p = model_dir().parent_path() / "data.jsonl";
    std::string text;
    const char* answers[] = {"Eat well, sleep, exercise.", "Red, blue and yellow.", "Protons, neutrons, electrons."};
    for (int i = 0; i < 24; ++i) {
      Json j = {{"instruction", "Question number " + std::to_string(i)}, {"input", i % 3 ? "" : "some context"},
                {"output", answers[i % 3]}};
      text += j.dump() + "\n";
    }
    atomic_write_text(p, text);
    return p;
  }();
  return f;
}

TrainOptions options(const std::string& out) {
  TrainOptions o;
  o.model_dir = model_dir();
  o.data = data_file();
  o.out = model_dir().parent_path() / out;
  o.lr = 3e-3;
  o.micro_batch = 2;
  o.grad_accum = 2;
  o.cutoff = 160;
  o.max_steps = 4;
  o.val_size = 4;
  o.eval_every = 2;
  o.warmup = 1;
  o.quiet = true;
  return o;
}

std::string cli(const std::string& args) { return test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " " + args; }

std::vector<double> losses_of(const fs::path& metrics) {
  std::vector<double> out;
  for (const Json& row : test::read_jsonl(metrics)) out.push_back(row["loss"].get<double>());
  return out;
}

// After a run with --freeze 1-2 written to `after`: every tensor of blocks 1 and 2 outside their
// layernorms is bitwise unchanged from `before`, every other tensor changed. Returns how many
// were unchanged.
int unchanged_after_freezing_1_2(Model& before, const fs::path& after) {
  auto trained = Model::load(after, false);
  auto pb = before.parameters(), pa = trained->parameters();
  int unchanged = 0;
  for (std::size_t i = 0; i < pb.size(); ++i) {
    const bool same = std::equal(pb[i].tensor->data<float>(), pb[i].tensor->data<float>() + pb[i].tensor->numel(),
                                 pa[i].tensor->data<float>());
    const bool in_frozen = (pb[i].block == 1 || pb[i].block == 2) && pb[i].name.find("layernorm") == std::string::npos;
    CAPTURE(pb[i].name);
    CHECK(same == in_frozen);
    unchanged += same;
  }
  return unchanged;
}

}  // namespace

TEST_CASE("freeze ranges: parsing and errors") {
  auto r = parse_layer_ranges("6-12,20", 32, "--freeze");
  REQUIRE(r.size() == 2);
  CHECK(r[0].first == 6);
  CHECK(r[1].last == 20);
  CHECK_THROWS_WITH_AS(parse_layer_ranges("6-40", 32, "--freeze"), doctest::Contains("outside the model (blocks 0-31)"), InputError);
  CHECK_THROWS_WITH_AS(parse_layer_ranges("a-b", 32, "--freeze"), doctest::Contains("not a layer range"), InputError);
  CHECK_THROWS_WITH_AS(parse_layer_ranges("9-3", 32, "--freeze"), doctest::Contains("empty"), InputError);
  FreezePlan p = FreezePlan::from_ranges(r, 32);
  CHECK(p.lowest_backward_block(32) == 0);
  p.embeddings = true;
  CHECK(p.lowest_backward_block(32) == 0);  // block 0 still trains
  p.block_frozen.assign(32, false);
  for (int k = 0; k <= 12; ++k) p.block_frozen[k] = true;
  p.norms = true;
  CHECK(p.lowest_backward_block(32) == 13);  // nothing below block 13 trains: backward stops there
}

TEST_CASE("memory plan for the paper's models: a frozen block saves its grads, master and moments") {
  ModelConfig c = preset_config("llama-3-8b");
  CHECK(c.block_parameters() == 218112000);
  const FreezePlan full = FreezePlan::none(c.num_layers);
  const FreezePlan sppft = FreezePlan::from_ranges({{6, 12}}, c.num_layers);
  for (Precision p : {Precision::FP32, Precision::BF16Mixed}) {
    auto a = plan_training_memory(c, full, 4, 256, p), b = plan_training_memory(c, sppft, 4, 256, p);
    const std::size_t per_param = p == Precision::FP32 ? 4 + 8 : 2 + 4 + 8;  // grad (+ master) + moments
    const std::size_t frozen = 7 * (c.block_parameters() - 2 * c.hidden_size);  // the norms keep training
    CHECK(a.bytes[size_t(MemCategory::Weights)] == b.bytes[size_t(MemCategory::Weights)]);
    CHECK(a.bytes[size_t(MemCategory::Grads)] + a.bytes[size_t(MemCategory::Master)] + a.bytes[size_t(MemCategory::Optimizer)] -
              (b.bytes[size_t(MemCategory::Grads)] + b.bytes[size_t(MemCategory::Master)] + b.bytes[size_t(MemCategory::Optimizer)]) ==
          frozen * per_param);
    // Frozen blocks keep no linear-layer inputs: two [tokens, hidden] buffers each.
    const std::size_t act_bytes = p == Precision::FP32 ? 4 : 2;
    CHECK(a.bytes[size_t(MemCategory::Activations)] - b.bytes[size_t(MemCategory::Activations)] == 7 * 2 * 4 * 256 * 4096 * act_bytes);
  }
  // The CLI works for 8B shapes without allocating them.
  auto r = test::run_command(cli("memory --preset llama-3-8b --freeze 6-12 --precision bf16-mixed --json"));
  REQUIRE(r.exit_code == 0);
  CHECK(Json::parse(r.out)["total_bytes"].get<std::size_t>() ==
        plan_training_memory(c, sppft, 4, 256, Precision::BF16Mixed).total());
  // --device cuda plans what `train --device cuda` runs: bf16-mixed, whose workspace adds the
  // CUDA backend's buffers to the graph's: the 32 MiB cuBLASLt workspace, the 8-byte error
  // flag and the reserved scratch - here RMSNorm's weight-gradient partials, 512 blocks x 4096
  // fp32 columns (1024 tokens), the largest request of the step.
  auto g = test::run_command(cli("memory --preset llama-3-8b --freeze 6-12 --device cuda --json"));
  REQUIRE(g.exit_code == 0);
  CHECK(Json::parse(g.out)["total_bytes"] == Json::parse(r.out)["total_bytes"]);
  std::size_t graph_ws = static_cast<std::size_t>(c.head_dim / 2) * 4;  // RoPE frequencies
  for (const auto& spec : TrainingGraph::buffer_specs(c, block_modes(sppft, c.num_layers), 4 * 256, 256, DType::BF16))
    if (spec.category == MemCategory::Workspace) graph_ws += spec.bytes();
  CHECK(plan_training_memory(c, sppft, 4, 256, Precision::BF16Mixed).bytes[size_t(MemCategory::Workspace)] - graph_ws ==
        (std::size_t{32} << 20) + 8 + std::size_t{512} * 4096 * 4);
  auto bad = test::run_command(cli("memory --preset llama-3-8b --device cuda --precision fp32"));
  CHECK(bad.exit_code == 2);
  CHECK(bad.out.find("--precision fp32 contradicts --device cuda") != std::string::npos);

  // --recompute: per block only its input (4 x 256 tokens x 4096, bf16) plus one shared set
  // (a trainable block's: both norm outputs, q, k, v, attn, x_mid, gate, up, the fp32 lse),
  // plus final_x and final_normed. Everything else is as without it.
  auto rc = test::run_command(cli("memory --preset llama-3-8b --freeze 6-12 --device cuda --recompute --json"));
  REQUIRE(rc.exit_code == 0);
  const Json jr = Json::parse(rc.out);
  CHECK(jr["activation_policy"] == "recompute");
  const std::size_t n = 4 * 256, h = 4096, shared = n * (3 * h + 2 * 4096 + 2 * 1024 + 2 * 14336) * 2 + n * 32 * 4;
  CHECK(jr["activations"].get<std::size_t>() == 32 * n * h * 2 + shared + 2 * n * h * 2);
  CHECK(jr["total_bytes"].get<std::size_t>() == Json::parse(g.out)["total_bytes"].get<std::size_t>() -
                                                    Json::parse(g.out)["activations"].get<std::size_t>() +
                                                    jr["activations"].get<std::size_t>());
  auto table = test::run_command(cli("memory --preset llama-3-8b --freeze 6-12 --device cuda"));
  CHECK(table.out.find("with --recompute: activations") != std::string::npos);

  // --fit: the largest micro-batch whose plan fits, checked at its boundary, per activation policy.
  const std::size_t budget = 141'000'000'000;  // an H200
  std::int64_t fits[2] = {0, 0};
  for (ActivationPolicy policy : {ActivationPolicy::save(), ActivationPolicy::recompute()}) {
    const std::int64_t mb = max_micro_batch(c, sppft, 1024, Precision::BF16Mixed, budget, {}, policy);
    REQUIRE(mb >= 1);
    CHECK(plan_training_memory(c, sppft, mb, 1024, Precision::BF16Mixed, 256, {}, policy).total() <= budget);
    CHECK(plan_training_memory(c, sppft, mb + 1, 1024, Precision::BF16Mixed, 256, {}, policy).total() > budget);
    fits[policy == ActivationPolicy::recompute()] = mb;
  }
  CHECK(fits[1] > fits[0]);
  CHECK(max_micro_batch(c, full, 1024, Precision::BF16Mixed, 1'000'000'000) == 0);  // the weights alone are 16 GB
  auto fit = test::run_command(cli("memory --preset llama-3-8b --freeze 6-12 --device cuda --seq 1024 --fit 141GB --json"));
  REQUIRE(fit.exit_code == 0);
  const Json jf = Json::parse(fit.out)["fit"];
  CHECK(jf["budget_bytes"] == budget);
  CHECK(jf["max_micro_batch"]["save"] == fits[0]);
  CHECK(jf["max_micro_batch"]["recompute"] == fits[1]);
  CHECK(jf["full_fine_tuning_max_micro_batch"]["save"] ==
        max_micro_batch(c, full, 1024, Precision::BF16Mixed, budget, {}, ActivationPolicy::save()));
  auto fit_text = test::run_command(cli("memory --preset llama-3-8b --freeze 6-12 --device cuda --seq 1024 --fit 141GB"));
  CHECK(fit_text.out.find("fits in 131.32 GiB at 1024 tokens per sequence: micro-batch up to " + std::to_string(fits[0]) +
                          " (" + std::to_string(fits[1]) + " with --recompute); full fine-tuning: ") != std::string::npos);
  auto none_fit = test::run_command(cli("memory --preset llama-3-8b --device cuda --seq 4096 --fit 80GiB"));
  CHECK(none_fit.out.find("fits in 80.00 GiB at 4096 tokens per sequence: no micro-batch (one sequence needs ") !=
        std::string::npos);
  // With --micro-batch too: the fewest recomputed blocks that fit it, checked at its boundary.
  const std::int64_t k = min_recompute_blocks(c, sppft, 8, 4096, Precision::BF16Mixed, budget);
  REQUIRE(k > 0);
  CHECK(plan_training_memory(c, sppft, 8, 4096, Precision::BF16Mixed, 256, {}, ActivationPolicy::recompute(k)).total() <=
        budget);
  CHECK(plan_training_memory(c, sppft, 8, 4096, Precision::BF16Mixed, 256, {}, ActivationPolicy::recompute(k - 1)).total() >
        budget);
  CHECK(min_recompute_blocks(c, sppft, 1, 1024, Precision::BF16Mixed, budget) == 0);  // fits as it is
  CHECK(min_recompute_blocks(c, sppft, 64, 4096, Precision::BF16Mixed, budget) == -1);
  auto blocks = test::run_command(cli("memory --preset llama-3-8b --freeze 6-12 --device cuda --seq 4096 --micro-batch 8 "
                                      "--fit 141GB"));
  CHECK(blocks.out.find("micro-batch 8 fits with --recompute-blocks " + std::to_string(k) + "\n") != std::string::npos);
  for (const char* size : {"80XB", "GiB", "-5GB", "0"}) {
    CAPTURE(size);
    auto e = test::run_command(cli(std::string("memory --preset llama-3-8b --fit ") + size));
    CHECK(e.exit_code == 2);
    CHECK(e.out.find("--fit: expected a size such as 80GiB") != std::string::npos);
  }
}

TEST_CASE("SPPFT: frozen weights never change, get no buffers, and memory matches the plan to the byte") {
  auto o = options("sppft");
  o.freeze = "1-2";
  TrainResult r = train(o);
  CHECK(r.steps.size() == 4);
  CHECK(r.train_examples == 20);
  CHECK(r.val_examples == 4);
  for (std::size_t i = 0; i < kMemCategories; ++i) CHECK(r.predicted.bytes[i] == r.measured.bytes[i]);
  auto before = Model::load(model_dir(), false);
  CHECK(unchanged_after_freezing_1_2(*before, o.out) == 2 * 7);
  auto full = train(options("full"));
  CHECK(full.predicted.bytes[size_t(MemCategory::Grads)] - r.predicted.bytes[size_t(MemCategory::Grads)] ==
        size_t(2 * (before->config().block_parameters() - before->config().block_norm_parameters()) * 4));
  CHECK(r.measured.total() < full.measured.total());
  Json mem = read_json_file(o.out / "memory.json");
  CHECK(mem["predicted"]["total_bytes"] == mem["measured_peak"]["total_bytes"]);
  // The output is a complete checkpoint with the tokenizer.
  CHECK(fs::exists(o.out / "tokenizer.model"));
  CHECK(Model::load(o.out)->tokenizer().vocab_size() == before->config().vocab_size);
}

TEST_CASE("the validation split holds out whole conversations, also when each turn is an example") {
  const fs::path dir = test::temp_dir("trainer-per-turn") / "model";
  test::make_tiny_checkpoint(dir);
  // Earlier assistant turns render shortened (as Qwen3's drop their reasoning): one example per turn.
  test::write_turn_rewriting_chat_template(dir);
  std::string text;
  for (int i = 0; i < 6; ++i)
    text += Json{{"conversations", {{{"from", "human"}, {"value", "Question " + std::to_string(i)}},
                                    {{"from", "gpt"}, {"value", "Answer one."}},
                                    {{"from", "human"}, {"value", "And then?"}},
                                    {{"from", "gpt"}, {"value", "Answer two."}}}}}
                .dump() +
            "\n";
  atomic_write_text(dir.parent_path() / "chat.jsonl", text);
  auto o = options("per-turn");
  o.model_dir = dir;
  o.data = dir.parent_path() / "chat.jsonl";
  o.out = dir.parent_path() / "out";
  o.tmpl = PromptTemplate::Chat;
  o.val_size = 2;
  o.max_steps = 1;
  const TrainResult r = train(o);
  CHECK(r.val_examples == 4);
  CHECK(r.train_examples == 8);
  o.val_size = 6;
  CHECK_THROWS_WITH_AS(train(o), doctest::Contains("--val-size 6: must leave training records (data has 6"), InputError);
}

TEST_CASE("Gemma-2, Qwen3 and Gemma-3 SPPFT: frozen weights stay, memory to the byte, recompute bitwise") {
  struct Family {
    const char* name;
    const char* config;
    int frozen_per_block;  // tensors a frozen block keeps unchanged (its layernorms train)
  };
  for (const Family& fam :
       {Family{"gemma2", R"({"model_type": "gemma2", "head_dim": 8, "query_pre_attn_scalar": 12,
           "attn_logit_softcapping": 3.0, "final_logit_softcapping": 6.0, "sliding_window": 5})", 7},
        Family{"qwen3", R"({"model_type": "qwen3", "head_dim": 12})", 9},  // + q_norm, k_norm (attention)
        Family{"gemma3", R"({"model_type": "gemma3_text", "head_dim": 8, "query_pre_attn_scalar": 12, "sliding_window": 5,
           "sliding_window_pattern": 2, "rope_local_base_freq": 100.0, "rope_theta": 10000.0})", 9}}) {
    CAPTURE(fam.name);
    const fs::path dir = test::temp_dir(std::string("trainer-") + fam.name) / "model";
    test::make_tiny_checkpoint(dir, fam.config);
    auto o = options(std::string(fam.name) + "-sppft");
    o.model_dir = dir;
    o.out = dir.parent_path() / "sppft";
    o.freeze = "1-2";
    TrainResult r = train(o);
    REQUIRE(r.steps.size() == 4);
    for (std::size_t i = 0; i < kMemCategories; ++i) CHECK(r.predicted.bytes[i] == r.measured.bytes[i]);
    CHECK(r.steps.back().loss < r.steps.front().loss);
    CHECK(unchanged_after_freezing_1_2(*Model::load(dir, false), o.out) == 2 * fam.frozen_per_block);
    // Recomputing the activations gives the same run bit for bit.
    auto rc = o;
    rc.out = dir.parent_path() / "sppft-recompute";
    rc.activations = ActivationPolicy::recompute();
    TrainResult rr = train(rc);
    REQUIRE(rr.steps.size() == r.steps.size());
    for (std::size_t i = 0; i < r.steps.size(); ++i) {
      CHECK(rr.steps[i].loss == r.steps[i].loss);
      CHECK(rr.steps[i].grad_norm == r.steps[i].grad_norm);
    }
    for (std::size_t i = 0; i < kMemCategories; ++i) CHECK(rr.predicted.bytes[i] == rr.measured.bytes[i]);
  }
}

TEST_CASE("the same seed gives bitwise identical losses; --freeze-norms freezes the norms too") {
  auto a = train(options("det-a")), b = train(options("det-b"));
  for (std::size_t i = 0; i < a.steps.size(); ++i) {
    CHECK(a.steps[i].loss == b.steps[i].loss);
    CHECK(a.steps[i].grad_norm == b.steps[i].grad_norm);
  }
  CHECK(a.steps.back().val_loss >= 0);
  // Recomputed activations: the same numbers bit for bit, fewer activation bytes, still exactly as planned.
  auto ro = options("det-recompute");
  ro.activations = ActivationPolicy::recompute();
  auto rc = train(ro);
  REQUIRE(rc.steps.size() == a.steps.size());
  for (std::size_t i = 0; i < a.steps.size(); ++i) {
    CHECK(rc.steps[i].loss == a.steps[i].loss);
    CHECK(rc.steps[i].grad_norm == a.steps[i].grad_norm);
    CHECK(rc.steps[i].val_loss == a.steps[i].val_loss);
  }
  for (std::size_t i = 0; i < kMemCategories; ++i) CHECK(rc.predicted.bytes[i] == rc.measured.bytes[i]);
  CHECK(rc.measured.bytes[size_t(MemCategory::Activations)] < a.measured.bytes[size_t(MemCategory::Activations)]);
  CHECK(read_json_file(ro.out / "memory.json")["activation_policy"] == "recompute");
  CHECK(read_file(ro.out / "model.safetensors") == read_file(options("det-a").out / "model.safetensors"));
  auto o = options("norms");
  o.freeze = "0-3";
  o.freeze_norms = true;
  o.freeze_embeddings = true;
  auto r = train(o);
  CHECK(r.predicted.trainable_params == 32 + 400 * 32);  // final norm + lm_head only
  CHECK(r.predicted.bytes[size_t(MemCategory::Activations)] == 2 * 160 * 32 * 4 * 2);  // final_x, final_normed only
}

TEST_CASE("a run killed with SIGKILL and resumed continues with exactly the same losses") {
  const fs::path base = model_dir().parent_path();
  const std::string common = model_dir().string() + " --data " + data_file().string() +
                             " --max-steps 6 --save-every 2 --micro-batch 2 --grad-accum 2 --cutoff 160 --lr 3e-3 --freeze 1-1";
  auto a = test::run_command(cli("train " + common + " --out " + (base / "resume-a").string() + " 2>/dev/null"));
  REQUIRE(a.exit_code == 0);
  auto killed = test::run_command("SPPFT_TEST_KILL_AFTER_STEP=5 " + cli("train " + common + " --out " + (base / "resume-b").string() + " 2>/dev/null"));
  CHECK(killed.exit_code != 0);
  CHECK(Json::parse(read_file(base / "resume-b/checkpoint/trainer_state.json"))["step"] == 4);
  CHECK(losses_of(base / "resume-b/metrics.jsonl").size() == 5);
  auto resumed = test::run_command(cli("train " + common + " --out " + (base / "resume-b").string() + " --resume 2>/dev/null"));
  REQUIRE(resumed.exit_code == 0);
  auto la = losses_of(base / "resume-a/metrics.jsonl"), lb = losses_of(base / "resume-b/metrics.jsonl");
  REQUIRE(la.size() == 6);
  REQUIRE(lb.size() == 6);
  for (int i = 0; i < 6; ++i) CHECK(la[i] == lb[i]);  // bitwise
  CHECK(read_file(base / "resume-a/model.safetensors") == read_file(base / "resume-b/model.safetensors"));
}

TEST_CASE("bad training input: one error line naming the problem, exit 2; NaN loss exits 1") {
  const fs::path base = model_dir().parent_path();
  auto expect = [&](const std::string& args, const std::string& needle, int code = 2) {
    CAPTURE(args);
    auto r = test::run_command(cli("train " + args));
    CAPTURE(r.out);
    CHECK(r.exit_code == code);
    CHECK(r.out.find("error: ") != std::string::npos);
    CHECK(r.out.find(needle) != std::string::npos);
  };
  const std::string m = model_dir().string();
  atomic_write_text(base / "missing.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\"}\n");
  expect(m + " --data " + (base / "missing.jsonl").string() + " --out " + (base / "x").string(), "line 2: missing field 'output'");
  atomic_write_text(base / "types.json", "[{\"instruction\": \"a\", \"output\": 5}]");
  expect(m + " --data " + (base / "types.json").string() + " --out " + (base / "x").string(), "item 0: field 'output' has the wrong type");
  atomic_write_text(base / "empty.json", "[{\"instruction\": \"  \", \"output\": \"b\"}]");
  expect(m + " --data " + (base / "empty.json").string() + " --out " + (base / "x").string(), "field 'instruction' is empty");
  expect(m + " --data " + data_file().string() + " --out " + (base / "x").string() + " --freeze 2-9", "outside the model");
  atomic_write_text(base / "afile", "x");
  expect(m + " --data " + data_file().string() + " --out " + (base / "afile").string(), "exists and is a file");
  // Resuming from a checkpoint of another model.
  fs::path other = base / "other-model";
  test::make_tiny_checkpoint(other, R"({"intermediate_size": 48})");
  expect(other.string() + " --data " + data_file().string() + " --out " + (base / "resume-a").string() +
             " --max-steps 6 --save-every 2 --micro-batch 2 --grad-accum 2 --cutoff 160 --lr 3e-3 --freeze 1-1 --resume",
         "checkpoint of another model");
  // A diverging run stops with exit 1 and keeps its last good checkpoint.
  expect(m + " --data " + data_file().string() + " --out " + (base / "nan").string() +
             " --lr 1e9 --clip 0 --max-steps 40 --save-every 1 --micro-batch 2 --cutoff 160 2>&1",
         "the last good checkpoint", 1);
  CHECK(fs::exists(base / "nan/checkpoint/model.safetensors"));
}
