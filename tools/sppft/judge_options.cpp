#include "tools/sppft/judge_options.h"

#include "engine/error.h"
#include "models/prompting.h"
#include "tools/sppft/device_option.h"

namespace sppft::cli {

std::set<std::string> with_model_judge_flags(std::set<std::string> flags) {
  flags.insert({"--guard", "--score-judge", "--score-rubric", "--score-max-new-tokens", "--score-chat-template-kwargs"});
  return flags;
}

ModelJudges model_judges_option(const Args& args, std::int64_t batch_size) {
  ModelJudges j;
  j.batch_size = batch_size;
  if (auto v = args.get("--guard")) j.guard = *v;
  if (auto v = args.get("--score-judge")) j.score = *v;
  for (const auto& [flag, dir] : {std::pair{"--guard", j.guard}, std::pair{"--score-judge", j.score}}) {
    if (!dir) continue;
    if (!fs::is_regular_file(*dir / "config.json"))
      throw InputError(std::string(flag) + " " + dir->string() + ": not a checkpoint directory (no config.json)");
    check_checkpoint(*dir);  // before the evaluation's generations or the other judge, not after them
  }
  for (const char* flag : {"--score-rubric", "--score-max-new-tokens", "--score-chat-template-kwargs"})
    if (!j.score && args.get(flag)) throw InputError(std::string(flag) + " sets up --score-judge: give --score-judge too");
  if (!j.score) return j;
  if (auto v = args.get("--score-chat-template-kwargs")) j.score_chat_kwargs = parse_chat_template_kwargs(*v, "--score-chat-template-kwargs");
  j.rubric = args.get("--score-rubric") ? read_harm_score_rubric(*args.get("--score-rubric")) : default_harm_score_rubric();
  j.score_max_new_tokens = args.get_int("--score-max-new-tokens", 16, 1, 1 << 20);
  return j;
}

ModelLoader judge_loader(const Args& args) {
  return [&args](const fs::path& dir) {
    auto model = Model::load(dir);
    place_model(*model, args);
    return model;
  };
}

}  // namespace sppft::cli
