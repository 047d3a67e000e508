#include "models/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "engine/error.h"

namespace sppft {

std::int32_t pick_token(const float* logits, std::int64_t vocab, const SamplingOptions& opts, double u) {
  if (opts.temperature <= 0.0f) return static_cast<std::int32_t>(std::max_element(logits, logits + vocab) - logits);
  std::vector<std::int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::int64_t keep = vocab;
  if (opts.top_k > 0 && opts.top_k < vocab) keep = opts.top_k;
  // Stable sort so equal logits keep id order: draws are reproducible.
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](std::int32_t a, std::int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  order.resize(keep);
  std::vector<double> p(keep);
  const double mx = logits[order[0]] / opts.temperature;
  double sum = 0;
  for (std::int64_t i = 0; i < keep; ++i) sum += p[i] = std::exp(logits[order[i]] / opts.temperature - mx);
  if (opts.top_p < 1.0f) {
    double cum = 0;
    std::int64_t cut = keep;
    for (std::int64_t i = 0; i < keep; ++i) {
      cum += p[i] / sum;
      if (cum >= opts.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    sum = std::accumulate(p.begin(), p.begin() + keep, 0.0);
  }
  double target = u * sum, acc = 0;
  for (std::int64_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (target < acc) return order[i];
  }
  return order[keep - 1];
}

std::vector<Generation> generate(Model& model, const std::vector<std::vector<std::int32_t>>& prompts,
                                 const SamplingOptions& opts,
                                 const std::function<void(std::size_t, std::size_t)>& progress) {
  const ModelConfig& c = model.config();
  const bool have_tok = model.has_tokenizer();
  std::vector<Generation> out(prompts.size());
  const auto batch = std::max<std::int64_t>(1, opts.batch_size);
  for (std::size_t begin = 0; begin < prompts.size(); begin += batch) {
    const std::size_t end = std::min(prompts.size(), begin + static_cast<std::size_t>(batch));
    std::int64_t longest = 0;
    for (std::size_t i = begin; i < end; ++i) {
      if (prompts[i].empty()) throw InputError("prompt " + std::to_string(i + 1) + " is empty (no tokens)");
      if (static_cast<std::int64_t>(prompts[i].size()) > c.max_position_embeddings)
        throw InputError("prompt " + std::to_string(i + 1) + " has " + std::to_string(prompts[i].size()) +
                         " tokens, more than max_position_embeddings (" + std::to_string(c.max_position_embeddings) + ")");
      longest = std::max<std::int64_t>(longest, prompts[i].size());
    }
    const std::int64_t cache_len = std::min(c.max_position_embeddings, longest + opts.max_new_tokens);
    KVCache cache = model.make_cache(static_cast<std::int64_t>(end - begin), cache_len);
    StepInput step;
    std::vector<std::size_t> who;
    for (std::size_t i = begin; i < end; ++i) {
      out[i].prompt_ids = prompts[i];
      step.tokens.push_back(prompts[i]);
      step.slots.push_back(static_cast<std::int64_t>(i - begin));
      who.push_back(i);
    }
    std::vector<std::mt19937_64> rngs;
    for (std::size_t i = begin; i < end; ++i) rngs.emplace_back(opts.seed * 1000003ull + i);
    std::uniform_real_distribution<double> unif(0.0, 1.0);
    for (std::int64_t t = 0; t < opts.max_new_tokens && !step.tokens.empty(); ++t) {
      // LongRoPE (Phi-3-128k, Phi-3.5): a sequence whose length first passes the pretraining
      // length switches to the long factors, and its cached keys were rotated with the short
      // ones, so it is recomputed from its first token, as transformers' Phi-3 drops its cache.
      for (std::size_t s = 0; s < who.size(); ++s) {
        const std::int64_t past = cache.length(step.slots[s]), len = static_cast<std::int64_t>(step.tokens[s].size());
        if (past == 0 || c.rope_long(past - 1) || !c.rope_long(past + len - 1)) continue;
        const Generation& g = out[who[s]];  // its new ids end with the tokens of this step
        step.tokens[s] = g.prompt_ids;
        step.tokens[s].insert(step.tokens[s].end(), g.new_ids.begin(), g.new_ids.end());
        cache.set_length(step.slots[s], 0);
      }
      Tensor logits = model.forward(step, cache);
      StepInput next;
      std::vector<std::size_t> next_who;
      for (std::size_t s = 0; s < who.size(); ++s) {
        const std::size_t i = who[s];
        const double u = opts.temperature > 0 ? unif(rngs[i - begin]) : 0.0;
        const std::int32_t id = pick_token(logits.data<float>() + s * c.vocab_size, c.vocab_size, opts, u);
        out[i].new_ids.push_back(id);
        const bool eos = have_tok ? model.tokenizer().is_eos(id)
                                  : std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) != c.eos_token_ids.end();
        const bool full = cache.length(step.slots[s]) + 1 > cache_len;
        if (eos) out[i].stopped_on_eos = true;
        if (!eos && !full) {
          next.tokens.push_back({id});
          next.slots.push_back(step.slots[s]);
          next_who.push_back(i);
        }
      }
      step = std::move(next);
      who = std::move(next_who);
    }
    if (progress) progress(end, prompts.size());
  }
  return out;
}

}  // namespace sppft
