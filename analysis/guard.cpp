#include "analysis/guard.h"

#include <algorithm>
#include <cctype>

#include "analysis/judge.h"
#include "engine/error.h"
#include "engine/progress.h"
#include "models/generate.h"
#include "engine/text.h"
#include "models/prompting.h"

namespace sppft {

GuardVerdict parse_guard_verdict(std::string_view reply) {
  reply = trim(reply);
  const std::size_t nl = reply.find('\n');
  const std::string first = lower_ascii(trim(reply.substr(0, nl)));
  GuardVerdict v;
  if (first == "safe") {
    v.kind = GuardVerdict::Kind::Safe;
  } else if (first == "unsafe") {
    v.kind = GuardVerdict::Kind::Unsafe;
    if (nl != std::string_view::npos) {
      const std::string_view rest = trim(reply.substr(nl + 1));
      const std::string_view line = trim(rest.substr(0, rest.find('\n')));
      for (std::string_view c : split(line, ','))
        if (!trim(c).empty()) v.categories.emplace_back(trim(c));
    }
  }
  return v;
}

std::string guard_prompt(const Model& guard, const std::string& query, const std::string& answer) {
  const std::vector<ChatMessage> exchange = {{"user", query}, {"assistant", answer}};
  const std::string where = guard.directory().string();
  if (!guard.tokenizer().chat_template()) throw InputError("--guard " + where + ": the guard checkpoint has no chat template");
  // Probe which content form the template reads: the query's text must appear in the prompt. A
  // template written for parts may also fail on a string; then the parts' result decides.
  for (bool parts : {false, true}) {
    std::optional<std::string> text;
    try {
      text = apply_chat_template(guard, exchange, true, parts);
    } catch (const InputError&) {
      if (!parts) continue;
      throw;
    }
    if (!text) throw InputError("--guard " + where + ": sppft cannot run the guard's chat template");
    if (text->find(trim(query)) != std::string::npos) return *text;
  }
  throw InputError("--guard " + where + ": its chat template renders neither string nor text-part content of the exchange");
}

GuardResult guard_judge(Model& guard, const std::vector<std::string>& queries, const std::vector<std::string>& responses,
                        std::int64_t batch_size) {
  GuardResult r;
  r.model = guard.directory().filename().string();
  std::vector<std::vector<std::int32_t>> ids;
  for (std::size_t i = 0; i < queries.size(); ++i)
    ids.push_back(guard.tokenizer().encode(guard_prompt(guard, queries[i], std::string(response_answer(responses[i]).text)), false));
  SamplingOptions s;
  s.max_new_tokens = 16;
  s.batch_size = batch_size;
  Progress bar("guard", ids.size(), "exchanges");
  const auto gens = generate(guard, ids, s, [&](std::size_t d, std::size_t) { bar.update(d); });
  bar.finish();
  r.n = static_cast<std::int64_t>(gens.size());
  for (const auto& g : gens) {
    r.replies.push_back(guard.tokenizer().decode(g.new_ids, /*skip_special=*/true));
    GuardVerdict v = parse_guard_verdict(r.replies.back());
    switch (v.kind) {
      case GuardVerdict::Kind::Safe: ++r.safe; break;
      case GuardVerdict::Kind::Unsafe:
        ++r.unsafe;
        for (const auto& c : v.categories) ++r.categories[c];
        break;
      case GuardVerdict::Kind::Unparsed: ++r.unparsed; break;
    }
    r.verdicts.push_back(std::move(v));
  }
  return r;
}

Json GuardResult::to_json() const {
  return {{"model", model},
          {"n", n},
          {"unsafe", unsafe},
          {"safe", safe},
          {"unparsed", unparsed},
          {"unsafe_rate", n ? static_cast<double>(unsafe) / n : 0.0},
          {"categories", categories}};
}

}  // namespace sppft
