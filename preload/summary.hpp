// The counters at exit: one line on stderr ("ringlinger wrap[PID]: handed off N ...") and, with
// RINGLINGER_WRAP_JSON, a JSON object in that file (PATH.PID for a process wrap did not start).
#pragma once

#include "lingerer.hpp"
#include "settings.hpp"

namespace ringlinger::preload {

void write_summary(const Settings& settings, const Counters& counters) noexcept;

}  // namespace ringlinger::preload
