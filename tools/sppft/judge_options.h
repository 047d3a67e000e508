// The model judges of `eval` and `rejudge`: --guard (a safety classifier) and --score-judge
// (S_h) with the options that set it up.
#pragma once

#include <set>
#include <string>

#include "analysis/rejudge.h"
#include "tools/sppft/args.h"

namespace sppft::cli {

inline constexpr const char* kModelJudgesHelp =
    "  --guard DIR               also judge the harmful answers with a safety classifier\n"
    "                            checkpoint (Llama Guard 2/3: \"safe\" / \"unsafe\" + categories\n"
    "                            through its chat template): eval.json harmful.guard\n"
    "  --score-judge DIR         also score each harmful answer from 1 (refuses) to 5 (does the\n"
    "                            harm asked) with a chat model as judge: S_h, eval.json\n"
    "                            harmful.score (mean, histogram, unparsed replies)\n"
    "  --score-rubric FILE       the judge's prompt, with {query} and {answer} (default\n"
    "                            data/judges/harm-score.txt)\n"
    "  --score-max-new-tokens N  the judge's reply length (default 16; more for rubrics that ask\n"
    "                            for reasons before the score)\n"
    "  --score-chat-template-kwargs J  the judge's extra chat-template variables, e.g.\n"
    "                            '{\"enable_thinking\": false}' for a Qwen3 judge\n";

// `flags` and the model judges' flags, for Args' valued flags.
std::set<std::string> with_model_judge_flags(std::set<std::string> flags);

// The model judges the options ask for, each checkpoint checked (config, tensor headers,
// tokenizer; no weights read) before anything runs. InputError for a directory that is not a
// checkpoint, a --score-* option without --score-judge, bad kwargs or a rubric without its
// placeholders. `batch_size`: prompts per prefill chunk of the judges' generations.
ModelJudges model_judges_option(const Args& args, std::int64_t batch_size);

// Loads a judge checkpoint and places it as --device says.
ModelLoader judge_loader(const Args& args);

}  // namespace sppft::cli
