// `--device cpu|cuda` for the commands that run a model's forward (generate, hidden,
// cossim, locate, eval): cuda moves the weights to the GPU in bf16; the results come
// back to the host as with the CPU.
#pragma once

#include "engine/prompts.h"
#include "models/model.h"
#include "models/training.h"
#include "tools/sppft/args.h"

namespace sppft::cli {

inline constexpr const char* kDeviceHelp =
    "  --device D             cpu (default, fp32) | cuda (bf16 weights and activations on the GPU)\n";

// Moves `model` as --device says; InputError for an unknown device or a missing GPU.
void place_model(Model& model, const Args& args);

inline constexpr const char* kAttentionHelp =
    "  --attention K             GPU training attention (BF16, head_dim a multiple of 8):\n"
    "                            wmma (default: tensor cores through WMMA, head_dim up to\n"
    "                            256; above 128 on sm_90 only) | mma (mma.sync, fragments\n"
    "                            in registers, up to 128; WMMA above) | cuda-cores (fp32)\n";

// Applies --attention (wmma, mma or cuda-cores) for this process and returns the name in
// effect; InputError for another name, or when given without --device cuda.
std::string apply_attention_option(const Args& args, bool gpu);
// The --attention name of the kernels that will run for heads of `head_dim` (after
// apply_attention_option; "cpu" without a GPU), and a one-line note when they are not the
// ones asked for (empty otherwise).
std::string attention_kernels_used(bool gpu, std::int64_t head_dim);
std::string attention_note(const std::string& requested, const std::string& used, std::int64_t head_dim);

inline constexpr const char* kChatKwargsHelp =
    "  --chat-template-kwargs J  extra chat-template variables, a JSON object, as\n"
    "                            apply_chat_template's kwargs: '{\"enable_thinking\": false}'\n"
    "                            (Qwen3); with --template chat\n";

// --chat-template-kwargs as a JSON object (empty when absent), read before any model loads;
// InputError when it is not an object, sets messages or add_generation_prompt, or comes with a
// template other than chat.
nlohmann::ordered_json chat_template_kwargs_option(const Args& args, PromptTemplate tmpl);

// --freeze as block ranges ("6-12", "2-3,6-12"), or the located safety layers: a locate.json
// (or the directory holding one) gives its final_range as "a-b", with a note on stderr. "" when
// absent. InputError for a file without a final_range.
// A locate.json's final_range as "first-last"; InputError when the file holds none.
std::string located_range(const fs::path& file);
std::string freeze_option(const Args& args);

// --recompute (every block) or --recompute-blocks N (the N lowest blocks that run backward) as
// an activation policy (train, profile, memory); InputError when both are given.
ActivationPolicy activation_policy_option(const Args& args);

}  // namespace sppft::cli
