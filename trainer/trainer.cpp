#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <numeric>
#include <random>

#include "engine/error.h"
#include "engine/json.h"
#include "engine/progress.h"
#include "engine/safetensors.h"
#include "kernels/ops.h"
#include "models/training.h"

namespace sppft {

namespace {

struct ParamSlot {
  std::string name;
  Tensor* weight;
  Tensor grad, m, v;  // defined only for trainable tensors
  bool decay;
};

bool is_norm_or_bias(const std::string& name) {
  return name.find("norm") != std::string::npos || name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
}

// Copies the tokenizer and generation files so OUT is a complete checkpoint.
void copy_side_files(const fs::path& from, const fs::path& to) {
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json"}) {
    std::error_code ec;
    if (fs::exists(from / f, ec)) atomic_write_text(to / f, read_file(from / f));
  }
}

void save_state(const fs::path& out, Model& model, std::vector<ParamSlot>& slots, std::int64_t step, const Json& meta) {
  // Written whole into checkpoint.tmp, then swapped in: a kill at any moment
  // leaves the previous checkpoint or the new one, never a mix.
  const fs::path tmp = out / "checkpoint.tmp", dst = out / "checkpoint", old = out / "checkpoint.old";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  model.save(tmp, DType::F32);
  std::vector<TensorToWrite> moments;
  for (auto& s : slots) {
    if (!s.grad.defined()) continue;
    moments.push_back({"m." + s.name, DType::F32, s.m.shape(), s.m.raw()});
    moments.push_back({"v." + s.name, DType::F32, s.v.shape(), s.v.raw()});
  }
  write_safetensors(tmp / "optimizer.safetensors", moments);
  Json state = meta;
  state["step"] = step;
  atomic_write_text(tmp / "trainer_state.json", state.dump(2) + "\n");
  fs::remove_all(old, ec);
  if (fs::exists(dst)) fs::rename(dst, old);
  fs::rename(tmp, dst);
  fs::remove_all(old, ec);
}

std::int64_t load_state(const fs::path& out, Model& model, std::vector<ParamSlot>& slots, const Json& meta) {
  const fs::path dir = out / "checkpoint";
  if (!fs::exists(dir / "trainer_state.json"))
    throw InputError(dir.string() + ": no checkpoint to resume from (trainer_state.json missing)");
  Json state = read_json_file(dir / "trainer_state.json");
  for (const char* key : {"freeze", "seed", "data", "micro_batch", "grad_accum", "cutoff"})
    if (state.value(key, Json()) != meta.value(key, Json()))
      throw InputError((dir / "trainer_state.json").string() + ": field '" + key + "' is " + state.value(key, Json()).dump() +
                       " but this run has " + meta.value(key, Json()).dump() + " (resume with the same settings)");
  model.load_weights_from(dir);
  Checkpoint opt = Checkpoint::from_file(dir / "optimizer.safetensors");
  for (auto& s : slots) {
    if (!s.grad.defined()) continue;
    for (auto [prefix, t] : {std::pair{"m.", &s.m}, std::pair{"v.", &s.v}}) {
      const TensorEntry& e = opt.entry(prefix + s.name);
      if (e.shape != t->shape() || e.dtype != DType::F32)
        throw InputError((dir / "optimizer.safetensors").string() + ": tensor '" + prefix + s.name + "' does not match this model");
      std::copy_n(reinterpret_cast<const float*>(e.data), t->numel(), t->data<float>());
    }
  }
  return json_get<std::int64_t>(state, "step", (dir / "trainer_state.json").string());
}

// The examples of optimizer step `step` (0-based): epoch order is a pure
// function of (seed, epoch), so a resumed run sees the same batches.
std::vector<std::size_t> epoch_order(std::size_t n, std::uint64_t seed, std::int64_t epoch) {
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed * 1000003ull + static_cast<std::uint64_t>(epoch) + 1);
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

}  // namespace

TrainResult train(const TrainOptions& o, const StepHook& hook) {
  std::error_code ec;
  if (fs::exists(o.out, ec) && !fs::is_directory(o.out, ec))
    throw InputError("--out " + o.out.string() + ": exists and is a file, expected a directory");
  if (o.micro_batch < 1 || o.grad_accum < 1 || o.cutoff < 2) throw InputError("--micro-batch, --grad-accum must be >= 1 and --cutoff >= 2");
  if (!(o.lr > 0)) throw InputError("--lr must be positive");

  // Measured bytes are what this run adds to what is already alive.
  Allocator& alloc = Allocator::for_device(Device::CPU);
  alloc.reset_peaks();
  const MemoryStats before = alloc.stats();
  auto model = Model::load(o.model_dir);
  const ModelConfig& c = model->config();
  FreezePlan plan = o.freeze.empty() ? FreezePlan::none(c.num_layers)
                                     : FreezePlan::from_ranges(parse_layer_ranges(o.freeze, c.num_layers, "--freeze"), c.num_layers);
  plan.norms = o.freeze_norms;
  plan.embeddings = o.freeze_embeddings;
  plan.lm_head = o.freeze_lm_head;
  if (c.tie_word_embeddings) {
    if (o.freeze_lm_head && !o.freeze_embeddings)
      throw InputError("--freeze-lm-head: lm_head is tied to the embeddings in this model; use --freeze-embeddings");
    plan.lm_head = plan.embeddings;
  }

  // Data: tokenize everything once; the validation split is a seeded sample.
  auto records = read_sft_file(o.data);
  DataOptions dopt{o.tmpl, std::min(o.cutoff, c.max_position_embeddings), o.train_on_inputs};
  std::vector<SftExample> examples;
  examples.reserve(records.size());
  std::size_t skipped = 0;
  for (std::size_t i = 0; i < records.size(); ++i) {
    SftExample ex = tokenize_example(*model, records[i], dopt, o.data.string() + ": example " + std::to_string(i + 1));
    if (ex.trained_tokens() < 2) {  // the response lies past the cutoff: nothing to learn
      ++skipped;
      continue;
    }
    examples.push_back(std::move(ex));
  }
  if (examples.empty()) throw InputError(o.data.string() + ": no example has a response token within --cutoff " + std::to_string(dopt.cutoff));
  if (skipped && !o.quiet)
    std::fprintf(stderr, "train: skipped %zu of %zu examples whose response lies past --cutoff %lld\n", skipped, records.size(),
                 (long long)dopt.cutoff);
  std::vector<std::size_t> all = epoch_order(examples.size(), o.seed, -1);
  if (o.val_size < 0 || o.val_size >= static_cast<std::int64_t>(examples.size()))
    throw InputError("--val-size " + std::to_string(o.val_size) + ": must leave training examples (data has " +
                     std::to_string(examples.size()) + ")");
  std::vector<std::size_t> val(all.begin(), all.begin() + o.val_size), train_idx(all.begin() + o.val_size, all.end());
  std::sort(train_idx.begin(), train_idx.end());

  // Trainable tensors get a gradient and Adam moments; frozen ones nothing.
  ModelWeights grads;
  grads.blocks.resize(c.num_layers);
  std::vector<ParamSlot> slots;
  auto weights = model->parameters();
  auto grad_slots = named_parameters(c, grads);
  for (std::size_t i = 0; i < weights.size(); ++i) {
    ParamSlot s{weights[i].name, weights[i].tensor, {}, {}, {}, o.decay_norms_and_biases || !is_norm_or_bias(weights[i].name)};
    if (plan.trains(weights[i].name, weights[i].block, c)) {
      *grad_slots[i].tensor = Tensor::zeros(weights[i].tensor->shape(), DType::F32, MemCategory::Grads);
      s.grad = *grad_slots[i].tensor;
      s.m = Tensor::zeros(s.grad.shape(), DType::F32, MemCategory::Optimizer);
      s.v = Tensor::zeros(s.grad.shape(), DType::F32, MemCategory::Optimizer);
    }
    slots.push_back(std::move(s));
  }
  bind_fused_views(c, grads);
  const auto modes = block_modes(plan, c.num_layers);
  TrainingGraph graph(*model, modes, o.micro_batch * dopt.cutoff);

  TrainResult result;
  result.predicted = plan_training_memory(c, plan, o.micro_batch, dopt.cutoff, Precision::FP32);
  const std::int64_t per_step = o.micro_batch * o.grad_accum;
  const std::int64_t steps_per_epoch = (static_cast<std::int64_t>(train_idx.size()) + per_step - 1) / per_step;
  const std::int64_t total_steps = o.max_steps > 0 ? o.max_steps : o.epochs * steps_per_epoch;
  if (!o.quiet) {
    std::fprintf(stderr, "train: %s, %zu training / %zu validation examples, %lld steps of %lld examples\n",
                 plan.describe().c_str(), train_idx.size(), val.size(), (long long)total_steps, (long long)per_step);
    std::fprintf(stderr, "train: %lld trainable / %lld frozen parameters; predicted memory (fp32):\n%s",
                 (long long)result.predicted.trainable_params, (long long)result.predicted.frozen_params,
                 format_memory_table(result.predicted, nullptr).c_str());
  }

  ensure_directory(o.out);
  Json meta = {{"freeze", plan.describe()}, {"seed", o.seed}, {"data", fs::absolute(o.data).string()},
               {"micro_batch", o.micro_batch}, {"grad_accum", o.grad_accum}, {"cutoff", dopt.cutoff},
               {"model_config", model_config_to_json(c)}};
  std::int64_t start_step = 0;
  const fs::path metrics_path = o.out / "metrics.jsonl";
  std::string metrics_text;
  if (o.resume) {
    start_step = load_state(o.out, *model, slots, meta);
    // Keep the metrics of the steps the checkpoint covers; the rest are redone.
    std::string old = fs::exists(metrics_path) ? read_file(metrics_path) : "";
    std::size_t pos = 0;
    while (pos < old.size()) {
      std::size_t end = old.find('\n', pos);
      if (end == std::string::npos) end = old.size();
      std::string line = old.substr(pos, end - pos);
      Json j = parse_json(line, metrics_path.string());
      if (j.value("step", std::int64_t{0}) <= start_step) metrics_text += line + "\n";
      pos = end + 1;
    }
    if (!o.quiet) std::fprintf(stderr, "train: resumed from %s at step %lld\n", (o.out / "checkpoint").c_str(), (long long)start_step);
  }
  atomic_write_text(metrics_path, metrics_text);

  auto validation_loss = [&]() {
    LossSum total;
    for (std::size_t i = 0; i < val.size(); i += o.micro_batch) {
      std::vector<TrainSequence> batch;
      for (std::size_t j = i; j < std::min(val.size(), i + static_cast<std::size_t>(o.micro_batch)); ++j)
        batch.push_back({&examples[val[j]].ids, &examples[val[j]].labels});
      LossSum l = graph.evaluate(batch);
      total.sum += l.sum;
      total.tokens += l.tokens;
    }
    return total.tokens ? total.sum / total.tokens : 0.0;
  };

  const auto t0 = std::chrono::steady_clock::now();
  Progress bar("train", static_cast<std::size_t>(total_steps), "steps");
  std::int64_t cached_epoch = -2;
  std::vector<std::size_t> order;
  for (std::int64_t step = start_step; step < total_steps; ++step) {
    const auto ts = std::chrono::steady_clock::now();
    const std::int64_t epoch = step / steps_per_epoch, in_epoch = step % steps_per_epoch;
    if (epoch != cached_epoch) {
      order = epoch_order(train_idx.size(), o.seed, epoch);
      cached_epoch = epoch;
    }
    // The examples of this step, split into micro-batches; loss normalised over all their tokens.
    std::vector<const SftExample*> step_examples;
    for (std::int64_t i = in_epoch * per_step; i < std::min<std::int64_t>((in_epoch + 1) * per_step, train_idx.size()); ++i)
      step_examples.push_back(&examples[train_idx[order[i]]]);
    std::int64_t step_tokens = 0, step_all_tokens = 0;
    for (auto* e : step_examples) {
      step_tokens += std::count_if(e->labels.begin() + 1, e->labels.end(), [](std::int32_t l) { return l != kIgnoreLabel; });
      step_all_tokens += static_cast<std::int64_t>(e->ids.size());
    }
    for (auto& s : slots)
      if (s.grad.defined()) std::fill_n(s.grad.data<float>(), s.grad.numel(), 0.0f);
    LossSum loss;
    const float scale = step_tokens ? 1.0f / static_cast<float>(step_tokens) : 0.0f;
    for (std::size_t i = 0; i < step_examples.size(); i += o.micro_batch) {
      std::vector<TrainSequence> batch;
      for (std::size_t j = i; j < std::min(step_examples.size(), i + static_cast<std::size_t>(o.micro_batch)); ++j)
        batch.push_back({&step_examples[j]->ids, &step_examples[j]->labels});
      LossSum l = graph.step(batch, grads, scale);
      loss.sum += l.sum;
      loss.tokens += l.tokens;
    }
    const double mean_loss = loss.tokens ? loss.sum / loss.tokens : 0.0;
    if (!std::isfinite(mean_loss)) {
      bar.finish();
      throw RuntimeFailure("loss is " + std::to_string(mean_loss) + " at step " + std::to_string(step + 1) +
                           "; stopped, the last good checkpoint in " + (o.out / "checkpoint").string() + " is kept");
    }
    double sq = 0;
    for (auto& s : slots)
      if (s.grad.defined()) sq += ops::sum_squares(s.grad);
    const double norm = std::sqrt(sq);
    if (o.clip > 0 && norm > o.clip) {  // as torch.nn.utils.clip_grad_norm_
      const float coef = static_cast<float>(o.clip / (norm + 1e-6));
      for (auto& s : slots)
        if (s.grad.defined()) ops::scale_inplace(s.grad, coef);
    }
    const double lr = learning_rate(o.schedule, o.lr, step, o.warmup, total_steps);
    for (auto& s : slots) {
      if (!s.grad.defined()) continue;
      ops::AdamWParams hp{lr, o.beta1, o.beta2, o.eps, s.decay ? o.weight_decay : 0.0};
      ops::adamw_step(*s.weight, s.grad, s.m, s.v, hp, step + 1);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    StepRecord rec{step + 1, mean_loss, lr, norm, step_all_tokens / std::max(secs, 1e-9)};
    result.trained_tokens += step_all_tokens;
    if (!val.empty() && ((o.eval_every > 0 && (step + 1) % o.eval_every == 0) || step + 1 == total_steps))
      rec.val_loss = validation_loss();
    if (step == start_step) {
      // Every training buffer exists now and no step allocates more: this is the
      // run's footprint. Later peaks can only come from the hook (the safety probe).
      MemoryStats now = alloc.stats();
      for (std::size_t i = 0; i < kMemCategories; ++i) now.peak[i] -= before.current[i];
      result.measured = measured_memory(now);
    }
    if (hook) hook(*model, rec);
    Json line = {{"step", rec.step}, {"epoch", epoch}, {"loss", rec.loss}, {"lr", rec.lr}, {"grad_norm", rec.grad_norm},
                 {"tokens_per_s", rec.tokens_per_s}};
    if (rec.val_loss >= 0) line["val_loss"] = rec.val_loss;
    if (rec.probe_gap_deg) line["probe_gap_deg"] = *rec.probe_gap_deg;
    metrics_text += line.dump() + "\n";
    atomic_write_text(metrics_path, metrics_text);
    result.steps.push_back(rec);
    if (o.save_every > 0 && (step + 1) % o.save_every == 0 && step + 1 < total_steps)
      save_state(o.out, *model, slots, step + 1, meta);
    if (!o.quiet) {
      char extra[96];
      std::snprintf(extra, sizeof extra, "loss %.4f lr %.2e %.0f tok/s", rec.loss, rec.lr, rec.tokens_per_s);
      bar.update(static_cast<std::size_t>(step + 1), extra);
    }
    // Test hook: die without warning after a given step (SIGKILL resume test).
    if (const char* kill_at = std::getenv("SPPFT_TEST_KILL_AFTER_STEP"); kill_at && std::atoll(kill_at) == step + 1)
      std::raise(SIGKILL);
  }
  bar.finish();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MemoryStats end = alloc.stats();
  for (std::size_t i = 0; i < kMemCategories; ++i) end.peak[i] -= before.current[i];
  MemoryBreakdown with_hook = measured_memory(end);
  if (result.steps.empty()) result.measured = with_hook;
  result.measured.trainable_params = result.predicted.trainable_params;
  result.measured.frozen_params = result.predicted.frozen_params;

  // The final model in Hugging Face format, plus the resumable state.
  model->save(o.out, DType::F32);
  copy_side_files(o.model_dir, o.out);
  save_state(o.out, *model, slots, total_steps, meta);
  Json mem = {{"device", "cpu"}, {"precision", "fp32"}, {"predicted", result.predicted.to_json()},
              {"measured_peak", result.measured.to_json()}};
  if (with_hook.total() != result.measured.total())  // transient buffers of the step hook (safety probe)
    mem["peak_including_safety_probe"] = with_hook.to_json();
  atomic_write_text(o.out / "memory.json", mem.dump(2) + "\n");
  return result;
}

}  // namespace sppft
