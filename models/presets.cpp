#include "models/presets.h"

#include "engine/error.h"

namespace sppft {

namespace {

// The fields of each model's config.json on the Hub (those sppft reads).
const char* preset_json(const std::string& name) {
  if (name == "llama-3-8b")
    return R"({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
      "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
      "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "bos_token_id": 128000, "eos_token_id": [128001, 128009],
      "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";
  if (name == "llama-2-7b")
    return R"({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
      "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
      "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"})";
  if (name == "gemma-2b")
    return R"({"model_type": "gemma", "hidden_size": 2048, "intermediate_size": 16384, "num_hidden_layers": 18,
      "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 256000,
      "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_activation": "gelu_pytorch_tanh",
      "bos_token_id": 2, "eos_token_id": 1, "tie_word_embeddings": true, "torch_dtype": "bfloat16"})";
  if (name == "gemma-2-2b")  // google/gemma-2-2b-it
    return R"({"model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
      "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 256000,
      "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_activation": "gelu_pytorch_tanh",
      "query_pre_attn_scalar": 256, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
      "sliding_window": 4096, "bos_token_id": 2, "eos_token_id": [1, 107], "tie_word_embeddings": true,
      "torch_dtype": "bfloat16"})";
  if (name == "gemma-3-1b")  // google/gemma-3-1b-it
    return R"({"model_type": "gemma3_text", "hidden_size": 1152, "intermediate_size": 6912, "num_hidden_layers": 26,
      "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144,
      "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
      "rope_scaling": null, "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256,
      "attn_logit_softcapping": null, "final_logit_softcapping": null, "sliding_window": 512,
      "sliding_window_pattern": 6, "bos_token_id": 2, "eos_token_id": [1, 106], "tie_word_embeddings": true,
      "torch_dtype": "bfloat16"})";
  if (name == "gemma-3-4b")  // google/gemma-3-4b-it (multimodal; its text model), as on the Hub
    return R"({"model_type": "gemma3", "eos_token_id": [1, 106], "torch_dtype": "bfloat16",
      "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
        "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024}})";
  if (name == "llava-1.5-7b")  // llava-hf/llava-1.5-7b-hf (vision-language; its text model, Vicuna-7B), as on the Hub
    return R"({"model_type": "llava", "pad_token_id": 32001, "tie_word_embeddings": false, "torch_dtype": "float16",
      "text_config": {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 4096, "model_type": "llama",
        "rms_norm_eps": 1e-05, "torch_dtype": "float16", "vocab_size": 32064}})";
  // mistralai/Mistral-Small-3.1-24B-Instruct-2503 (vision-language; its text model). Its lm_head is
  // its own: Mistral3Config ties by default, transformers unties on seeing the checkpoint.
  if (name == "mistral-small-3.1-24b")
    return R"({"model_type": "mistral3", "torch_dtype": "bfloat16", "tie_word_embeddings": false,
      "text_config": {"head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "intermediate_size": 32768,
        "max_position_embeddings": 131072, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 40,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000000.0, "sliding_window": null,
        "vocab_size": 131072}})";
  if (name == "qwen2.5-vl-7b")  // Qwen/Qwen2.5-VL-7B-Instruct (vision-language; its text model), flat as on the Hub
    return R"({"model_type": "qwen2_5_vl", "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944,
      "max_position_embeddings": 128000, "max_window_layers": 28, "num_attention_heads": 28, "num_hidden_layers": 28,
      "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_sliding_window": false, "vocab_size": 152064,
      "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "bos_token_id": 151643, "eos_token_id": 151645})";
  if (name == "qwen3-8b")  // Qwen/Qwen3-8B
    return R"({"model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
      "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
      "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "attention_bias": false,
      "bos_token_id": 151643, "eos_token_id": 151645, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";
  if (name == "llama-3.1-8b")  // meta-llama/Llama-3.1-8B-Instruct
    return R"({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
      "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
      "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
      "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "tie_word_embeddings": false,
      "torch_dtype": "bfloat16"})";
  if (name == "mistral-7b")  // mistralai/Mistral-7B-Instruct-v0.2
    return R"({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
      "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768,
      "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "sliding_window": null, "bos_token_id": 1, "eos_token_id": 2,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";
  if (name == "qwen2.5-7b")  // Qwen/Qwen2.5-7B-Instruct
    return R"({"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
      "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
      "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "sliding_window": 131072, "use_sliding_window": false,
      "max_window_layers": 28, "bos_token_id": 151643, "eos_token_id": 151645, "tie_word_embeddings": false,
      "torch_dtype": "bfloat16"})";
  // microsoft/Phi-4-mini-instruct: LongRoPE on the first 96 of 128 dimensions of each head, tied.
  if (name == "phi-4-mini")
    return R"({"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
      "num_attention_heads": 24, "num_key_value_heads": 8, "vocab_size": 200064, "max_position_embeddings": 131072,
      "original_max_position_embeddings": 4096, "partial_rotary_factor": 0.75, "rms_norm_eps": 1e-5,
      "rope_theta": 10000.0, "rope_scaling": {"type": "longrope", "long_factor": [
        1, 1.118320672, 1.250641126, 1.398617824, 1.564103225, 1.74916897, 1.956131817, 2.187582649,
        2.446418898, 2.735880826, 3.059592084, 3.421605075, 3.826451687, 4.279200023, 4.785517845, 5.351743533,
        5.984965424, 6.693110555, 7.485043894, 8.370679318, 9.36110372, 10.4687158, 11.70738129, 13.09260651,
        14.64173252, 16.37415215, 18.31155283, 20.47818807, 22.90118105, 25.61086418, 28.64115884, 32.03, 32.1,
        32.13, 32.23, 32.6, 32.61, 32.64, 32.66, 32.7, 32.71, 32.93, 32.97, 33.28, 33.49, 33.5, 44.16, 47.77],
        "short_factor": [
        1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]},
      "sliding_window": 262144, "bos_token_id": 199999, "eos_token_id": 200020, "pad_token_id": 199999,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16"})";
  if (name == "phi-3-mini")
    return R"({"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
      "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064, "max_position_embeddings": 4096,
      "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 2047, "bos_token_id": 1, "eos_token_id": 32000,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";
  return nullptr;
}

}  // namespace

std::vector<std::string> preset_names() {
  return {"llama-3-8b", "llama-3.1-8b", "llama-2-7b", "mistral-7b",   "qwen2.5-7b",   "qwen3-8b",
          "gemma-2b",   "gemma-2-2b",   "gemma-3-1b", "gemma-3-4b",   "phi-3-mini",   "phi-4-mini",
          "llava-1.5-7b", "mistral-small-3.1-24b", "qwen2.5-vl-7b"};
}

std::string preset_list() {
  std::string names;
  for (const auto& p : preset_names()) names += (names.empty() ? "" : ", ") + p;
  return names;
}

ModelConfig preset_config(const std::string& name) {
  const char* j = preset_json(name);
  if (!j) {
    throw InputError("--preset: unknown preset '" + name + "' (expected one of " + preset_list() + ")");
  }
  return parse_model_config(Json::parse(j), "preset " + name);
}

}  // namespace sppft
