// How load generator results are printed and saved, shared by `client` and `demo`.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loadgen.hpp"
#include "ringlinger/address.hpp"

namespace ringlinger::tools {

// "4998 complete, 2 failed (2 reset)"; when several peer types ran and some failed, the failures
// by type follow: "...; by peer: flood 2 reset". One line.
std::string summarize(const LoadResult& result);
// Every figure of a result, for --json; "peers" holds, for each type that started connections,
// {"started", "complete", "failed", "failures": {reason: count}}.
nlohmann::json to_json(const LoadResult& result);
// Number of peer types with at least one connection started.
std::size_t peer_types_used(const LoadResult& result);
// A text table, one row per peer type that started connections, plus a total row:
//   peer type      started  complete  failed
//   cooperative       4500      4500       0
//   flood              100        98       2 (2 reset)
std::string peer_table(const LoadResult& result);
// A progress line for stderr ("\r..." without newline).
std::string progress_line(const LoadResult& result, std::uint64_t total);

}  // namespace ringlinger::tools
