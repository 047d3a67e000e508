// What sppft reads back of its own outputs, damaged: the stage outputs `sppft experiment`
// reports from (cossim.json, locate.json, eval.json, memory.json, metrics.jsonl) and the
// checkpoint `train --resume` continues from (trainer_state.json, optimizer.safetensors,
// metrics.jsonl), and the evaluation `rejudge` judges again (eval.json, responses.jsonl). A disk that filled up, an edit by hand or a file from another tool must give an
// InputError of one line naming the file, or a run that goes on correctly; never a library
// exception, a crash, or a run poisoned without a word. Mutators and checks: tests/fuzz_util.h.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "analysis/compare.h"
#include "analysis/experiment.h"
#include "engine/error.h"
#include "experiment_fixture.h"
#include "fuzz_util.h"
#include "stored_evaluation_fixture.h"
#include "test_util.h"
#include "trainer/trainer.h"

using namespace sppft;
using namespace sppft::test;

namespace {

// `rows` as JSON Lines, one row per line.
std::string jsonl(const std::vector<Json>& rows) {
  std::string text;
  for (const Json& r : rows) text += r.dump() + "\n";
  return text;
}

// Metrics rows damaged structurally (then written as lines) or byte by byte.
std::string mutated_jsonl(Mutator& m, const std::vector<Json>& rows) {
  if (m.chance(50)) return m.mutate_text(jsonl(rows), kJsonTokens);
  Json all(rows);
  for (std::size_t k = 0, n = 1 + m.below(2); k < n; ++k) m.mutate_json(all);
  return all.is_array() ? jsonl(all.get<std::vector<Json>>()) : all.dump() + "\n";
}

// A tiny checkpoint fine-tuned `steps` steps under `root` (blocks `freeze` frozen): the
// options it ran with, its checkpoint in OUT/checkpoint.
TrainOptions trained_tiny_run(const fs::path& root, std::int64_t steps, const std::string& freeze = "") {
  make_tiny_checkpoint(root / "model");
  std::string data;
  for (int i = 0; i < 12; ++i)
    data += Json{{"instruction", "Question " + std::to_string(i)}, {"input", ""}, {"output", "Answer number " + std::to_string(i)}}.dump() + "\n";
  atomic_write_text(root / "data.jsonl", data);
  TrainOptions o;
  o.model_dir = root / "model";
  o.data = root / "data.jsonl";
  o.out = root / "trained";
  o.micro_batch = 2;
  o.cutoff = 160;
  o.max_steps = steps;
  o.freeze = freeze;
  o.quiet = true;
  (void)train(o);
  return o;
}

}  // namespace

TEST_CASE("damaged stage outputs make the experiment report or fail with an InputError naming the file") {
  const fs::path dir = temp_dir("fuzz-stage-outputs");
  const char* kFiles[] = {"cossim.json", "locate.json", "eval.json", "memory.json", "metrics.jsonl"};
  Mutator m(base_seed() + 10);
  Tally tally;
  for (int i = 0; i < iterations(); ++i) {
    ExperimentOutputs o = outputs();
    const std::string name = kFiles[m.below(5)];
    const fs::path file = dir / name;
    TrainingArm& arm = m.chance(50) ? o.runs[0].full : o.runs[0].sppft;
    o.cossim_file = o.locate_file = arm.memory_file = arm.metrics_file = file.string();
    o.eval_base_file = o.runs[0].eval_sppft_file = file.string();
    Json* doc = name == "cossim.json"   ? &*o.cossim
                : name == "locate.json" ? &*o.locate
                : name == "memory.json" ? &arm.memory
                : name == "eval.json"   ? (m.chance(50) ? &o.eval_base : &o.runs[0].eval_sppft)
                                        : nullptr;
    write_bytes(file, doc ? m.mutate_document(*doc, 80) : mutated_jsonl(m, arm.metrics));
    expect_input_error_or_success(tally, name, i, file, name, [&] {
      // Read back as sppft experiment reads each stage's output.
      if (doc) *doc = read_json_file(file);
      else arm.metrics = read_metrics_jsonl(file.string());
      const ExperimentReport r = experiment_report(o);
      CHECK(r.markdown.find("## Safety and utility") != std::string::npos);
      (void)r.summary.dump(2);
    });
  }
  MESSAGE("stage outputs: " << tally.accepted << " reported, " << tally.rejected << " rejected");
  CHECK(tally.accepted > 0);
  CHECK(tally.rejected > 0);
}

TEST_CASE("a damaged stored evaluation is judged again or refused with an InputError naming the file") {
  const fs::path dir = temp_dir("fuzz-rejudge");
  StoredEvaluation pristine = hand_written_evaluation();
  pristine.responses[3]["response"] = "Fine.";  // no note on stderr about reasoning, 300 times over
  const Judge judge{"test-prefix", Judge::Mode::Prefix, {"I cannot", "I won't"}, {}};
  Mutator m(base_seed() + 12);
  Tally tally;
  for (int i = 0; i < iterations(); ++i) {
    StoredEvaluation e = pristine;
    write_stored_evaluation(dir / "ev", e);
    const bool rows = m.chance(50);
    const std::string name = rows ? "responses.jsonl" : "eval.json";
    const fs::path file = dir / "ev" / name;
    write_bytes(file, rows ? mutated_jsonl(m, e.responses) : m.mutate_document(e.eval, 80));
    expect_input_error_or_success(tally, name, i, file, name, [&] {
      // As `sppft rejudge --judge` reads, judges and writes it.
      StoredEvaluation back = read_stored_evaluation(dir / "ev");
      apply_refusal_judge(back, judge);
      (void)evaluation_summary(back.eval, file.string());
      // As `sppft compare` reads it: intervals and paired tests of the damaged evaluation against itself.
      (void)compare_evaluations({read_eval_run("a", dir / "ev"), read_eval_run("b", dir / "ev")});
      write_stored_evaluation(dir / "out", back);
      CHECK(back.eval["judge"] == "test-prefix");
    });
  }
  MESSAGE("stored evaluations: " << tally.accepted << " judged, " << tally.rejected << " rejected");
  CHECK(tally.accepted > 0);
  CHECK(tally.rejected > 0);
}

TEST_CASE("a damaged checkpoint resumes correctly or fails with an InputError naming the file") {
  const TrainOptions o = trained_tiny_run(temp_dir("fuzz-resume"), 2, "1-1");  // moments for some blocks only
  const std::string state = read_file(o.out / "checkpoint" / "trainer_state.json");
  const std::string moments = read_file(o.out / "checkpoint" / "optimizer.safetensors");
  std::vector<Json> metrics;
  for (const JsonLine& l : parse_json_lines(read_file(o.out / "metrics.jsonl"), "metrics.jsonl")) metrics.push_back(l.value);
  const SafetensorsParts parts = split_safetensors(moments);
  const std::size_t header_end = moments.size() - parts.data.size();

  TrainOptions resume = o;
  resume.out = o.out.parent_path() / "resumed";
  resume.resume = true;
  resume.max_steps = 3;  // one step after the checkpoint's two
  Mutator m(base_seed() + 11);
  Tally tally;
  const int runs = std::max(1, iterations() / 3);  // each is a training run
  for (int i = 0; i < runs; ++i) {
    fs::remove_all(resume.out);
    fs::copy(o.out, resume.out, fs::copy_options::recursive);
    const std::size_t kind = m.below(3);
    const std::string name = kind == 0 ? "trainer_state.json" : kind == 1 ? "optimizer.safetensors" : "metrics.jsonl";
    const fs::path file = kind == 2 ? resume.out / name : resume.out / "checkpoint" / name;
    if (kind == 0) {
      Json j = Json::parse(state);
      write_bytes(file, m.mutate_document(j, 80));
    } else if (kind == 1) {
      // The header only: a byte changed in the moments themselves is refused when it makes a
      // value non-finite or a second moment negative, and otherwise cannot be told from training.
      if (m.chance(50)) {
        Json h = parts.header;
        write_bytes(file, join_safetensors(m.mutate_document(h, 70), parts.data));
      } else {
        const std::string head = m.mutate_text(moments.substr(0, header_end), kJsonTokens);
        write_bytes(file, head + parts.data);
      }
    } else {
      write_bytes(file, mutated_jsonl(m, metrics));
    }
    expect_input_error_or_success(tally, name, i, file, name, [&] {
      const TrainResult r = train(resume);
      for (const StepRecord& s : r.steps) CHECK(std::isfinite(s.loss));
      // The metrics of a resumed run: at most one row per step, in order, ending at step 3 when a
      // step ran (a state that says step 3 leaves nothing to run).
      const auto rows = parse_json_lines(read_file(resume.out / "metrics.jsonl"), "metrics.jsonl");
      for (std::size_t k = 1; k < rows.size(); ++k) CHECK(rows[k - 1].value["step"] < rows[k].value["step"]);
      if (!r.steps.empty()) CHECK((!rows.empty() && rows.back().value["step"] == 3));
    });
  }
  MESSAGE("checkpoints: " << tally.accepted << " resumed, " << tally.rejected << " rejected");
  CHECK(tally.accepted > 0);
  CHECK(tally.rejected > 0);

  // A checkpoint past the run's last step is refused, not saved again as that step.
  fs::remove_all(resume.out);
  fs::copy(o.out, resume.out, fs::copy_options::recursive);
  TrainOptions shorter = resume;
  shorter.max_steps = 1;
  CHECK_THROWS_WITH_AS(train(shorter), doctest::Contains("trainer_state.json: the checkpoint is at step 2, past this run's last step 1"),
                       InputError);
}

TEST_CASE("optimizer moments that are not finite, or a negative second moment, are refused on resume") {
  const TrainOptions o = trained_tiny_run(temp_dir("damaged-moments"), 1);
  const fs::path file = o.out / "checkpoint" / "optimizer.safetensors";
  const std::string pristine = read_file(file);
  const SafetensorsParts parts = split_safetensors(pristine);
  const std::size_t data_begin = pristine.size() - parts.data.size();
  std::string m_name, v_name;
  for (const auto& [name, e] : parts.header.items()) {
    if (m_name.empty() && name.rfind("m.", 0) == 0) m_name = name;
    if (v_name.empty() && name.rfind("v.", 0) == 0) v_name = name;
  }
  REQUIRE(!m_name.empty());
  REQUIRE(!v_name.empty());
  // Writes `value` over element 1 of tensor `name` in a copy of the file.
  const auto poke = [&](const std::string& name, float value) {
    std::string bytes = pristine;
    const auto at = data_begin + parts.header[name]["data_offsets"][0].get<std::size_t>() + sizeof(float);
    std::memcpy(bytes.data() + at, &value, sizeof value);
    atomic_write_text(file, bytes);
  };
  TrainOptions resume = o;
  resume.resume = true;
  resume.max_steps = 2;
  poke(m_name, NAN);
  const std::string non_finite = "optimizer.safetensors: tensor '" + m_name + "' holds a non-finite value at element 1";
  CHECK_THROWS_WITH_AS(train(resume), doctest::Contains(non_finite.c_str()), InputError);
  poke(v_name, -1.0f);
  const std::string negative = "optimizer.safetensors: tensor '" + v_name + "' holds a negative value at element 1";
  CHECK_THROWS_WITH_AS(train(resume), doctest::Contains(negative.c_str()), InputError);
  atomic_write_text(file, pristine);
  CHECK(train(resume).steps.size() == 1);
}
