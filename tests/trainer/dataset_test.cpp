// SFT data: Alpaca and chat records, label masks, cutoff, EOS, and bad rows.
#include <doctest/doctest.h>

#include "engine/error.h"
#include "engine/json.h"
#include "models/model.h"
#include "models/prompting.h"
#include "test_util.h"
#include "trainer/dataset.h"

using namespace sppft;

namespace {
std::unique_ptr<Model> tiny() {
  static fs::path d = [] {
    fs::path p = test::temp_dir("dataset") / "m";
    test::make_tiny_checkpoint(p);
    return p;
  }();
  return Model::load(d);
}

// The one example a record gives.
SftExample one(const Model& m, const SftRecord& r, const DataOptions& o) {
  std::vector<SftExample> all = tokenize_record(m, r, o, "t");
  REQUIRE(all.size() == 1);
  return all[0];
}

std::string trained_text(const Model& m, const SftExample& ex) {
  std::vector<std::int32_t> trained;
  for (std::size_t i = 0; i < ex.ids.size(); ++i)
    if (ex.labels[i] != kIgnoreLabel) trained.push_back(ex.ids[i]);
  return m.tokenizer().decode(trained);
}
}  // namespace

TEST_CASE("Alpaca examples as alpaca-lora builds them") {
  auto m = tiny();
  const Tokenizer& tok = m->tokenizer();
  SftRecord r{{"Name a color", ""}, "Blue is a color.", {}};
  DataOptions o;
  o.cutoff = 256;
  SftExample ex = one(*m, r, o);
  const std::string prompt = alpaca_prompt(r.prompt);
  auto full = tok.encode(prompt + r.output);
  const auto prompt_len = tok.encode(prompt).size();
  REQUIRE(ex.ids.size() == full.size() + 1);
  CHECK(std::equal(full.begin(), full.end(), ex.ids.begin()));
  CHECK(ex.ids.back() == tok.eos_ids()[0]);  // EOS appended under the cutoff
  for (std::size_t i = 0; i < ex.ids.size(); ++i) CHECK(ex.labels[i] == (i < prompt_len ? kIgnoreLabel : ex.ids[i]));
  CHECK(ex.trained_tokens() == static_cast<std::int64_t>(ex.ids.size() - prompt_len));
  o.train_on_inputs = true;
  CHECK(one(*m, r, o).labels == one(*m, r, o).ids);
  o.cutoff = static_cast<std::int64_t>(prompt_len) + 2;  // truncated: no EOS, two response tokens
  SftExample cut = one(*m, r, DataOptions{PromptTemplate::Alpaca, o.cutoff, false});
  CHECK(cut.ids.size() == prompt_len + 2);
  CHECK(cut.trained_tokens() == 2);
  CHECK(cut.ids.back() != tok.eos_ids()[0]);
}

TEST_CASE("chat records: loss on the assistant turns only") {
  auto m = tiny();
  SftRecord r;
  r.messages = {{"system", "Be brief."}, {"user", "Name a color"}, {"assistant", "Blue."}, {"user", "Another"}, {"assistant", "Red."}};
  DataOptions o;
  o.tmpl = PromptTemplate::Chat;
  const std::string text = trained_text(*m, one(*m, r, o));
  CHECK(text.find("Blue") != std::string::npos);
  CHECK(text.find("Red") != std::string::npos);
  CHECK(text.find("color") == std::string::npos);  // user text is not trained on
  CHECK(text.find("brief") == std::string::npos);
}

TEST_CASE("bad SFT files name the line and field") {
  auto dir = test::temp_dir("sftbad");
  atomic_write_text(dir / "a.jsonl", "{\"instruction\": \"x\", \"output\": \"y\"}\nnot json\n");
  CHECK_THROWS_WITH_AS(read_sft_file(dir / "a.jsonl"), doctest::Contains("line 2: malformed JSON"), InputError);
  atomic_write_text(dir / "b.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n");
  CHECK_THROWS_WITH_AS(read_sft_file(dir / "b.jsonl"), doctest::Contains("no assistant message"), InputError);
  atomic_write_text(dir / "c.jsonl", "{\"messages\": [{\"role\": \"robot\", \"content\": \"hi\"}]}\n");
  CHECK_THROWS_WITH_AS(read_sft_file(dir / "c.jsonl"), doctest::Contains("role 'robot'"), InputError);
  atomic_write_text(dir / "d.json", "{\"instruction\": \"x\"}");
  CHECK_THROWS_WITH_AS(read_sft_file(dir / "d.json"), doctest::Contains("expected a JSON list"), InputError);
  atomic_write_text(dir / "f.csv", "instruction,output\nx,y\n");
  CHECK_THROWS_WITH_AS(read_sft_file(dir / "f.csv"), doctest::Contains("(training data is a .json list or .jsonl records)"), InputError);
  atomic_write_text(dir / "e.json", "[]");
  CHECK_THROWS_WITH_AS(read_sft_file(dir / "e.json"), doctest::Contains("no examples"), InputError);
}

TEST_CASE("ShareGPT conversations are the same records as messages") {
  auto m = tiny();
  auto dir = test::temp_dir("sharegpt");
  atomic_write_text(dir / "m.jsonl",
                    R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color"}, )"
                    R"({"role": "assistant", "content": "Blue."}]})"
                    "\n");
  atomic_write_text(dir / "s.json",
                    R"([{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Name a color"}, )"
                    R"({"from": "gpt", "value": "Blue."}]}])");
  const auto a = read_sft_file(dir / "m.jsonl"), b = read_sft_file(dir / "s.json");
  REQUIRE(b.size() == 1);
  REQUIRE(b[0].messages.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(b[0].messages[i].role == a[0].messages[i].role);
    CHECK(b[0].messages[i].content == a[0].messages[i].content);
  }
  DataOptions o;
  o.tmpl = PromptTemplate::Chat;
  CHECK(one(*m, b[0], o).labels == one(*m, a[0], o).labels);
  atomic_write_text(dir / "bad.jsonl", R"({"conversations": [{"from": "bot", "value": "hi"}]})");
  CHECK_THROWS_WITH_AS(read_sft_file(dir / "bad.jsonl"),
                       doctest::Contains("line 1: conversations[0]: from 'bot' (expected system, human or gpt)"), InputError);
  atomic_write_text(dir / "both.jsonl", R"({"conversations": [], "messages": []})");
  CHECK_THROWS_WITH_AS(read_sft_file(dir / "both.jsonl"), doctest::Contains("more than one of 'messages', 'conversations'"), InputError);
  atomic_write_text(dir / "novalue.jsonl", R"({"conversations": [{"from": "gpt"}]})");
  CHECK_THROWS_WITH_AS(read_sft_file(dir / "novalue.jsonl"), doctest::Contains("conversations[0]: missing field 'value'"), InputError);
}

TEST_CASE("a template that rewrites earlier assistant turns gives one example per turn") {
  // Like Qwen3's (which drops earlier turns' think blocks): an assistant turn renders in full only
  // as the last message, so the whole conversation has no span holding the first answer.
  const fs::path d = test::temp_dir("dataset_per_turn") / "m";
  test::make_tiny_checkpoint(d);
  test::write_turn_rewriting_chat_template(d);
  auto m = Model::load(d);
  SftRecord r;
  r.messages = {{"user", "Name a color"}, {"assistant", "Blue."}, {"user", "Another"}, {"assistant", "Red."}};
  DataOptions o;
  o.tmpl = PromptTemplate::Chat;
  const std::vector<SftExample> all = tokenize_record(*m, r, o, "t");
  REQUIRE(all.size() == 2);
  const Tokenizer& tok = m->tokenizer();
  CHECK(all[0].ids == tok.encode("<user>Name a color</user><assistant>Blue.</assistant>", false));
  CHECK(all[1].ids == tok.encode("<user>Name a color</user><a>5</a><user>Another</user><assistant>Red.</assistant>", false));
  CHECK(trained_text(*m, all[0]) == "Blue.</assistant>");
  CHECK(trained_text(*m, all[1]) == "Red.</assistant>");
  // Every token trained: the whole conversation as the template renders it is the one example,
  // so no token is trained twice (the first question, the earlier answer).
  o.train_on_inputs = true;
  const std::vector<SftExample> inputs_too = tokenize_record(*m, r, o, "t");
  REQUIRE(inputs_too.size() == 1);
  CHECK(inputs_too[0].ids == tok.encode("<user>Name a color</user><a>5</a><user>Another</user><assistant>Red.</assistant>", false));
  CHECK(inputs_too[0].labels == inputs_too[0].ids);
  // One assistant turn renders in full: a single example, as for any template.
  r.messages.resize(2);
  o.train_on_inputs = false;
  CHECK(trained_text(*m, one(*m, r, o)) == "Blue.</assistant>");
}

TEST_CASE("prompt-completion records: strings as Alpaca ones, message lists with the loss on the completion only") {
  auto m = tiny();
  auto dir = test::temp_dir("prompt_completion");
  atomic_write_text(dir / "p.jsonl",
                    R"({"prompt": "Name a color", "completion": "Blue is a color."})"
                    "\n"
                    R"({"prompt": [{"role": "user", "content": "Say one"}, {"role": "assistant", "content": "One."}, )"
                    R"({"role": "user", "content": "Say two"}], "completion": [{"role": "assistant", "content": "Two."}]})"
                    "\n");
  const auto recs = read_sft_file(dir / "p.jsonl");
  REQUIRE(recs.size() == 2);
  CHECK(recs[0].messages.empty());
  CHECK(recs[0].prompt.instruction == "Name a color");
  CHECK(recs[0].output == "Blue is a color.");
  DataOptions o;
  SftRecord alpaca{{"Name a color", ""}, "Blue is a color.", {}};
  CHECK(one(*m, recs[0], o).labels == one(*m, alpaca, o).labels);
  // The prompt's assistant turn is context: only the completion is trained, with the built-in
  // format and with a template (one that gives each trained turn its own example too).
  REQUIRE(recs[1].messages.size() == 4);
  CHECK(recs[1].first_trained_message == 3);
  o.tmpl = PromptTemplate::Chat;
  const std::string builtin = trained_text(*m, one(*m, recs[1], o));
  CHECK(builtin.find("Two.") != std::string::npos);
  CHECK(builtin.find("One.") == std::string::npos);
  const fs::path d = test::temp_dir("prompt_completion_template") / "m";
  test::make_tiny_checkpoint(d);
  test::write_turn_rewriting_chat_template(d);
  auto mt = Model::load(d);
  CHECK(trained_text(*mt, one(*mt, recs[1], o)) == "Two.</assistant>");
  SftRecord all = recs[1];
  all.first_trained_message = 0;
  CHECK(tokenize_record(*mt, all, o, "t").size() == 2);  // the same conversation as messages: both turns

  auto bad = [&](const std::string& line, const std::string& needle) {
    atomic_write_text(dir / "bad.jsonl", line + "\n");
    CHECK_THROWS_WITH_AS(read_sft_file(dir / "bad.jsonl"), doctest::Contains(needle.c_str()), InputError);
  };
  bad(R"({"prompt": "x", "completion": [{"role": "assistant", "content": "y"}]})",
      "line 1: fields 'prompt' and 'completion' must both be strings or both lists of messages");
  bad(R"({"prompt": [{"role": "user", "content": "x"}], "completion": [{"role": "user", "content": "y"}]})",
      "no assistant message in 'completion' to train on");
  bad(R"({"prompt": "x", "completion": " "})", "field 'completion' is empty");
  bad(R"({"prompt": "x", "completion": "y", "messages": []})", "more than one of 'messages', 'conversations', 'prompt' + 'completion'");
  bad(R"({"prompt": [], "completion": [{"role": "assistant", "content": "y"}]})", "field 'prompt' must be a non-empty list");
}

TEST_CASE("reasoning given apart from the content reaches the template, and the built-in format as a think block") {
  auto m = tiny();
  auto dir = test::temp_dir("reasoning");
  atomic_write_text(dir / "r.jsonl",
                    R"({"messages": [{"role": "user", "content": "Name a color"}, )"
                    R"({"role": "assistant", "content": "Blue.", "reasoning_content": "Pick a primary one."}]})"
                    "\n");
  const auto recs = read_sft_file(dir / "r.jsonl");
  REQUIRE(recs[0].messages.size() == 2);
  CHECK(recs[0].messages[1].reasoning_content == "Pick a primary one.");
  DataOptions o;
  o.tmpl = PromptTemplate::Chat;
  const std::string trained = trained_text(*m, one(*m, recs[0], o));  // no template: the built-in format
  CHECK(trained.find("think>\nPick a primary one.\n</think>\n\nBlue.") != std::string::npos);
  atomic_write_text(dir / "bad.jsonl",
                    R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "reasoning_content": 3}]})");
  CHECK_THROWS_WITH_AS(read_sft_file(dir / "bad.jsonl"), doctest::Contains("messages[1]: field 'reasoning_content'"), InputError);
}
