#include "core/assert.hpp"

#include <cstdio>
#include <cstdlib>

namespace ringlinger::detail {

void assert_fail(const char* condition, const char* file, int line, const char* function) noexcept {
  std::fprintf(stderr, "ringlinger: assertion failed: %s\n  at %s:%d in %s()\n", condition, file,
               line, function);
  std::abort();
}

}  // namespace ringlinger::detail
