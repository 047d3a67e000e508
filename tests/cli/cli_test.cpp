// The CLI end to end on a small checkpoint it writes itself, and every bad
// input of the foundation: one `error: ...` line and exit code 2, no crash.
#include <doctest/doctest.h>

#include <fstream>

#include "engine/device.h"
#include "engine/json.h"
#include "engine/prompts.h"
#include "engine/safetensors.h"
#include "engine/tokenizer_train.h"
#include "models/model.h"
#include "test_util.h"

using namespace sppft;

namespace {

const fs::path& fixture() {
  static fs::path dir = [] {
    fs::path d = test::temp_dir("cli") / "model";
    test::make_tiny_checkpoint(d, R"({"num_hidden_layers": 2})");
    return d;
  }();
  return dir;
}

std::string sppft_bin() { return test::env_path("SPPFT_BIN", "build/bin/sppft").string(); }

test::CommandResult run_cli(const std::string& args) { return test::run_command(sppft_bin() + " " + args); }

// A copy of the fixture to break.
fs::path broken_copy(const std::string& name) {
  fs::path d = fixture().parent_path() / name;
  fs::remove_all(d);
  fs::copy(fixture(), d);
  return d;
}

void expect_input_error(const std::string& args, const std::string& needle) {
  CAPTURE(args);
  auto r = run_cli(args);
  CAPTURE(r.out);
  CHECK(r.exit_code == 2);
  CHECK(r.out.rfind("error: ", 0) == 0);
  CHECK(r.out.find(needle) != std::string::npos);
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
}

}  // namespace

TEST_CASE("info, generate, hidden on a small checkpoint") {
  const std::string dir = fixture().string();
  auto info = run_cli("info " + dir);
  CHECK(info.exit_code == 0);
  CHECK(info.out.find("parameters") != std::string::npos);
  auto info_json = run_cli("info " + dir + " --json");
  REQUIRE(info_json.exit_code == 0);
  Json ij = Json::parse(info_json.out);
  CHECK(ij["parameters_total"].get<std::int64_t>() == Model::load(dir, false)->config().total_parameters());
  // The tokenizer as the model loads it.
  const auto model = Model::load(dir);
  CHECK(ij["tokenizer"]["usable"] == true);
  CHECK(ij["tokenizer"]["kind"] == model->tokenizer().kind());
  CHECK(ij["tokenizer"]["vocab_size"] == model->tokenizer().vocab_size());
  CHECK(ij["tokenizer"]["bos"]["id"] == *model->tokenizer().bos_id());
  CHECK(ij["tokenizer"]["eos"][0]["id"] == model->tokenizer().eos_ids()[0]);
  CHECK(info.out.find("tokenizer      sentencepiece, " + std::to_string(model->tokenizer().vocab_size()) + " ids; BOS <s> (1), prepended; EOS </s> (2)") !=
        std::string::npos);
  // A tokenizer with more ids than the embedding has rows, and none at all: said, not fatal.
  const fs::path extra = broken_copy("extra-token");
  Json tcfg = read_json_file(extra / "tokenizer_config.json");
  const std::int32_t v = model->tokenizer().vocab_size();
  tcfg["added_tokens_decoder"][std::to_string(v)] = {{"content", "<extra>"}, {"special", true}};
  atomic_write_text(extra / "tokenizer_config.json", tcfg.dump());
  auto xi = run_cli("info " + extra.string());
  CHECK(xi.exit_code == 0);
  CHECK(xi.out.find("tokenizer      not usable: " + std::to_string(v + 1) + " ids, more than the " + std::to_string(v) +
                    " rows of the embedding") != std::string::npos);
  const fs::path none = broken_copy("no-tokenizer");
  fs::remove(none / "tokenizer.model");
  auto ni = run_cli("info " + none.string());
  CHECK(ni.exit_code == 0);
  CHECK(ni.out.find("tokenizer      not usable: ") != std::string::npos);

  auto gen = run_cli("generate " + dir + " --prompt 'Give three tips' --max-new-tokens 5 --json 2>/dev/null");
  REQUIRE(gen.exit_code == 0);
  Json g = Json::parse(gen.out.substr(0, gen.out.find('\n')));
  CHECK(g["prompt"] == "Give three tips");
  CHECK(g["token_ids"].size() <= 5);
  CHECK(g.contains("text"));

  auto sampled = run_cli("generate " + dir + " --prompts " + (test::source_dir() / "data/normal.csv").string() +
                       " --temperature 0.7 --top-p 0.9 --top-k 50 --seed 3 --max-new-tokens 4 --json 2>/dev/null");
  REQUIRE(sampled.exit_code == 0);
  CHECK(std::count(sampled.out.begin(), sampled.out.end(), '\n') == 100);

  const fs::path out = fixture().parent_path() / "h.safetensors";
  auto hid = run_cli("hidden " + dir + " --prompts " + (test::source_dir() / "data/malicious.csv").string() + " --out " + out.string());
  REQUIRE(hid.exit_code == 0);
  auto ck = Checkpoint::from_file(out);
  CHECK(ck.entry("hidden_states").shape == Shape{100, 3, 32});
  CHECK(ck.entry("final_normed").shape == Shape{100, 32});
  for (const char* cmd : {"info", "generate", "hidden", "demo", "launch", "eval", "rejudge"}) {
    auto h = run_cli(std::string(cmd) + " --help");
    CHECK(h.exit_code == 0);
    CHECK(h.out.find("usage: sppft") == 0);
  }
}

TEST_CASE("chat templates: info says which one --template chat uses; one sppft cannot parse falls back, one that raises is an error") {
  const fs::path d = broken_copy("chat");
  const std::string dir = d.string();
  CHECK(run_cli("info " + dir).out.find("chat template  none: --template chat uses the built-in format") != std::string::npos);

  atomic_write_text(d / "chat_template.jinja", "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}\n"
                                                 "{% if add_generation_prompt %}<assistant>{% endif %}\n");
  CHECK(run_cli("info " + dir).out.find("chat template  chat_template.jinja, 3 lines: --template chat renders it") != std::string::npos);
  Json ij = Json::parse(run_cli("info " + dir + " --json").out);
  CHECK(ij["chat_template"]["usable"] == true);
  auto gen = run_cli("generate " + dir + " --prompt hi --template chat --max-new-tokens 2 --json 2>&1");
  CHECK(gen.exit_code == 0);
  CHECK(gen.out.find("note") == std::string::npos);

  atomic_write_text(d / "chat_template.jinja", "{% include 'other.jinja' %}");
  auto info = run_cli("info " + dir);
  CHECK(info.out.find("not one sppft can run (chat_template.jinja: line 1: unsupported or unexpected tag 'include')") !=
        std::string::npos);
  auto fallback = run_cli("generate " + dir + " --prompt hi --template chat --max-new-tokens 2 --json 2>&1");
  CHECK(fallback.exit_code == 0);
  CHECK(fallback.out.find("sppft: note: " + dir + " chat template: line 1: unsupported or unexpected tag 'include'; using "
                          "the built-in chat format") != std::string::npos);

  atomic_write_text(d / "chat_template.jinja", "{{ raise_exception('Conversation roles must alternate') }}");
  expect_input_error("generate " + dir + " --prompt hi --template chat --max-new-tokens 2",
                     "chat template: the template raised an exception: Conversation roles must alternate");

  // --chat-template-kwargs reach the template (as apply_chat_template's kwargs), in generate and train.
  atomic_write_text(d / "chat_template.jinja",
                    "{% if not ready %}{{ raise_exception('ready is ' ~ ready) }}{% endif %}"
                    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}");
  expect_input_error("generate " + dir + " --prompt hi --template chat --max-new-tokens 2", "the template raised an exception: ready is ");
  CHECK(run_cli("generate " + dir + " --prompt hi --template chat --max-new-tokens 2 --chat-template-kwargs '{\"ready\": true}'")
            .exit_code == 0);
  const fs::path chat_data = d.parent_path() / "chat.jsonl";
  atomic_write_text(chat_data, R"({"messages": [{"role": "user", "content": "Name a color"}, {"role": "assistant", "content": "Blue."}]})"
                               "\n" R"({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]})" "\n");
  const std::string train = "train " + dir + " --data " + chat_data.string() + " --out " + (d.parent_path() / "ft").string() +
                            " --max-steps 1 --micro-batch 2 --cutoff 64";
  expect_input_error(train, "the template raised an exception: ready is ");
  auto trained = run_cli(train + " --chat-template-kwargs '{\"ready\": 1}' 2>&1");
  CHECK_MESSAGE(trained.exit_code == 0, trained.out);
  const std::string csv = (test::source_dir() / "data/normal.csv").string(), out = (d.parent_path() / "o").string();
  for (const std::string& cmd :
       {"generate " + dir + " --prompt hi", "hidden " + dir + " --prompts " + csv + " --out " + out,
        "cossim " + dir + " --normal " + csv + " --malicious " + csv + " --out " + out,
        "locate " + dir + " --over-rejection " + csv + " --out " + out, "eval " + dir + " --harmful " + csv + " --out " + out})
    expect_input_error(cmd + " --chat-template-kwargs '{}'", "--chat-template-kwargs: only with --template chat");
  expect_input_error("generate " + dir + " --prompt hi --template chat --chat-template-kwargs '[1]'",
                     "--chat-template-kwargs: expected a JSON object such as {\"enable_thinking\": false}");
  expect_input_error("generate " + dir + " --prompt hi --template chat --chat-template-kwargs '{oops'",
                     "--chat-template-kwargs: malformed JSON");
  expect_input_error("train " + dir + " --data x.jsonl --out o --chat-template-kwargs '{\"messages\": []}'",
                     "--chat-template-kwargs: 'messages' is set by sppft");

  fs::remove(d / "chat_template.jinja");
  Json tcfg = read_json_file(d / "tokenizer_config.json");
  tcfg["chat_template"] = 5;
  atomic_write_text(d / "tokenizer_config.json", tcfg.dump());
  expect_input_error("generate " + dir + " --prompt hi --max-new-tokens 2",
                     "tokenizer_config.json: field 'chat_template' must be a string or a list of {name, template}");
}

TEST_CASE("--freeze takes the located safety layers from a locate result") {
  const std::string dir = fixture().string();
  const fs::path an = fixture().parent_path() / "an";
  fs::create_directories(an);
  atomic_write_text(an / "locate.json", R"({"alpha": 1.2, "final_range": [1, 1]})");
  auto typed = run_cli("memory " + dir + " --freeze 1-1 --json");
  auto located = run_cli("memory " + dir + " --freeze " + an.string() + " --json 2>&1");
  REQUIRE(typed.exit_code == 0);
  REQUIRE(located.exit_code == 0);
  CHECK(located.out.find("sppft: note: --freeze 1-1: the located safety layers of " + (an / "locate.json").string()) == 0);
  CHECK(Json::parse(located.out.substr(located.out.find('\n') + 1)) == Json::parse(typed.out));
  CHECK(run_cli("memory " + dir + " --freeze " + (an / "locate.json").string() + " --json 2>/dev/null").out == typed.out);
  expect_input_error("memory " + dir + " --freeze " + (an / "nope.json").string(),
                     "nope.json: expected block ranges such as 6-12, or a locate.json (or its directory)");
  atomic_write_text(an / "bad.json", R"({"final_range": "1-1"})");
  expect_input_error("train " + dir + " --data x.jsonl --out o --freeze " + (an / "bad.json").string(),
                     "bad.json: field 'final_range' must be [first, last] block indices");
}

TEST_CASE("bad input: one error line, exit code 2") {
  const std::string dir = fixture().string();
  expect_input_error("info /nonexistent/model", "directory not found");
  expect_input_error("frobnicate", "unknown command");
  expect_input_error("generate " + dir + " --prompt hi --bogus 1", "unknown option --bogus");
  expect_input_error("hidden " + dir + " --prompts " + (test::source_dir() / "data/normal.csv").string(), "--out is required");
  expect_input_error("generate " + dir + " --prompt ''", "empty prompt");
  expect_input_error("generate " + dir + " --prompt hi --max-new-tokens -3", "outside");
  expect_input_error("generate " + dir + " --prompt hi --template fancy", "unknown template");
  expect_input_error("profile " + dir + " --attention mma", "--attention: chooses GPU kernels; it needs --device cuda");
  expect_input_error("train " + dir + " --data x.json --out /tmp/never --attention wmma", "it needs --device cuda");
  expect_input_error("profile " + dir + " --attention flash", "expected wmma, mma or cuda-cores, got 'flash'");
  std::string long_prompt(1200, 'x');
  for (std::size_t i = 1; i < long_prompt.size(); i += 2) long_prompt[i] = ' ';
  expect_input_error("generate " + dir + " --prompt '" + long_prompt + "'", "max_position_embeddings");

  fs::path d = broken_copy("no-config");
  fs::remove(d / "config.json");
  expect_input_error("info " + d.string(), "config.json: file not found");

  d = broken_copy("bad-type");
  Json cfg = read_json_file(d / "config.json");
  cfg["model_type"] = "bloom";
  atomic_write_text(d / "config.json", cfg.dump());
  expect_input_error("info " + d.string(), "model_type 'bloom' is not supported");

  d = broken_copy("bad-json");
  atomic_write_text(d / "config.json", "{\"model_type\": \"llama\",");
  expect_input_error("info " + d.string(), "malformed JSON");

  d = broken_copy("truncated");
  fs::resize_file(d / "model.safetensors", fs::file_size(d / "model.safetensors") - 100);
  expect_input_error("generate " + d.string() + " --prompt hi", "outside the data");
  fs::resize_file(d / "model.safetensors", 5);
  expect_input_error("info " + d.string(), "truncated");

  d = broken_copy("header-past-end");
  {
    std::fstream f(d / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    const char huge[8] = {0, 0, 0, 0, 1, 0, 0, 0};
    f.write(huge, 8);
  }
  expect_input_error("info " + d.string(), "past the end of the file");

  // Tensor missing / extra / wrong shape / wrong dtype: rewrite the weights.
  auto rewrite = [&](const std::string& name, const std::function<void(std::vector<TensorToWrite>&, std::vector<float>&)>& edit) {
    fs::path dd = broken_copy(name);
    auto ck = Checkpoint(fixture());
    std::vector<TensorToWrite> ts;
    for (auto& [n, e] : ck.entries()) ts.push_back({n, e.dtype, e.shape, e.data});
    std::vector<float> extra(32 * 32, 0.5f);
    edit(ts, extra);
    write_safetensors(dd / "model.safetensors", ts);
    return dd.string();
  };
  expect_input_error("info " + rewrite("missing", [](auto& ts, auto&) {
    ts.erase(std::find_if(ts.begin(), ts.end(), [](auto& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; }));
  }), "'model.layers.1.mlp.up_proj.weight' missing");
  expect_input_error("info " + rewrite("extra", [](auto& ts, auto& extra) {
    ts.push_back({"model.layers.0.self_attn.rotary_bias", DType::F32, {32, 32}, extra.data()});
  }), "unexpected tensor 'model.layers.0.self_attn.rotary_bias'");
  expect_input_error("info " + rewrite("shape", [](auto& ts, auto&) {
    for (auto& t : ts) if (t.name == "model.norm.weight") t.shape = {8, 4};
  }), "has shape [8, 4], expected [32]");
  expect_input_error("info " + rewrite("dtype", [](auto& ts, auto&) {
    for (auto& t : ts) if (t.name == "model.norm.weight") t.dtype = DType::I32;
  }), "dtype I32, expected F32, F16 or BF16");
  d = broken_copy("no-tokenizer");
  fs::remove(d / "tokenizer.model");
  expect_input_error("generate " + d.string() + " --prompt hi", "tokenizer");
}

TEST_CASE("demo: device and cached-stage checks come before any work") {
  if (cuda_device_count() == 0)  // with a GPU, --device cuda is valid (and the demo long)
    expect_input_error("demo --device cuda --out " + (fixture().parent_path() / "demo-gpu").string(),
                       built_with_cuda() ? "--device cuda: no CUDA device is visible" : "this build has no CUDA");
  expect_input_error("demo --device tpu", "--device: expected cpu or cuda, got 'tpu'");
  // An output directory made by another preset or device is refused, not mixed in.
  const fs::path out = fixture().parent_path() / "demo-other";
  fs::create_directories(out);
  atomic_write_text(out / "demo-settings.json", Json{{"preset", "gpu"}, {"device", "cuda"}}.dump());
  expect_input_error("demo --out " + out.string(), "holds a demo run with preset gpu on cuda, this one is preset small on cpu");
  CHECK(read_json_file(out / "demo-settings.json")["preset"] == "gpu");
}
