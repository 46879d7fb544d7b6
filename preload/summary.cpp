// Counters as text and JSON, written with write(2) and plain snprintf: at exit, the program's
// stdio and iostreams may already be gone.
#include "summary.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "real_calls.hpp"

namespace ringlinger::preload {
namespace {

std::uint64_t load(const std::atomic<std::uint64_t>& value) {
  return value.load(std::memory_order_relaxed);
}

void append(std::string& out, const char* format, auto... values) {
  char buffer[256];
  const int length = std::snprintf(buffer, sizeof buffer, format, values...);
  if (length > 0) out.append(buffer, static_cast<std::size_t>(std::min<int>(length, sizeof buffer - 1)));
}

// The stderr line: the nonzero counts only.
std::string text_line(const Counters& counters) {
  std::string line = "ringlinger wrap[" + std::to_string(getpid()) + "]: handed off " +
                     std::to_string(load(counters.handed_off));
  std::string outcomes;
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    if (load(counters.outcomes[i]) == 0) continue;
    append(outcomes, "%s%s %llu", outcomes.empty() ? "" : ", ",
           std::string(to_string(static_cast<Outcome>(i))).c_str(),
           static_cast<unsigned long long>(load(counters.outcomes[i])));
  }
  if (!outcomes.empty()) line += " (" + outcomes + ")";
  std::string plain;
  for (std::size_t i = 0; i < kPlainCount; ++i) {
    if (load(counters.plain[i]) == 0) continue;
    append(plain, "%s%s %llu", plain.empty() ? "" : ", ", to_string(static_cast<Plain>(i)),
           static_cast<unsigned long long>(load(counters.plain[i])));
  }
  if (!plain.empty()) line += "; closed plainly with bytes pending: " + plain;
  if (const auto evicted = load(counters.evicted); evicted != 0) {
    line += "; reset early to free a descriptor: " + std::to_string(evicted);
  }
  if (const auto left = counters.lingering.load(); left != 0) {
    line += "; still lingering at exit: " + std::to_string(left);
  }
  return line + "\n";
}

std::string json(const Counters& counters) {
  std::string out;
  append(out, "{\"pid\": %d, \"handed_off\": %llu, \"plain\": {", static_cast<int>(getpid()),
         static_cast<unsigned long long>(load(counters.handed_off)));
  for (std::size_t i = 0; i < kPlainCount; ++i) {
    append(out, "%s\"%s\": %llu", i == 0 ? "" : ", ", to_string(static_cast<Plain>(i)),
           static_cast<unsigned long long>(load(counters.plain[i])));
  }
  out += "}, \"outcomes\": {";
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    append(out, "%s\"%s\": %llu", i == 0 ? "" : ", ",
           std::string(to_string(static_cast<Outcome>(i))).c_str(),
           static_cast<unsigned long long>(load(counters.outcomes[i])));
  }
  append(out, "}, \"evicted\": %llu, \"lingering_at_exit\": %u}\n",
         static_cast<unsigned long long>(load(counters.evicted)), counters.lingering.load());
  return out;
}

void write_all(int fd, const std::string& text) {
  for (std::size_t done = 0; done < text.size();) {
    const ssize_t written = ::write(fd, text.data() + done, text.size() - done);
    if (written <= 0) return;
    done += static_cast<std::size_t>(written);
  }
}

}  // namespace

void write_summary(const Settings& settings, const Counters& counters) noexcept {
  try {
    const bool main_process = settings.main_pid == getpid();
    const bool handed_off = load(counters.handed_off) != 0;
    if (!main_process && !handed_off) return;  // a child that had nothing to do says nothing
    if (!settings.quiet) write_all(2, text_line(counters));
    if (settings.json_path.empty()) return;
    const std::string path =
        main_process ? settings.json_path : settings.json_path + "." + std::to_string(getpid());
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    write_all(fd, json(counters));
    real().close(fd);
  } catch (const std::exception&) {
  }
}

}  // namespace ringlinger::preload
