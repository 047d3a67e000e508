#include "engine/progress.h"

#include <unistd.h>

#include <cstdio>

namespace sppft {

namespace {
std::string format_seconds(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s) / 3600, static_cast<int>(s) % 3600 / 60);
  return buf;
}
}  // namespace

Progress::Progress(std::string label, std::size_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(::isatty(2)),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() { finish(); }

void Progress::update(std::size_t done, const std::string& extra) {
  done_ = done;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const double eta = rate > 0 && total_ > done ? (total_ - done) / rate : 0;
  const int pct = total_ ? static_cast<int>(100.0 * done / total_) : 100;
  if (tty_) {
    if (done < total_ && std::chrono::duration<double>(now - last_draw_).count() < 0.1) return;
    last_draw_ = now;
    const int width = 24, filled = total_ ? static_cast<int>(width * done / total_) : width;
    std::string bar(filled, '#');
    bar.append(width - filled, '.');
    std::fprintf(stderr, "\r%s [%s] %zu/%zu %3d%% %.1f %s/s ETA %s %s\033[K", label_.c_str(), bar.c_str(), done, total_,
                 pct, rate, unit_.c_str(), format_seconds(eta).c_str(), extra.c_str());
  } else {
    const int decile = pct / 25;
    if (decile == last_decile_ && done < total_) return;
    last_decile_ = decile;
    std::fprintf(stderr, "%s %zu/%zu (%d%%) %.1f %s/s ETA %s %s\n", label_.c_str(), done, total_, pct, rate,
                 unit_.c_str(), format_seconds(eta).c_str(), extra.c_str());
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace sppft
