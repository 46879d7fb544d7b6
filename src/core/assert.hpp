// RL_ASSERT: for programmer errors only (the world's errors are return codes). On in every build
// type, including release: a broken invariant in a connection manager must stop the process
// before it closes the wrong fd.
#pragma once

namespace ringlinger::detail {
[[noreturn]] void assert_fail(const char* condition, const char* file, int line,
                              const char* function) noexcept;
}  // namespace ringlinger::detail

#define RL_ASSERT(condition)                                                         \
  ((condition) ? static_cast<void>(0)                                                \
               : ::ringlinger::detail::assert_fail(#condition, __FILE__, __LINE__, __func__))
