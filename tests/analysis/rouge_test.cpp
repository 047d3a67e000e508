// Rouge-L against Google's rouge_score. The expected numbers below were computed once with
// rouge-score 0.1.2 (Python 3.11):
//   RougeScorer(["rougeL"]).score(target=reference, prediction=candidate)["rougeL"]
// and are hard-coded here; the package is not needed to run this test.
#include "analysis/rouge.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace sppft;

namespace {

struct Case {
  const char* candidate;
  const char* reference;
  double p, r, f;
};

// Exact to a few ulps: both sides do the same double divisions, but F's operation order may
// differ from Python's by one rounding.
void check_close(double got, double want) { CHECK(got == doctest::Approx(want).epsilon(1e-12)); }

}  // namespace

TEST_CASE("rouge_tokenize matches rouge_score.tokenize.tokenize(text, None)") {
  using V = std::vector<std::string>;
  CHECK(rouge_tokenize("") == V{});
  CHECK(rouge_tokenize("!!! ...") == V{});
  CHECK(rouge_tokenize("Hello, World! It's 2024.") == V{"hello", "world", "it", "s", "2024"});
  CHECK(rouge_tokenize("don't stop-believing_now") == V{"don", "t", "stop", "believing", "now"});
  CHECK(rouge_tokenize("THE Cat\tsat\n\non  the MAT") == V{"the", "cat", "sat", "on", "the", "mat"});
  // Non-ASCII letters are separators, not letters: Python lowercases, then drops all but [a-z0-9].
  CHECK(rouge_tokenize("Caf\xC3\xA9 na\xC3\xAFve r\xC3\xA9sum\xC3\xA9") == V{"caf", "na", "ve", "r", "sum"});
  CHECK(rouge_tokenize("\xD0\x97\xD0\xB4\xD1\x80\xD0\xB0\xD0\xB2 hello \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x98\x80") ==
        V{"hello"});
  // The two code points whose Python lowercase contains ASCII: U+0130 -> "i" + U+0307 and
  // U+212A (Kelvin sign) -> "k".
  CHECK(rouge_tokenize("\xC4\xB0stanbul \xE2\x84\xAA"
                       "elvin") == V{"i", "stanbul", "kelvin"});
  // Invalid UTF-8 bytes separate and never read past the end.
  CHECK(rouge_tokenize("ab\xFF"
                       "cd\xC4") == V{"ab", "cd"});
  CHECK(rouge_tokenize("x\xE2\x84") == V{"x"});
  // Non-ASCII digits (Arabic-Indic, fullwidth) are not [0-9].
  CHECK(rouge_tokenize("\xD9\xA3 \xEF\xBC\x91 7") == V{"7"});
}

TEST_CASE("rouge_l matches rouge_score on hand-picked pairs") {
  const Case cases[] = {
      {"the cat sat on the mat", "the cat is on the mat", 0.8333333333333334, 0.8333333333333334, 0.8333333333333334},
      {"", "the cat", 0, 0, 0},
      {"the cat", "", 0, 0, 0},
      {"", "", 0, 0, 0},
      {"!!! ...", "hello", 0, 0, 0},
      {"Hello, World! It's 2024.", "hello world its 2024", 0.6, 0.75, 0.6666666666666665},
      {"the the the the", "the cat the dog the", 0.75, 0.6, 0.6666666666666665},
      {"a b c d e f", "f e d c b a", 0.16666666666666666, 0.16666666666666666, 0.16666666666666666},
      {"I cannot help with that request.", "I'm sorry, but I cannot help with that.", 0.8333333333333334,
       0.5555555555555556, 0.6666666666666667},
      {"Caf\xC3\xA9 na\xC3\xAFve r\xC3\xA9sum\xC3\xA9", "cafe naive resume", 0, 0, 0},
      {"Caf\xC3\xA9 au lait, s'il vous pla\xC3\xAEt", "caf au lait s il vous pla t", 1, 1, 1},
      {"\xD0\x97\xD0\xB4\xD1\x80\xD0\xB0\xD0\xB2\xD1\x81\xD1\x82\xD0\xB2\xD1\x83\xD0\xB9 \xD0\xBC\xD0\xB8\xD1\x80 "
       "hello "
       "\xE4\xB8\x96\xE7\x95\x8C",
       "hello", 1, 1, 1},
      {"\xC4\xB0stanbul \xE2\x84\xAA"
       "elvin",
       "i stanbul kelvin", 1, 1, 1},
      {"don't stop-believing_now", "don t stop believing now", 1, 1, 1},
      {"THE Cat\tsat\n\non  the MAT", "the cat sat on the mat", 1, 1, 1},
      {"abc123 def_456", "abc123 def 456 ghi", 1.0, 0.75, 0.8571428571428571},
      {"Sure, here is how to make a bomb: step 1", "Sure, here is a tutorial on how to make a bomb", 0.8,
       0.7272727272727273, 0.761904761904762},
      {"x", "y", 0, 0, 0},
  };
  for (const auto& c : cases) {
    CAPTURE(c.candidate);
    CAPTURE(c.reference);
    const RougeL s = rouge_l(c.candidate, c.reference);
    check_close(s.precision, c.p);
    check_close(s.recall, c.r);
    check_close(s.f1, c.f);
  }
}

TEST_CASE("rouge_l on long token lists, both argument orders (rolling-row LCS)") {
  // Same construction in Python:
  //   words = ['alpha','beta','gamma','delta','eps']
  //   a = ' '.join(words[(i*i + 3*i) % 7 % 5] for i in range(300))
  //   b = ' '.join(words[(j*j*j + j) % 11 % 5] for j in range(170))
  const char* words[] = {"alpha", "beta", "gamma", "delta", "eps"};
  std::string a, b;
  for (long i = 0; i < 300; ++i) a += std::string(i ? " " : "") + words[(i * i + 3 * i) % 7 % 5];
  for (long j = 0; j < 170; ++j) b += std::string(j ? " " : "") + words[(j * j * j + j) % 11 % 5];
  const RougeL ab = rouge_l(a, b);
  check_close(ab.precision, 0.36);
  check_close(ab.recall, 0.6352941176470588);
  check_close(ab.f1, 0.4595744680851063);
  const RougeL ba = rouge_l(b, a);
  check_close(ba.precision, 0.6352941176470588);
  check_close(ba.recall, 0.36);
  check_close(ba.f1, 0.4595744680851063);
}

TEST_CASE("lcs_length basics") {
  using V = std::vector<std::string>;
  CHECK(lcs_length(V{}, V{"a"}) == 0);
  CHECK(lcs_length(V{"a", "b", "c"}, V{"a", "b", "c"}) == 3);
  CHECK(lcs_length(V{"a", "x", "b", "y", "c"}, V{"a", "b", "c"}) == 3);
  CHECK(lcs_length(V{"a", "b", "c"}, V{"c", "b", "a"}) == 1);
  CHECK(lcs_length(V{"b", "a", "b", "a"}, V{"a", "b", "a", "b"}) == 3);
}
