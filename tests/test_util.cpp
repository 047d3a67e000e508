#include "test_util.h"

#include <sys/wait.h>

#include <cstdio>

namespace sppft::test {

CommandResult run_command(const std::string& cmd) {
  // stderr joins stdout unless the command redirects it itself.
  const bool own = cmd.find("2>") != std::string::npos;
  std::FILE* p = ::popen((own ? cmd : cmd + " 2>&1").c_str(), "r");
  CommandResult r{-1, ""};
  if (!p) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace sppft::test
