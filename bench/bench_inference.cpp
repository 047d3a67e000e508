// CPU inference throughput of sppft on a checkpoint: prefill tokens/s (B prompts
// of T tokens in one packed pass) and decode tokens/s (B sequences, one token
// each step, KV cache). Random token ids, so no tokenizer is needed.
//   bench_inference DIR [--batch B] [--prompt-len T] [--new-tokens N] [--repeats R] [--json]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "engine/json.h"
#include "models/model.h"

using namespace sppft;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_inference DIR [--batch B] [--prompt-len T] [--new-tokens N] [--repeats R] [--json]\n");
    return 2;
  }
  std::int64_t batch = 4, prompt_len = 128, new_tokens = 32, repeats = 3;
  bool json = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::stoll(argv[++i]); };
    if (a == "--batch") batch = next();
    else if (a == "--prompt-len") prompt_len = next();
    else if (a == "--new-tokens") new_tokens = next();
    else if (a == "--repeats") repeats = next();
    else if (a == "--json") json = true;
  }
  try {
    auto model = Model::load(argv[1], /*with_tokenizer=*/false);
    const auto& c = model->config();
    std::mt19937 rng(0);
    std::uniform_int_distribution<std::int32_t> tok(3, static_cast<std::int32_t>(c.vocab_size - 1));
    double best_prefill = 1e30, best_decode = 1e30;
    for (std::int64_t r = 0; r < repeats + 1; ++r) {  // first run is warm-up
      KVCache cache(c, batch, prompt_len + new_tokens);
      StepInput prefill;
      for (std::int64_t b = 0; b < batch; ++b) {
        std::vector<std::int32_t> ids(prompt_len);
        for (auto& x : ids) x = tok(rng);
        prefill.tokens.push_back(ids);
        prefill.slots.push_back(b);
      }
      auto t0 = std::chrono::steady_clock::now();
      Tensor logits = model->forward(prefill, cache);
      auto t1 = std::chrono::steady_clock::now();
      for (std::int64_t s = 0; s < new_tokens; ++s) {
        StepInput step;
        for (std::int64_t b = 0; b < batch; ++b) {
          const float* row = logits.data<float>() + b * c.vocab_size;
          step.tokens.push_back({static_cast<std::int32_t>(std::max_element(row, row + c.vocab_size) - row)});
          step.slots.push_back(b);
        }
        logits = model->forward(step, cache);
      }
      auto t2 = std::chrono::steady_clock::now();
      if (r == 0) continue;
      best_prefill = std::min(best_prefill, std::chrono::duration<double>(t1 - t0).count());
      best_decode = std::min(best_decode, std::chrono::duration<double>(t2 - t1).count());
    }
    const double prefill_tps = batch * prompt_len / best_prefill, decode_tps = batch * new_tokens / best_decode;
    if (json) {
      Json j = {{"engine", "sppft"}, {"threads", omp_get_max_threads()}, {"batch", batch}, {"prompt_len", prompt_len},
                {"new_tokens", new_tokens}, {"prefill_tokens_per_s", prefill_tps}, {"decode_tokens_per_s", decode_tps},
                {"parameters", c.total_parameters()}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("sppft: prefill %.1f tokens/s, decode %.1f tokens/s (batch %lld, prompt %lld, %lld new, %d threads)\n",
                  prefill_tps, decode_tps, (long long)batch, (long long)prompt_len, (long long)new_tokens,
                  omp_get_max_threads());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
