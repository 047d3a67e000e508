// The tests' main: doctest's, then the scratch directories (test_util.h) removed
// when every test passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "test_util.h"

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int failed = context.run();
  if (!context.shouldExit()) sppft::test::finish_temp_dirs(failed == 0);
  return failed;
}
