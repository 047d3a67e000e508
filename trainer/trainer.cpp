#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>
#include <random>
#include <thread>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/json.h"
#include "engine/progress.h"
#include "engine/safetensors.h"
#include "kernels/ops.h"
#include "models/training.h"

namespace sppft {

namespace {

// Copies the tokenizer, generation and (vision-language) processor files so OUT is a complete
// checkpoint.
void copy_side_files(const fs::path& from, const fs::path& to) {
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "added_tokens.json", "generation_config.json", "chat_template.json", "chat_template.jinja",
                        "preprocessor_config.json", "processor_config.json"}) {
    std::error_code ec;
    if (fs::exists(from / f, ec)) atomic_write_text(to / f, read_file(from / f));
  }
}

// Written whole into checkpoint.tmp, then swapped in: a kill at any moment
// leaves the previous checkpoint or the new one, never a mix.
void write_checkpoint(const fs::path& out, Model& model, const std::vector<TensorToWrite>& moments, std::int64_t step,
                      const Json& meta) {
  const fs::path tmp = out / "checkpoint.tmp", dst = out / "checkpoint", old = out / "checkpoint.old";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  model.save(tmp, DType::F32);
  write_safetensors(tmp / "optimizer.safetensors", moments);
  Json state = meta;
  state["step"] = step;
  atomic_write_text(tmp / "trainer_state.json", state.dump(2) + "\n");
  fs::remove_all(old, ec);
  if (fs::exists(dst)) fs::rename(dst, old);
  fs::rename(tmp, dst);
  fs::remove_all(old, ec);
}

// Every rank calls (the ZeRO-1 optimizer state is gathered); rank 0 writes.
void save_state(const fs::path& out, Model& model, DataParallel& dp, std::int64_t step, const Json& meta) {
  std::vector<std::vector<float>> staging;
  std::vector<TensorToWrite> moments = dp.gather_moments(staging);
  if (dp.rank() == 0) write_checkpoint(out, model, moments, step, meta);
  // No rank goes on until rank 0 has written: a rank past step N means step N's
  // checkpoint is on disk, whichever rank dies next.
  double written = 1;
  dp.all_reduce_between_steps(&written, 1);
}

// Any world size resumes any checkpoint with the same global batch: weights
// are whole on every rank, and each rank reads its slice of the moments.
std::int64_t load_state(const fs::path& out, Model& model, DataParallel& dp, const Json& meta) {
  const fs::path dir = out / "checkpoint";
  if (!fs::exists(dir / "trainer_state.json"))
    throw InputError(dir.string() + ": no checkpoint to resume from (trainer_state.json missing)");
  const std::string state_where = (dir / "trainer_state.json").string();
  Json state = read_json_file(dir / "trainer_state.json");
  if (!state.is_object()) throw InputError(state_where + ": expected a JSON object");
  for (const char* key : {"freeze", "seed", "data", "global_batch", "cutoff"})
    if (state.value(key, Json()) != meta.value(key, Json()))
      throw InputError(state_where + ": field '" + key + "' is " + state.value(key, Json()).dump() +
                       " but this run has " + meta.value(key, Json()).dump() +
                       " (resume with the same settings; global_batch = micro-batch x grad-accum x ranks)");
  model.load_weights_from(dir);
  dp.load_moments(Checkpoint::from_file(dir / "optimizer.safetensors"), (dir / "optimizer.safetensors").string());
  const auto step = json_get<std::int64_t>(state, "step", state_where);
  if (step < 0) throw InputError(state_where + ": field 'step' is " + std::to_string(step) + ", expected a step number >= 0");
  return step;
}

// The freeze plan of the options, from the config alone.
FreezePlan freeze_plan(const ModelConfig& c, const TrainOptions& o) {
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
  return plan;
}

// InputError when this rank's planned GPU bytes exceed what the driver reports free.
// `recomputed`: the same run with --recompute, when it is not already one.
void require_fits_on_gpu(const MemoryBreakdown& need, const std::optional<MemoryBreakdown>& recomputed, int gpu_index) {
  std::size_t free_b = 0, total_b = 0;
  if (!cuda_memory_info(free_b, total_b) || need.total() <= free_b) return;
  std::string parts;
  for (std::size_t i = 0; i < kMemCategories; ++i)
    if (need.bytes[i]) parts += std::string(parts.empty() ? "" : ", ") + std::string(mem_category_name(static_cast<MemCategory>(i))) +
                                " " + human_bytes(double(need.bytes[i]));
  throw InputError("train: the run needs " + human_bytes(double(need.total())) + " on " + cuda_device_description(gpu_index) +
                   " (" + parts + ") but " + human_bytes(double(free_b)) + " of " + human_bytes(double(total_b)) +
                   " are free; try --freeze (a frozen block holds no gradient or optimizer state), " +
                   (recomputed ? "--recompute (" + human_bytes(double(recomputed->total())) + " in all), " : std::string()) +
                   "--zero1 with more ranks, or a smaller --micro-batch or --cutoff (sppft memory --device cuda plans "
                   "each; --fit SIZE gives the largest micro-batch that fits)");
}

// Test hooks: a rank that dies without warning, or hangs, after a given step
// (SIGKILL resume test, data-parallel fault tests). SPPFT_TEST_FAULT_RANK limits it to one rank.
void test_fault_hooks(std::int64_t step, int rank) {
  const char* only = std::getenv("SPPFT_TEST_FAULT_RANK");
  if (only && std::atoi(only) != rank) return;
  if (const char* k = std::getenv("SPPFT_TEST_KILL_AFTER_STEP"); k && std::atoll(k) == step) std::raise(SIGKILL);
  if (const char* h = std::getenv("SPPFT_TEST_HANG_AFTER_STEP"); h && std::atoll(h) == step)
    std::this_thread::sleep_for(std::chrono::hours(1));
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
  if (o.dist_timeout_s < 1) throw InputError("--dist-timeout must be >= 1 second");
  const Device device = require_device(o.device);
  const bool gpu = device == Device::CUDA;
  const Precision precision = gpu ? Precision::BF16Mixed : Precision::FP32;

  // Ranks: one process per device, from the launcher's environment.
  const LaunchInfo launch = detect_launch();
  const std::chrono::seconds timeout(o.dist_timeout_s);
  if (gpu) set_cuda_device(launch.local_rank);  // before anything is allocated: one GPU per rank
  std::unique_ptr<Communicator> comm = make_host_communicator(launch, o.dist, timeout);
  std::unique_ptr<CommQueue> queue = comm->world() > 1 ? std::make_unique<CommQueue>(*comm, timeout) : nullptr;
  const int rank = comm->rank(), world = comm->world();
  const bool lead = rank == 0, quiet = o.quiet || !lead;
  // GPU ranks reduce their bf16 gradients over NCCL; the host communicator stays for
  // the unique id and for checkpoint gathers of host buffers.
  std::unique_ptr<Communicator> nccl;
  std::unique_ptr<CommQueue> nccl_queue;
  if (gpu && world > 1) {
    if (!nccl_available()) throw InputError("--device cuda with several ranks needs NCCL, which this build lacks");
    nccl = make_nccl_communicator(launch, comm.get());
    nccl_queue = std::make_unique<CommQueue>(*nccl, timeout);
  }

  // The plan comes from the config alone, so a GPU run that cannot fit is refused before any
  // weight is read or anything is written.
  const ModelConfig cfg = load_model_config(o.model_dir);
  const FreezePlan plan = freeze_plan(cfg, o);
  const std::int64_t cutoff = std::min(o.cutoff, cfg.max_position_embeddings);  // tokens per sequence, planned and trained
  const MemoryBreakdown predicted = plan_training_memory(cfg, plan, o.micro_batch, cutoff, precision, 256, {world, rank, o.zero1},
                                                         o.activations);
  if (gpu) {
    std::optional<MemoryBreakdown> recomputed;
    if (o.activations.recompute_blocks != ActivationPolicy::kAll)
      recomputed = plan_training_memory(cfg, plan, o.micro_batch, cutoff, precision, 256, {world, rank, o.zero1},
                                        ActivationPolicy::recompute());
    require_fits_on_gpu(predicted, recomputed, launch.local_rank);
  }

  // Measured bytes are what this run adds to what is already alive.
  Allocator& alloc = Allocator::for_device(device);
  alloc.reset_peaks();
  const MemoryStats before = alloc.stats();
  auto model = Model::load(o.model_dir);
  model->set_chat_template_kwargs(o.chat_template_kwargs);
  if (gpu) model->to_device(Device::CUDA, DType::BF16, /*keep_host_f32=*/true);  // for the fp32 masters
  const ModelConfig& c = model->config();

  // Data: tokenize everything once; the validation split is a seeded sample of records, so the
  // examples of one conversation (one per turn for some templates) never straddle it.
  auto records = read_sft_file(o.data);
  DataOptions dopt{o.tmpl, cutoff, o.train_on_inputs};
  std::vector<SftExample> examples;
  std::vector<std::vector<std::size_t>> record_examples;  // per record with a trained example
  examples.reserve(records.size());
  std::size_t skipped = 0, tokenized = 0;
  for (std::size_t i = 0; i < records.size(); ++i) {
    std::vector<std::size_t> mine;
    for (SftExample& ex : tokenize_record(*model, records[i], dopt, o.data.string() + ": example " + std::to_string(i + 1))) {
      ++tokenized;
      if (ex.trained_tokens() < 2) {  // the response lies past the cutoff: nothing to learn
        ++skipped;
        continue;
      }
      mine.push_back(examples.size());
      examples.push_back(std::move(ex));
    }
    if (!mine.empty()) record_examples.push_back(std::move(mine));
  }
  if (examples.empty()) throw InputError(o.data.string() + ": no example has a response token within --cutoff " + std::to_string(dopt.cutoff));
  if (skipped && !quiet)
    std::fprintf(stderr, "train: skipped %zu of %zu examples whose response lies past --cutoff %lld\n", skipped, tokenized,
                 (long long)dopt.cutoff);
  const std::vector<std::size_t> shuffled = epoch_order(record_examples.size(), o.seed, -1);
  if (o.val_size < 0 || o.val_size >= static_cast<std::int64_t>(record_examples.size()))
    throw InputError("--val-size " + std::to_string(o.val_size) + ": must leave training records (data has " +
                     std::to_string(record_examples.size()) + " with a response within --cutoff)");
  std::vector<std::size_t> val, train_idx;
  for (std::size_t k = 0; k < shuffled.size(); ++k)
    for (std::size_t e : record_examples[shuffled[k]]) (static_cast<std::int64_t>(k) < o.val_size ? val : train_idx).push_back(e);
  std::sort(train_idx.begin(), train_idx.end());

  // Trainable tensors get a gradient (packed per part, the unit of reduction)
  // and Adam moments (this rank's slice with ZeRO-1); frozen ones nothing.
  ModelWeights grads;
  auto grad_parts = allocate_packed(c, grads, model->weights().embed_tokens.dtype(), MemCategory::Grads,
                                    [&](const NamedParam& p) { return plan.trains(p.name, p.block, c); }, device);
  DataParallel dp(*model, std::move(grad_parts), nccl_queue ? nccl_queue.get() : queue.get(), o.zero1,
                  {o.beta1, o.beta2, o.eps, o.weight_decay, o.decay_norms_and_biases}, queue.get());
  model->release_host_f32();
  const auto modes = block_modes(plan, c.num_layers);
  TrainingGraph graph(*model, modes, o.micro_batch * dopt.cutoff, 256, o.activations);

  TrainResult result;
  result.rank = rank;
  result.world = world;
  result.train_examples = train_idx.size();
  result.val_examples = val.size();
  result.predicted = predicted;
  result.comm_planned = plan_comm_bytes(trainable_part_numels(c, plan), world, o.zero1, gpu ? 2 : sizeof(float));
  const std::int64_t per_rank = o.micro_batch * o.grad_accum, per_step = per_rank * world;
  const std::int64_t steps_per_epoch = (static_cast<std::int64_t>(train_idx.size()) + per_step - 1) / per_step;
  const std::int64_t total_steps = o.max_steps > 0 ? o.max_steps : o.epochs * steps_per_epoch;
  if (!quiet) {
    std::fprintf(stderr, "train: %s, %zu training / %zu validation examples, %lld steps of %lld examples", plan.describe().c_str(),
                 train_idx.size(), val.size(), (long long)total_steps, (long long)per_step);
    if (world > 1)
      std::fprintf(stderr, " (%d ranks x %lld, %s%s)", world, (long long)per_rank, (nccl ? nccl : comm)->backend().c_str(),
                   o.zero1 ? ", ZeRO-1" : "");
    std::fprintf(stderr, "\ntrain: %lld trainable / %lld frozen parameters; predicted memory (%s%s%s):\n%s",
                 (long long)result.predicted.trainable_params, (long long)result.predicted.frozen_params,
                 precision_name(precision).c_str(), gpu ? (", " + cuda_device_description(launch.local_rank)).c_str() : "",
                 world > 1 ? ", rank 0" : "", format_memory_table(result.predicted, nullptr).c_str());
  }

  if (lead) ensure_directory(o.out);
  Json meta = {{"freeze", plan.describe()}, {"seed", o.seed}, {"data", fs::absolute(o.data).string()},
               {"global_batch", per_step}, {"micro_batch", o.micro_batch}, {"grad_accum", o.grad_accum},
               {"world_size", world}, {"zero1", o.zero1}, {"cutoff", dopt.cutoff}, {"model_config", model_config_to_json(c)}};
  std::int64_t start_step = 0;
  const fs::path metrics_path = o.out / "metrics.jsonl";
  std::string metrics_text;
  if (o.resume) {
    start_step = load_state(o.out, *model, dp, meta);
    if (start_step > total_steps)
      throw InputError((o.out / "checkpoint" / "trainer_state.json").string() + ": the checkpoint is at step " +
                       std::to_string(start_step) + ", past this run's last step " + std::to_string(total_steps) +
                       " (resume with --max-steps or --epochs that reach it)");
    // Keep the metrics of the steps the checkpoint covers, one row per step (the last written);
    // the rest are redone.
    std::map<std::int64_t, std::string> kept;
    for (const JsonLine& l : parse_json_lines(fs::exists(metrics_path) ? read_file(metrics_path) : "", metrics_path.string())) {
      const auto step = json_get<std::int64_t>(l.value, "step", metrics_path.string() + ": line " + std::to_string(l.line));
      if (step >= 1 && step <= start_step) kept[step] = l.value.dump() + "\n";
    }
    for (const auto& [step, row] : kept) metrics_text += row;
    if (!quiet) std::fprintf(stderr, "train: resumed from %s at step %lld\n", (o.out / "checkpoint").c_str(), (long long)start_step);
  }
  if (lead) atomic_write_text(metrics_path, metrics_text);

  // Validation: each rank evaluates every world-th micro-batch; sums are reduced.
  auto validation_loss = [&]() {
    double sums[2] = {0, 0};
    for (std::size_t i = rank * o.micro_batch; i < val.size(); i += o.micro_batch * world) {
      std::vector<TrainSequence> batch;
      for (std::size_t j = i; j < std::min(val.size(), i + static_cast<std::size_t>(o.micro_batch)); ++j)
        batch.push_back({&examples[val[j]].ids, &examples[val[j]].labels});
      LossSum l = graph.evaluate(batch);
      sums[0] += l.sum;
      sums[1] += static_cast<double>(l.tokens);
    }
    dp.all_reduce_between_steps(sums, 2);
    return sums[1] > 0 ? sums[0] / sums[1] : 0.0;
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
    // The global batch of this step; this rank takes its contiguous share, split
    // into micro-batches. The loss is normalised over the global batch's tokens.
    const std::int64_t g0 = in_epoch * per_step, g1 = std::min<std::int64_t>(g0 + per_step, train_idx.size());
    std::int64_t step_tokens = 0, step_all_tokens = 0;
    std::vector<const SftExample*> mine;
    for (std::int64_t i = g0; i < g1; ++i) {
      const SftExample* e = &examples[train_idx[order[i]]];
      step_tokens += std::count_if(e->labels.begin() + 1, e->labels.end(), [](std::int32_t l) { return l != kIgnoreLabel; });
      step_all_tokens += static_cast<std::int64_t>(e->ids.size());
      if ((i - g0) / per_rank == rank) mine.push_back(e);
    }
    dp.zero_grads();
    LossSum loss;
    const float scale = step_tokens ? 1.0f / static_cast<float>(step_tokens) : 0.0f;
    for (std::size_t i = 0; i < mine.size(); i += o.micro_batch) {
      std::vector<TrainSequence> batch;
      for (std::size_t j = i; j < std::min(mine.size(), i + static_cast<std::size_t>(o.micro_batch)); ++j)
        batch.push_back({&mine[j]->ids, &mine[j]->labels});
      // Reduce each part as soon as the last micro-batch's backward finishes it.
      const bool last = i + o.micro_batch >= mine.size();
      graph.set_grads_ready_hook(last && world > 1 ? TrainingGraph::GradsReadyHook([&](const StepPart& p) { dp.part_ready(p.name()); })
                                                   : TrainingGraph::GradsReadyHook());
      LossSum l = graph.step(batch, grads, scale);
      loss.sum += l.sum;
      loss.tokens += l.tokens;
    }
    graph.set_grads_ready_hook({});
    const double norm = dp.reduce_gradients();
    double sums[2] = {loss.sum, static_cast<double>(loss.tokens)};
    dp.all_reduce(sums, 2);
    const double mean_loss = sums[1] > 0 ? sums[0] / sums[1] : 0.0;
    if (!std::isfinite(mean_loss) || !std::isfinite(norm)) {
      bar.finish();
      throw RuntimeFailure(std::string(std::isfinite(mean_loss) ? "gradient norm" : "loss") + " is " +
                           std::to_string(std::isfinite(mean_loss) ? norm : mean_loss) + " at step " + std::to_string(step + 1) +
                           "; stopped, the last good checkpoint in " + (o.out / "checkpoint").string() + " is kept");
    }
    if (o.clip > 0 && norm > o.clip) dp.scale_gradients(static_cast<float>(o.clip / (norm + 1e-6)));  // as clip_grad_norm_
    const double lr = learning_rate(o.schedule, o.lr, step, o.warmup, total_steps);
    dp.optimizer_step(lr, step + 1);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    StepRecord rec{step + 1, mean_loss, lr, norm, step_all_tokens / std::max(secs, 1e-9), -1, std::nullopt};
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
    if (hook && lead) hook(*model, rec);
    result.comm_per_step = dp.bytes_per_step();
    if (lead) {
      Json line = {{"step", rec.step}, {"epoch", epoch}, {"loss", rec.loss}, {"lr", rec.lr}, {"grad_norm", rec.grad_norm},
                   {"tokens_per_s", rec.tokens_per_s}};
      if (rec.val_loss >= 0) line["val_loss"] = rec.val_loss;
      if (rec.probe_gap_deg) line["probe_gap_deg"] = *rec.probe_gap_deg;
      if (world > 1) {
        line["comm_bytes"] = result.comm_per_step.payload();
        line["comm_busy_s"] = dp.comm_busy_seconds();        // the gradient reductions' run time
        line["comm_exposed_s"] = dp.comm_exposed_seconds();  // what the step waited for after backward
      }
      metrics_text += line.dump() + "\n";
      atomic_write_text(metrics_path, metrics_text);
    }
    result.steps.push_back(rec);
    if (o.save_every > 0 && (step + 1) % o.save_every == 0 && step + 1 < total_steps)
      save_state(o.out, *model, dp, step + 1, meta);
    if (!quiet) {
      char extra[96];
      std::snprintf(extra, sizeof extra, "loss %.4f lr %.2e %.0f tok/s", rec.loss, rec.lr, rec.tokens_per_s);
      bar.update(static_cast<std::size_t>(step + 1), extra);
    }
    test_fault_hooks(step + 1, rank);
  }
  bar.finish();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MemoryStats end = alloc.stats();
  for (std::size_t i = 0; i < kMemCategories; ++i) end.peak[i] -= before.current[i];
  MemoryBreakdown with_hook = measured_memory(end);
  if (result.steps.empty()) result.measured = with_hook;
  result.measured.trainable_params = result.predicted.trainable_params;
  result.measured.frozen_params = result.predicted.frozen_params;

  // Every rank's measured peaks, gathered on rank 0 for the report.
  std::vector<double> rank_bytes(static_cast<std::size_t>(world) * kMemCategories, 0.0);
  for (std::size_t i = 0; i < kMemCategories; ++i) rank_bytes[rank * kMemCategories + i] = static_cast<double>(result.measured.bytes[i]);
  dp.all_reduce_between_steps(rank_bytes.data(), rank_bytes.size());
  for (int r = 0; r < world; ++r) {
    MemoryBreakdown m;
    for (std::size_t i = 0; i < kMemCategories; ++i) m.bytes[i] = static_cast<std::size_t>(rank_bytes[r * kMemCategories + i]);
    result.measured_per_rank.push_back(m);
  }

  // The final model in Hugging Face format, plus the resumable state.
  if (lead) {
    model->save(o.out, gpu ? DType::BF16 : DType::F32);  // the weights as the run holds them
    copy_side_files(o.model_dir, o.out);
  }
  save_state(o.out, *model, dp, total_steps, meta);
  if (lead) {
    Json mem = {{"device", o.device}, {"precision", precision_name(precision)},
                {"activation_policy", activation_policy_name(o.activations)}, {"predicted", result.predicted.to_json()},
                {"measured_peak", result.measured.to_json()}};
    std::size_t free_b = 0, total_b = 0;
    if (gpu && cuda_memory_info(free_b, total_b))  // what the driver saw, next to the tagged allocator's bytes
      mem["cuda_mem_get_info"] = {{"device", cuda_device_description(launch.local_rank)}, {"free_bytes", free_b}, {"total_bytes", total_b},
                                  {"used_bytes", total_b - free_b}};
    if (with_hook.total() != result.measured.total())  // transient buffers of the step hook (safety probe)
      mem["peak_including_safety_probe"] = with_hook.to_json();
    if (world > 1) {
      Json ranks = Json::array();
      for (int r = 0; r < world; ++r)
        ranks.push_back({{"rank", r},
                         {"predicted", plan_training_memory(c, plan, o.micro_batch, dopt.cutoff, precision, 256,
                                                            {world, r, o.zero1}, o.activations).to_json()},
                         {"measured_peak", result.measured_per_rank[r].to_json()}});
      mem["world_size"] = world;
      mem["zero1"] = o.zero1;
      mem["backend"] = nccl ? nccl->backend() : comm->backend();
      mem["per_rank"] = ranks;
      mem["comm_per_step_planned"] = result.comm_planned.to_json(world);
      mem["comm_per_step_measured"] = result.comm_per_step.to_json(world);
    }
    atomic_write_text(o.out / "memory.json", mem.dump(2) + "\n");
  }
  nccl_queue.reset();  // join the workers before their communicators go
  nccl.reset();
  queue.reset();
  return result;
}

}  // namespace sppft
