// Training a sentencepiece tokenizer (for the embedded demo model): writes a
// Hugging Face style tokenizer directory (tokenizer.model, tokenizer_config.json,
// special_tokens_map.json) that load_tokenizer and transformers both read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/fs.h"

namespace sppft {

struct SentencePieceTrainOptions {
  std::int32_t vocab_size = 1024;
  std::string model_type = "bpe";  // bpe or unigram
};

// Trains on `lines` (one sentence each); Llama conventions: <unk>=0, <s>=1,
// </s>=2, byte fallback, digits split.
void train_sentencepiece(const std::vector<std::string>& lines, const fs::path& out_dir,
                         const SentencePieceTrainOptions& opts = {});

}  // namespace sppft
