#include "tools/sppft/self_exec.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "engine/error.h"

namespace sppft::cli {

std::string self_executable() {
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) throw RuntimeFailure("cannot find this executable (/proc/self/exe)");
  return std::string(path, static_cast<std::size_t>(n));
}

int run_self(const std::vector<std::string>& args) {
  std::string self = self_executable();
  std::vector<std::string> owned = args;  // execv wants mutable strings
  std::vector<char*> argv{self.data()};
  for (auto& a : owned) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) throw RuntimeFailure(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::execv(self.c_str(), argv.data());
    static const char msg[] = "could not execute this binary again\n";
    [[maybe_unused]] const ssize_t w = ::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw RuntimeFailure(std::string("waitpid: ") + std::strerror(errno));
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

}  // namespace sppft::cli
