#include <doctest/doctest.h>

#include "engine/error.h"
#include "engine/prompts.h"
#include "test_util.h"

using namespace sppft;

TEST_CASE("CSV: quotes, escaped quotes, commas and newlines inside fields") {
  auto rows = parse_csv("a,\"b,c\"\n\"say \"\"hi\"\"\",x\n\"multi\nline\"\n", "t.csv");
  REQUIRE(rows.size() == 3);
  CHECK(rows[0][1] == "b,c");
  CHECK(rows[1][0] == "say \"hi\"");
  CHECK(rows[2][0] == "multi\nline");
  CHECK_THROWS_AS(parse_csv("\"open", "t.csv"), InputError);
}

TEST_CASE("prompt files of every kind, including the method's data sets") {
  auto dir = test::temp_dir("prompts");
  atomic_write_text(dir / "a.csv", "goal,target\nDo x,Sure\n\"Do y, then z\",Sure\n");
  auto a = read_prompt_file(dir / "a.csv");
  REQUIRE(a.size() == 2);
  CHECK(a[1].instruction == "Do y, then z");
  atomic_write_text(dir / "b.jsonl", "{\"instruction\": \"i1\", \"input\": \"ctx\"}\n\n{\"prompt\": \"p2\"}\n");
  auto b = read_prompt_file(dir / "b.jsonl");
  REQUIRE(b.size() == 2);
  CHECK(b[0].input == "ctx");
  CHECK(b[1].instruction == "p2");
  atomic_write_text(dir / "c.txt", "one\ntwo\n");
  CHECK(read_prompt_file(dir / "c.txt").size() == 2);
  atomic_write_text(dir / "d.json", "[\"x\", {\"instruction\": \"y\"}]");
  CHECK(read_prompt_file(dir / "d.json").size() == 2);

  const fs::path data = test::source_dir() / "data";
  CHECK(read_prompt_file(data / "normal.csv").size() == 100);
  CHECK(read_prompt_file(data / "malicious.csv").size() == 100);
  CHECK(read_prompt_file(data / "over_rejection.csv").size() == 731);
  auto adv = read_prompt_file(data / "advbench_harmful_behaviors.csv");
  CHECK(adv.size() == 520);
  CHECK(adv[0].instruction.rfind("Write a script", 0) == 0);
}

TEST_CASE("bad prompt files: empty, malformed, missing fields") {
  auto dir = test::temp_dir("promptsbad");
  atomic_write_text(dir / "e.txt", "");
  CHECK_THROWS_WITH_AS(read_prompt_file(dir / "e.txt"), doctest::Contains("no prompts"), InputError);
  atomic_write_text(dir / "e2.txt", "a\n\nb\n");
  CHECK_THROWS_WITH_AS(read_prompt_file(dir / "e2.txt"), doctest::Contains("line 2: empty prompt"), InputError);
  atomic_write_text(dir / "m.json", "[{\"instruction\": ");
  CHECK_THROWS_WITH_AS(read_prompt_file(dir / "m.json"), doctest::Contains("malformed JSON"), InputError);
  atomic_write_text(dir / "f.jsonl", "{\"text\": \"x\"}\n");
  CHECK_THROWS_WITH_AS(read_prompt_file(dir / "f.jsonl"), doctest::Contains("line 1: missing field"), InputError);
  atomic_write_text(dir / "t.jsonl", "{\"instruction\": 3}\n");
  CHECK_THROWS_WITH_AS(read_prompt_file(dir / "t.jsonl"), doctest::Contains("wrong type"), InputError);
  CHECK_THROWS_WITH_AS(read_prompt_file(dir / "missing.csv"), doctest::Contains("file not found"), InputError);
  CHECK_THROWS_AS(parse_template("fancy"), InputError);
}

TEST_CASE("templates: METHOD.md's exact Alpaca strings and the chat formats") {
  CHECK(alpaca_prompt({"Say hi", ""}) ==
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nSay hi\n\n### Response:\n");
  CHECK(alpaca_prompt({"Sum", "1 2"}) ==
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
        "response that appropriately completes the request.\n\n### Instruction:\nSum\n\n### Input:\n1 2\n\n### Response:\n");
  CHECK(chat_prompt({"hi", ""}, ChatFormat::Llama3) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(chat_prompt({"hi", ""}, ChatFormat::Llama2) == "<s>[INST] hi [/INST]");
  CHECK(chat_prompt({"hi", ""}, ChatFormat::Gemma) == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n");
  CHECK(chat_prompt({"hi", ""}, ChatFormat::Phi3) == "<|user|>\nhi<|end|>\n<|assistant|>\n");
  CHECK(chat_prompt({"hi", ""}, ChatFormat::Llava) == "<s>USER: hi ASSISTANT:");
}
