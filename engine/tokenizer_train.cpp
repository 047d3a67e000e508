#include "engine/tokenizer_train.h"

#include <sentencepiece_trainer.h>

#include "engine/error.h"
#include "engine/json.h"

namespace sppft {

namespace {

// Feeds sentences from memory, so no corpus file is written.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& lines) : lines_(lines) {}
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& lines_;
  std::size_t i_ = 0;
};

}  // namespace

void train_sentencepiece(const std::vector<std::string>& lines, const fs::path& out_dir,
                         const SentencePieceTrainOptions& opts) {
  if (lines.empty()) throw InputError("train_sentencepiece: no training text");
  ensure_directory(out_dir);
  LineIterator it(lines);
  std::string model;
  const std::string args = "--model_type=" + opts.model_type + " --vocab_size=" + std::to_string(opts.vocab_size) +
                           " --character_coverage=1.0 --byte_fallback=true --split_digits=true"
                           " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=2"
                           " --max_sentence_length=16384 --minloglevel=2 --input_sentence_size=0"
                           " --shuffle_input_sentence=false";
  auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
  if (!status.ok()) throw RuntimeFailure("sentencepiece training failed: " + status.ToString());
  atomic_write_text(out_dir / "tokenizer.model", model);
  Json config = {{"tokenizer_class", "LlamaTokenizer"},
                 {"add_bos_token", true},
                 {"add_eos_token", false},
                 {"bos_token", "<s>"},
                 {"eos_token", "</s>"},
                 {"unk_token", "<unk>"},
                 {"legacy", false},
                 {"model_max_length", 2048}};
  atomic_write_text(out_dir / "tokenizer_config.json", config.dump(2) + "\n");
  Json special = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}};
  atomic_write_text(out_dir / "special_tokens_map.json", special.dump(2) + "\n");
}

}  // namespace sppft
