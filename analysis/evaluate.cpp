#include "analysis/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "analysis/rouge.h"
#include "engine/error.h"
#include "engine/progress.h"
#include "models/generate.h"
#include "models/prompting.h"
#include "trainer/dataset.h"

namespace sppft {

namespace {

template <typename T>
void apply_limit(std::vector<T>& v, std::int64_t limit) {
  if (limit > 0 && static_cast<std::int64_t>(v.size()) > limit) v.resize(limit);
}

std::vector<std::string> generate_texts(Model& model, const std::vector<PromptRecord>& prompts, PromptTemplate t,
                                        std::int64_t max_new, std::int64_t batch, const std::string& label) {
  std::vector<std::vector<std::int32_t>> ids;
  for (const auto& p : prompts) ids.push_back(encode_prompt(model, p, t));
  SamplingOptions s;
  s.max_new_tokens = max_new;
  s.batch_size = batch;
  Progress bar(label, ids.size(), "prompts");
  auto gens = generate(model, ids, s, [&](std::size_t d, std::size_t) { bar.update(d); });
  bar.finish();
  std::vector<std::string> out;
  for (const auto& g : gens) out.push_back(model.tokenizer().decode(g.new_ids, true));
  return out;
}

}  // namespace

RateResult count_refusals(Model& model, const std::vector<PromptRecord>& prompts, const Judge& judge, PromptTemplate t,
                          std::int64_t max_new_tokens, std::int64_t batch_size, const std::string& label,
                          const EvalSink& sink) {
  auto texts = generate_texts(model, prompts, t, max_new_tokens, batch_size, label);
  RateResult r;
  r.n = static_cast<std::int64_t>(texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const bool refused = judge.refused(texts[i]);
    r.refused += refused;
    r.unfinished += response_answer(texts[i]).unfinished;
    if (sink) sink(label, prompts[i].instruction, texts[i], refused);
  }
  if (const std::string note = unfinished_reasoning_note(label, r.unfinished, r.n, max_new_tokens); !note.empty())
    std::fprintf(stderr, "%s\n", note.c_str());
  return r;
}

std::vector<ChoiceQuestion> read_choice_csv(const fs::path& path) {
  auto rows = parse_csv(read_file(path), path.string());
  std::vector<ChoiceQuestion> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    auto& r = rows[i];
    if (r.size() == 1 && r[0].empty()) continue;
    const std::string where = path.string() + ": row " + std::to_string(i + 1);
    if (r.size() < 6) throw InputError(where + ": expected 6 columns (question, A, B, C, D, answer), got " + std::to_string(r.size()));
    std::string ans = r[5];
    ans.erase(std::remove_if(ans.begin(), ans.end(), [](unsigned char c) { return std::isspace(c); }), ans.end());
    if (i == 0 && (ans == "answer" || ans == "Answer")) continue;  // header
    if (ans.size() != 1 || ans[0] < 'A' || ans[0] > 'D') throw InputError(where + ": answer '" + r[5] + "' (expected A, B, C or D)");
    ChoiceQuestion q{r[0], {r[1], r[2], r[3], r[4]}, ans[0] - 'A'};
    out.push_back(std::move(q));
  }
  if (out.empty()) throw InputError(path.string() + ": no questions");
  return out;
}

int answer_by_likelihood(Model& model, const ChoiceQuestion& q, PromptTemplate t) {
  PromptRecord r{q.question + "\nA. " + q.choices[0] + "\nB. " + q.choices[1] + "\nC. " + q.choices[2] + "\nD. " +
                     q.choices[3] + "\nAnswer with the letter of the correct choice.",
                 ""};
  const std::string prompt = render_prompt(model, r, t);
  const Tokenizer& tok = model.tokenizer();
  const bool special = t != PromptTemplate::Chat;
  const auto prefix = tok.encode(prompt, special);
  int best = 0;
  double best_ll = -INFINITY;
  for (int c = 0; c < 4; ++c) {
    const std::string letter(1, static_cast<char>('A' + c));
    auto full = tok.encode(prompt + letter, special);
    // The continuation's tokens: what joint tokenization adds after the prompt's own tokens.
    if (full.size() <= prefix.size() || !std::equal(prefix.begin(), prefix.end(), full.begin())) {
      full = prefix;
      auto cont = tok.encode(letter, false);
      full.insert(full.end(), cont.begin(), cont.end());
    }
    KVCache cache = model.make_cache(1, static_cast<std::int64_t>(full.size()));
    Tensor logits = model.forward({{full}, {0}}, cache, true);
    const std::int64_t v = model.config().vocab_size;
    double ll = 0;
    for (std::size_t pos = prefix.size(); pos < full.size(); ++pos) {
      const float* row = logits.data<float>() + (pos - 1) * v;
      const float mx = *std::max_element(row, row + v);
      double z = 0;
      for (std::int64_t k = 0; k < v; ++k) z += std::exp(static_cast<double>(row[k]) - mx);
      ll += row[full[pos]] - mx - std::log(z);
    }
    if (ll > best_ll) {
      best_ll = ll;
      best = c;
    }
  }
  return best;
}

EvalResult evaluate_model(Model& model, const Judge& judge, const EvalOptions& o, const EvalSink& sink) {
  const auto t0 = std::chrono::steady_clock::now();
  EvalResult r;
  r.judge = judge.name;
  if (o.harmful) {
    auto prompts = read_prompt_file(*o.harmful);
    apply_limit(prompts, o.limit);
    RateResult h = count_refusals(model, prompts, judge, o.tmpl, o.max_new_tokens, o.batch_size, "harmful", sink);
    h.rate = h.n ? static_cast<double>(h.n - h.refused) / h.n : 0;
    r.harmful = h;
  }
  if (o.over_rejection) {
    auto prompts = read_prompt_file(*o.over_rejection);
    apply_limit(prompts, o.limit);
    RateResult h = count_refusals(model, prompts, judge, o.tmpl, o.max_new_tokens, o.batch_size, "over-rejection", sink);
    h.rate = h.n ? static_cast<double>(h.refused) / h.n : 0;
    r.over_rejection = h;
  }
  if (o.reference) {
    auto refs = read_sft_file(*o.reference);
    apply_limit(refs, o.limit);
    std::vector<PromptRecord> prompts;
    for (const auto& x : refs) {
      if (!x.messages.empty()) throw InputError(o.reference->string() + ": reference answers must be Alpaca records (instruction, input, output)");
      prompts.push_back(x.prompt);
    }
    auto texts = generate_texts(model, prompts, o.tmpl, o.max_new_tokens, o.batch_size, "reference");
    double sum = 0;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      sum += rouge_l(response_answer(texts[i]).text, refs[i].output).f1;
      if (sink) sink("reference", prompts[i].instruction, texts[i], judge.refused(texts[i]));
    }
    r.rouge_n = static_cast<std::int64_t>(texts.size());
    r.rouge_l = texts.empty() ? 0 : sum / texts.size();
  }
  if (o.mmlu) {
    auto qs = read_choice_csv(*o.mmlu);
    apply_limit(qs, o.limit);
    Progress bar("multiple choice", qs.size(), "questions");
    std::int64_t correct = 0;
    for (std::size_t i = 0; i < qs.size(); ++i) {
      correct += answer_by_likelihood(model, qs[i], o.tmpl) == qs[i].answer;
      bar.update(i + 1);
    }
    bar.finish();
    r.mc_n = static_cast<std::int64_t>(qs.size());
    r.mc_accuracy = static_cast<double>(correct) / qs.size();
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

Json RateResult::to_json(const std::string& rate_key) const {
  return {{"n", n}, {"refused", refused}, {rate_key, rate}, {"unfinished_reasoning", unfinished}};
}

Json EvalResult::to_json() const {
  Json j = {{"judge", judge}, {"seconds", seconds}};
  if (harmful) j["harmful"] = harmful->to_json("harmful_rate");
  if (over_rejection) j["over_rejection"] = over_rejection->to_json("over_rejection_rate");
  if (rouge_l) j["rouge_l"] = {{"n", rouge_n}, {"f1_mean", *rouge_l}};
  if (mc_accuracy) j["multiple_choice"] = {{"n", mc_n}, {"accuracy", *mc_accuracy}};
  return j;
}

}  // namespace sppft
