// A progress bar on stderr with rate and ETA; redraws in place on a terminal,
// prints a few plain lines otherwise (logs, CI).
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace sppft {

class Progress {
 public:
  Progress(std::string label, std::size_t total, std::string unit = "it");
  ~Progress();
  void update(std::size_t done, const std::string& extra = "");
  void finish();

 private:
  std::string label_, unit_;
  std::size_t total_, done_ = 0;
  bool tty_, finished_ = false;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace sppft
