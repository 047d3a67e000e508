// Checkpoints carrying the Hub chat templates of their families (tests/parity/make_chat_fixtures.py
// over the parity cases): `--template chat` prompts give transformers' apply_chat_template ids, and
// chat training data gives the same ids with the assistant turns' tokens as labels.
#include <doctest/doctest.h>

#include "engine/error.h"
#include "engine/json.h"
#include "models/model.h"
#include "models/prompting.h"
#include "test_util.h"
#include "trainer/dataset.h"

using namespace sppft;

namespace {
std::vector<std::int32_t> ids_of(const Json& j) { return j.get<std::vector<std::int32_t>>(); }
}  // namespace

TEST_CASE("the checkpoint's chat template: prompt ids and training labels as transformers gives them") {
  const fs::path root = test::env_path("SPPFT_PARITY_DIR") / "chat";
  REQUIRE_MESSAGE(fs::is_directory(root), "fixtures missing: run tests/parity/make_chat_fixtures.py $SPPFT_PARITY_DIR (ctest does)");
  int prompts = 0, conversations = 0, per_turn = 0, fallbacks = 0, errors = 0, cases = 0, kwargs_cases = 0;
  for (const auto& entry : fs::directory_iterator(root)) {
    const fs::path dir = entry.path();
    const Json expected = read_json_file(dir / "expected.json");
    CAPTURE(dir.filename().string());
    auto model = Model::load(dir);
    ++cases;
    // Extra template variables (--chat-template-kwargs) where the entry carries them.
    auto use_kwargs = [&](const Json& entry) {
      model->set_chat_template_kwargs(entry.contains("kwargs") ? nlohmann::ordered_json::parse(entry["kwargs"].dump())
                                                               : nlohmann::ordered_json::object());
      kwargs_cases += entry.contains("kwargs");
    };
    for (const Json& p : expected["prompts"]) {
      use_kwargs(p);
      const PromptRecord r{p["instruction"].get<std::string>(), p["input"].get<std::string>()};
      CHECK(encode_prompt(*model, r, PromptTemplate::Chat) == ids_of(p["ids"]));
      ++prompts;
    }
    for (const Json& c : expected["conversations"]) {
      use_kwargs(c);
      SftRecord rec;
      for (const Json& m : c["messages"])
        rec.messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>(), m.value("reasoning_content", "")});
      DataOptions opts;
      opts.tmpl = PromptTemplate::Chat;
      opts.cutoff = 1 << 20;
      if (c.contains("error")) {
        CHECK_THROWS_WITH_AS(tokenize_record(*model, rec, opts, "x"), doctest::Contains("the template raised an exception"),
                             InputError);
        ++errors;
        continue;
      }
      const std::vector<SftExample> got = tokenize_record(*model, rec, opts, "x");
      if (c.contains("builtin")) {  // built-in format: trains on something, never throws
        REQUIRE(got.size() == 1);
        CHECK(got[0].trained_tokens() > 0);
        ++fallbacks;
        continue;
      }
      const std::vector<Json> want = c["prefix_chain"].get<bool>() ? std::vector<Json>{c} : c["per_turn"].get<std::vector<Json>>();
      REQUIRE(got.size() == want.size());
      for (std::size_t k = 0; k < got.size(); ++k) {
        CHECK(got[k].ids == ids_of(want[k]["ids"]));
        CHECK(got[k].labels == ids_of(want[k]["labels"]));
      }
      ++(c["prefix_chain"].get<bool>() ? conversations : per_turn);
    }
  }
  MESSAGE(cases << " checkpoints: " << prompts << " prompts, " << conversations << " conversations and " << per_turn
                << " split turn by turn equal to transformers, " << errors << " raised as the template does, " << fallbacks
                << " on the built-in format; " << kwargs_cases << " of them with extra template variables");
  CHECK(cases >= 11);
  CHECK(conversations >= 56);
  CHECK(per_turn >= 5);      // Qwen3's multi-turn conversations, with and without enable_thinking
  CHECK(kwargs_cases >= 16);  // Qwen3's enable_thinking, Llama-3.1's date_string
}
