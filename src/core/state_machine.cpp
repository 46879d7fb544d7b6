// The write side's names; the state machine's tables are in state_machine.hpp.
#include "core/state_machine.hpp"

namespace ringlinger::detail {

std::string_view to_string(WriteSide side) noexcept {
  switch (side) {
    case WriteSide::open:
      return "open";
    case WriteSide::shutdown_requested:
      return "shutdown_requested";
    case WriteSide::shut_down:
      return "shut_down";
  }
  return "?";
}

}  // namespace ringlinger::detail
