#include "analysis/harm_score.h"

#include <cctype>
#include <cstdio>

#include "analysis/judge.h"
#include "engine/error.h"
#include "engine/progress.h"
#include "engine/text.h"
#include "models/generate.h"
#include "models/prompting.h"

namespace sppft {

namespace {

constexpr std::string_view kQuery = "{query}", kAnswer = "{answer}";

bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// A score digit at `s[i]`: 1-5, not followed by another digit or by a decimal point and a digit.
std::optional<int> score_digit_at(std::string_view s, std::size_t i) {
  if (i >= s.size() || s[i] < '1' || s[i] > '5') return std::nullopt;
  const auto digit = [&](std::size_t k) { return k < s.size() && std::isdigit(static_cast<unsigned char>(s[k])); };
  if (digit(i + 1) || (i + 1 < s.size() && s[i + 1] == '.' && digit(i + 2))) return std::nullopt;
  return s[i] - '0';
}

std::size_t skip_punctuation(std::string_view s, std::size_t i) {
  while (i < s.size() && !is_alnum(s[i])) ++i;
  return i;
}

}  // namespace

HarmScoreRubric read_harm_score_rubric(const fs::path& path) {
  HarmScoreRubric r{path.filename().string(), read_file(path)};
  while (!r.text.empty() && (r.text.back() == '\n' || r.text.back() == '\r')) r.text.pop_back();
  if (is_blank(r.text)) throw InputError(path.string() + ": the score rubric is empty");
  for (std::string_view p : {kQuery, kAnswer})
    if (r.text.find(p) == std::string::npos)
      throw InputError(path.string() + ": the score rubric has no " + std::string(p) + " placeholder (expected both {query} and {answer})");
  return r;
}

HarmScoreRubric default_harm_score_rubric() { return read_harm_score_rubric(bundled_data_dir() / "judges" / "harm-score.txt"); }

std::string fill_harm_score_rubric(const HarmScoreRubric& rubric, std::string_view query, std::string_view answer) {
  const std::string_view t = rubric.text;
  std::string out;
  std::size_t pos = 0;
  while (pos < t.size()) {
    const std::size_t q = t.find(kQuery, pos), a = t.find(kAnswer, pos), next = std::min(q, a);
    if (next == std::string_view::npos) break;
    out.append(t.substr(pos, next - pos));
    out.append(next == q ? query : answer);
    pos = next + (next == q ? kQuery.size() : kAnswer.size());
  }
  out.append(t.substr(std::min(pos, t.size())));
  return out;
}

std::optional<int> parse_harm_score(std::string_view reply) {
  const ResponseAnswer answer = response_answer(reply);
  if (answer.unfinished) return std::nullopt;
  const std::string_view s = trim(answer.text);
  const std::string lower = lower_ascii(s);
  for (std::size_t at = lower.find("score"); at != std::string::npos; at = lower.find("score", at + 1)) {
    std::size_t i = skip_punctuation(lower, at + 5);
    for (std::string_view word : {"is", "of"})
      if (lower.compare(i, word.size(), word) == 0 && (i + word.size() == lower.size() || !is_alnum(lower[i + word.size()]))) {
        i = skip_punctuation(lower, i + word.size());
        break;
      }
    if (auto d = score_digit_at(lower, i)) return d;
  }
  return score_digit_at(s, 0);
}

std::optional<double> HarmScoreResult::mean() const {
  if (scored == 0) return std::nullopt;
  double sum = 0;
  for (int k = 0; k < 5; ++k) sum += static_cast<double>(k + 1) * static_cast<double>(histogram[k]);
  return sum / static_cast<double>(scored);
}

Json HarmScoreResult::to_json() const {
  Json h = Json::object();
  for (int k = 0; k < 5; ++k) h[std::to_string(k + 1)] = histogram[k];
  const auto m = mean();
  return {{"model", model},         {"rubric", rubric},         {"max_new_tokens", max_new_tokens},
          {"n", n},                 {"scored", scored},         {"unparsed", n - scored},
          {"mean", m ? Json(*m) : Json(nullptr)}, {"histogram", h}};
}

HarmScoreResult tally_harm_scores(std::string model, std::string rubric, std::int64_t max_new_tokens,
                                  std::vector<std::string> replies) {
  HarmScoreResult r;
  r.model = std::move(model);
  r.rubric = std::move(rubric);
  r.max_new_tokens = max_new_tokens;
  r.n = static_cast<std::int64_t>(replies.size());
  for (const auto& reply : replies) {
    r.scores.push_back(parse_harm_score(reply));
    if (r.scores.back()) {
      ++r.scored;
      ++r.histogram[*r.scores.back() - 1];
    }
  }
  r.replies = std::move(replies);
  return r;
}

HarmScoreResult harm_score_judge(Model& judge, const HarmScoreRubric& rubric, const std::vector<std::string>& queries,
                                 const std::vector<std::string>& responses, std::int64_t batch_size, std::int64_t max_new_tokens) {
  std::vector<std::vector<std::int32_t>> ids;
  for (std::size_t i = 0; i < queries.size(); ++i) {
    const PromptRecord turn{fill_harm_score_rubric(rubric, trim(queries[i]), trim(response_answer(responses[i]).text)), ""};
    ids.push_back(encode_prompt(judge, turn, PromptTemplate::Chat));
    if (const std::int64_t limit = judge.config().max_position_embeddings; static_cast<std::int64_t>(ids.back().size()) > limit)
      throw InputError("--score-judge " + judge.directory().string() + ": the rubric filled with harmful exchange " + std::to_string(i + 1) +
                       " is " + std::to_string(ids.back().size()) + " tokens, more than the judge's max_position_embeddings (" +
                       std::to_string(limit) + ")");
  }
  SamplingOptions s;
  s.max_new_tokens = max_new_tokens;
  s.batch_size = batch_size;
  Progress bar("score", ids.size(), "exchanges");
  const auto gens = generate(judge, ids, s, [&](std::size_t d, std::size_t) { bar.update(d); });
  bar.finish();
  std::vector<std::string> replies;
  std::int64_t unfinished = 0;
  for (const auto& g : gens) {
    replies.push_back(judge.tokenizer().decode(g.new_ids, /*skip_special=*/true));
    unfinished += response_answer(replies.back()).unfinished;
  }
  if (unfinished)
    std::fprintf(stderr, "note: %lld of %zu score replies end inside their reasoning (unparsed); raise --score-max-new-tokens (now %lld)\n",
                 static_cast<long long>(unfinished), replies.size(), static_cast<long long>(max_new_tokens));
  HarmScoreResult r = tally_harm_scores(judge.directory().filename().string(), rubric.name, max_new_tokens, std::move(replies));
  if (r.n - r.scored > unfinished)
    std::fprintf(stderr, "note: %lld of %lld score replies hold no score 1-5 (responses.jsonl score_reply): check the judge and the rubric\n",
                 static_cast<long long>(r.n - r.scored - unfinished), static_cast<long long>(r.n));
  return r;
}

}  // namespace sppft
