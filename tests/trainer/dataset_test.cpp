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
}  // namespace

TEST_CASE("Alpaca examples as alpaca-lora builds them") {
  auto m = tiny();
  const Tokenizer& tok = m->tokenizer();
  SftRecord r{{"Name a color", ""}, "Blue is a color.", {}};
  DataOptions o;
  o.cutoff = 256;
  SftExample ex = tokenize_example(*m, r, o, "t");
  const std::string prompt = alpaca_prompt(r.prompt);
  auto full = tok.encode(prompt + r.output);
  const auto prompt_len = tok.encode(prompt).size();
  REQUIRE(ex.ids.size() == full.size() + 1);
  CHECK(std::equal(full.begin(), full.end(), ex.ids.begin()));
  CHECK(ex.ids.back() == tok.eos_ids()[0]);  // EOS appended under the cutoff
  for (std::size_t i = 0; i < ex.ids.size(); ++i) CHECK(ex.labels[i] == (i < prompt_len ? kIgnoreLabel : ex.ids[i]));
  CHECK(ex.trained_tokens() == static_cast<std::int64_t>(ex.ids.size() - prompt_len));
  o.train_on_inputs = true;
  CHECK(tokenize_example(*m, r, o, "t").labels == tokenize_example(*m, r, o, "t").ids);
  o.cutoff = static_cast<std::int64_t>(prompt_len) + 2;  // truncated: no EOS, two response tokens
  SftExample cut = tokenize_example(*m, r, DataOptions{PromptTemplate::Alpaca, o.cutoff, false}, "t");
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
  SftExample ex = tokenize_example(*m, r, o, "t");
  std::vector<std::int32_t> trained;
  for (std::size_t i = 0; i < ex.ids.size(); ++i)
    if (ex.labels[i] != kIgnoreLabel) trained.push_back(ex.ids[i]);
  const std::string text = m->tokenizer().decode(trained);
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
  atomic_write_text(dir / "e.json", "[]");
  CHECK_THROWS_WITH_AS(read_sft_file(dir / "e.json"), doctest::Contains("no examples"), InputError);
}
