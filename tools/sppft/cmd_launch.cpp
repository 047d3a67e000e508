// sppft launch --nproc N [--master-port P] train ...: a data-parallel run on this machine
// without mpirun or torchrun. Starts N copies of this binary with the torchrun-style variables
// the trainer reads (trainer/comm.h: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
// passes rank 0's output through and prefixes the other ranks' lines with "[rank r] ", and when
// one rank fails stops the others, so a dead rank ends the job instead of leaving it hanging.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/device.h"
#include "engine/error.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"
#include "tools/sppft/self_exec.h"

extern char** environ;

namespace sppft::cli {

namespace {

const char* kHelp =
    "usage: sppft launch --nproc N|gpus [--master-port P] [--grace S] train ARGS...\n\n"
    "Runs `sppft train ARGS` as N processes on this machine, one data-parallel rank each, with\n"
    "RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1 and MASTER_PORT set (docs/distributed.md):\n"
    "the ranks talk over TCP, and with --device cuda rank r takes GPU r and the gradients go\n"
    "through NCCL. The global batch is micro-batch x grad-accum x N.\n"
    "  --nproc N        ranks (1..1024); gpus: one per visible GPU\n"
    "  --master-port P  rank 0's TCP port (default: a free one)\n"
    "  --grace S        seconds the other ranks get to exit after one fails, before SIGKILL (default 10)\n"
    "OMP_NUM_THREADS, unless set, becomes the cores divided by N. Rank 0's output passes through;\n"
    "the other ranks' lines are prefixed with [rank r]. The exit status is 0 when every rank\n"
    "succeeds, else the first failing rank's (128 + signal when it was killed).\n";

std::atomic<int> g_signal{0};
void on_signal(int sig) { g_signal = sig; }

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw RuntimeFailure(std::string("launch: could not find a free TCP port: ") + std::strerror(errno));
  ::close(fd);
  return ntohs(a.sin_port);
}

// Copies lines from `fd` to stderr with a prefix (a rank's output), until the rank closes it.
void relay(int fd, std::string prefix) {
  std::string pending;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<std::size_t>(n));
    for (std::size_t nl; (nl = pending.find_first_of("\n\r")) != std::string::npos;) {
      const std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (!line.empty()) std::fprintf(stderr, "%s%s\n", prefix.c_str(), line.c_str());
    }
  }
  if (!pending.empty()) std::fprintf(stderr, "%s%s\n", prefix.c_str(), pending.c_str());
  ::close(fd);
}

std::string describe(int status) {
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "exited with code " + std::to_string(WEXITSTATUS(status));
}
int exit_code(int status) { return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status); }

}  // namespace

int cmd_launch(int argc, char** argv) {
  // The launcher's own options end at the first word that is not one: the command.
  const std::set<std::string> valued = {"--nproc", "--master-port", "--grace"};
  int i = 0;
  while (i < argc && std::strncmp(argv[i], "-", 1) == 0) i += valued.count(argv[i]) ? 2 : 1;
  i = std::min(i, argc);
  const Args args(i, argv, valued, {});
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  int nproc = 0;
  if (args.get("--nproc") == "gpus") {  // one rank per visible GPU
    nproc = cuda_device_count();
    if (nproc == 0)
      throw InputError(std::string("launch: --nproc gpus: ") + (built_with_cuda() ? "no CUDA device is visible" : "this build has no CUDA"));
  } else {
    nproc = static_cast<int>(args.get_int("--nproc", 0, 1, 1024));
  }
  int port = static_cast<int>(args.get_int("--master-port", 0, 1, 65535));
  const int grace = static_cast<int>(args.get_int("--grace", 10, 0, 3600));
  if (nproc == 0) throw InputError("launch: --nproc N is required (the number of ranks)");
  if (i >= argc) throw InputError("launch: expected the command to run after the options: train ARGS...");
  if (std::string(argv[i]) != "train")
    throw InputError("launch: '" + std::string(argv[i]) + "' does not run data-parallel; only train does");
  for (const char* v : {"RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_RANK"})
    if (std::getenv(v)) throw InputError(std::string("launch: ") + v + " is already set: this process is a rank of another launch");
  if (port == 0) port = free_port();

  std::string self = self_executable();
  std::vector<char*> child_argv{self.data()};
  for (int k = i; k < argc; ++k) child_argv.push_back(argv[k]);
  child_argv.push_back(nullptr);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::string threads = std::to_string(std::max(1u, cores / static_cast<unsigned>(nproc)));

  // Every rank's environment is built before the first fork: the child only redirects and execs.
  std::vector<std::vector<std::string>> envs(nproc);
  std::vector<std::vector<char*>> envps(nproc);
  for (int r = 0; r < nproc; ++r) {
    for (char** e = environ; *e; ++e) {
      const std::string kv = *e, key = kv.substr(0, kv.find('='));
      if (key != "LOCAL_RANK" && key != "MASTER_ADDR" && key != "MASTER_PORT") envs[r].push_back(kv);
    }
    envs[r].push_back("RANK=" + std::to_string(r));
    envs[r].push_back("LOCAL_RANK=" + std::to_string(r));
    envs[r].push_back("WORLD_SIZE=" + std::to_string(nproc));
    envs[r].push_back("MASTER_ADDR=127.0.0.1");
    envs[r].push_back("MASTER_PORT=" + std::to_string(port));
    if (!std::getenv("OMP_NUM_THREADS")) envs[r].push_back("OMP_NUM_THREADS=" + threads);
    for (auto& kv : envs[r]) envps[r].push_back(kv.data());
    envps[r].push_back(nullptr);
  }
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> pids(nproc, -1);
  std::vector<int> outputs(nproc, -1);  // read ends of ranks > 0
  for (int r = 0; r < nproc; ++r) {
    int out[2] = {-1, -1};
    if (r > 0 && ::pipe2(out, O_CLOEXEC) != 0) throw RuntimeFailure(std::string("launch: pipe: ") + std::strerror(errno));
    const pid_t pid = ::fork();
    if (pid < 0) throw RuntimeFailure(std::string("launch: fork: ") + std::strerror(errno));
    if (pid == 0) {
      if (r > 0) {
        ::dup2(out[1], 1);
        ::dup2(out[1], 2);
      }
      ::execve(self.c_str(), child_argv.data(), envps[r].data());
      static const char msg[] = "launch: could not execute this binary again\n";
      [[maybe_unused]] const ssize_t w = ::write(2, msg, sizeof msg - 1);
      ::_exit(127);
    }
    pids[r] = pid;
    if (r > 0) {
      ::close(out[1]);
      outputs[r] = out[0];
    }
  }
  std::vector<std::thread> relays;
  for (int r = 1; r < nproc; ++r) relays.emplace_back(relay, outputs[r], "[rank " + std::to_string(r) + "] ");
  std::fprintf(stderr, "launch: %d ranks (pids %d..%d), MASTER_PORT %d, OMP_NUM_THREADS %s\n", nproc, pids.front(), pids.back(),
               port, std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : threads.c_str());

  // Ctrl-C and SIGTERM go to the ranks while they run; the caller's handling is back afterwards
  // (sppft experiment runs launch as one of its stages).
  struct sigaction sa{}, old_int{}, old_term{};
  sa.sa_handler = on_signal;
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  struct RestoreHandlers {
    const struct sigaction &on_int, &on_term;
    ~RestoreHandlers() {
      ::sigaction(SIGINT, &on_int, nullptr);
      ::sigaction(SIGTERM, &on_term, nullptr);
    }
  } restore{old_int, old_term};

  int result = 0, running = nproc;
  bool stopping = false;
  auto stop_others = [&](int sig) {
    for (pid_t p : pids)
      if (p > 0) ::kill(p, sig);
  };
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    // Every rank that has ended since the last look, a rank killed by a signal first: when one rank
    // dies, its peers fail on the closed connection within the same poll, and the death is the cause.
    std::vector<std::pair<int, int>> ended;  // (rank, wait status)
    for (int status = 0;;) {
      const pid_t p = ::waitpid(-1, &status, WNOHANG);
      if (p <= 0) break;
      const auto it = std::find(pids.begin(), pids.end(), p);
      if (it == pids.end()) continue;
      *it = -1;
      ended.emplace_back(static_cast<int>(it - pids.begin()), status);
    }
    std::stable_sort(ended.begin(), ended.end(),
                     [](const auto& a, const auto& b) { return WIFSIGNALED(a.second) && !WIFSIGNALED(b.second); });
    for (const auto& [r, status] : ended) {
      --running;  // counted in cause order: the dead rank's peers were running when it died
      if (exit_code(status) != 0 && !stopping) {
        std::fprintf(stderr, "launch: rank %d %s; stopping the other %d rank%s\n", r, describe(status).c_str(), running,
                     running == 1 ? "" : "s");
        result = exit_code(status);
        stopping = true;
        stop_others(SIGTERM);
        deadline = std::chrono::steady_clock::now() + std::chrono::seconds(grace);
      }
    }
    if (!ended.empty()) continue;
    if (const int sig = g_signal.exchange(0)) {  // Ctrl-C / SIGTERM to the launcher: to every rank
      stop_others(sig);
      if (!stopping) result = 128 + sig;
      stopping = true;
      deadline = std::chrono::steady_clock::now() + std::chrono::seconds(grace);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      stop_others(SIGKILL);
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& t : relays) t.join();
  return result;
}

}  // namespace sppft::cli
